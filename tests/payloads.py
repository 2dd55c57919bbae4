"""One valid payload per catalogued event type, for tests that sweep them all."""

from typing import Any

VALID: dict[str, dict[str, Any]] = {
    "agent.task_started": {"agent_id": "RES-001", "task_type": "research"},
    "agent.task_completed": {"agent_id": "RES-001", "duration_ms": 1200.0},
    "agent.error": {"error": "timeout", "component": "research_agent"},
    "campaign.activated": {"campaign_id": "c-1", "name": "Spring", "channels": ["email"]},
    "campaign.paused": {"campaign_id": "c-1", "reason": "budget review"},
    "campaign.created": {"campaign_id": "c-2", "name": "Autumn"},
    "move.executed": {"move_id": "m-1", "action": "post"},
    "signal.detected": {"signal_id": "s-1", "source": "news", "topic": "ai", "strength": 0.9},
    "insight.generated": {"insight_id": "i-1", "title": "AI", "body": "up", "confidence": 0.7},
    "resource.allocation_requested": {
        "request_id": "r-1",
        "resource_type": "gpu",
        "amount": 4,
        "requested_by": "MAT-1",
    },
    "alert.created": {"alert_id": "a-1", "severity": "warning", "title": "t", "message": "m"},
    "workspace.updated": {"field": "plan", "old_value": "free", "new_value": "pro"},
    "guild.research.event": {"stage": "sources_collected", "sources_consulted": 3},
    "guild.muse.event": {"stage": "draft_created"},
    "guild.matrix.event": {"stage": "metric", "metric": "ctr", "value": 0.1},
    "guild.guardian.event": {"stage": "review", "compliant": True},
    "guild.coordination": {"from_guild": "research", "to_guilds": ["muse"], "request": "help"},
    "council.directive": {"directive_id": "d-1", "issued_by": "council", "directive": "focus"},
    "metrics.performance": {"subject_id": "RES-001", "metrics": {"latency_ms": 12.0}},
    "bus.health": {"status": "healthy", "queue_depths": {"research": 0}},
    "system.metrics": {"host": "h1", "cpu_percent": 12.5, "memory_percent": 40},
    "system.error_aggregation": {"window_seconds": 60, "error_counts": {"Timeout": 2}},
    "model.inference_complete": {"tokens_used": 1500, "response": "..."},
    "workflow.completed": {"workflow_id": "w-1"},
}
