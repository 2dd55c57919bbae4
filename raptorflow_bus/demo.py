"""The demo flow of ``raptorbus up --demo``: one agent run through every guild,
with one compliance failure that ends in the dead-letter queue on purpose."""

from __future__ import annotations

import time
import uuid
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from raptorflow_bus.bus import Bus
from raptorflow_bus.context import bus_context
from raptorflow_bus.envelope import Priority
from raptorflow_bus.queues import is_idle

EXPECTED_DEAD_LETTER = "guardian.check_campaign_compliance"


def drive(bus: Bus, correlation_id: str) -> int:
    """Emit the agent run; returns how many events were emitted."""
    flow: list[tuple[str, dict[str, Any], Priority]] = [
        ("agent.task_started", {"agent_id": "RES-001", "task_type": "research"}, Priority.NORMAL),
        (
            "signal.detected",
            {
                "signal_id": "sig-42",
                "source": "news",
                "topic": "AI agents",
                "strength": 0.92,
                "summary": "Three competitors launched agent platforms this week",
            },
            Priority.HIGH,
        ),
        (
            "council.directive",
            {"directive_id": "dir-7", "issued_by": "council", "directive": "Prioritise AI agents"},
            Priority.CRITICAL,
        ),
        (
            "resource.allocation_requested",
            {
                "request_id": "req-3",
                "resource_type": "gpu_hours",
                "amount": 120,
                "requested_by": "MAT-002",
                "guild": "matrix",
            },
            Priority.NORMAL,
        ),
        (
            "campaign.activated",
            {
                "campaign_id": "camp-9",
                "name": "Agent launch blitz",
                "channels": ["linkedin", "purchased_email_list"],
            },
            Priority.NORMAL,
        ),
        (
            "agent.error",
            {
                "error": "rate limited by search API",
                "component": "research_agent",
                "agent_id": "RES-001",
                "recoverable": True,
            },
            Priority.LOW,
        ),
        (
            "agent.task_completed",
            {"agent_id": "RES-001", "duration_ms": 5400.0, "tokens_used": 1500},
            Priority.NORMAL,
        ),
    ]
    with bus_context(workspace_id="ws-demo", correlation_id=correlation_id):
        for event_type, payload, priority in flow:
            bus.emit(event_type, payload, priority=priority, source_agent_id="RES-001")
    return len(flow)


def handler_table(bus: Bus) -> Table:
    metrics = bus.get_metrics()
    table = Table(title="handler runs per guild")
    for col in ("guild", "handler", "runs", "ok", "retried", "dead"):
        table.add_column(col, justify="left" if col in ("guild", "handler") else "right")
    for name, counts in sorted(metrics["handlers"].items()):
        guild, _, handler = name.partition(".")
        table.add_row(
            guild,
            handler,
            str(counts["delivered"]),
            str(counts["succeeded"]),
            str(counts["retried"]),
            str(counts["dead_lettered"]),
        )
    return table


def run_demo(bus: Bus, seconds: float, console: Console | None = None) -> int:
    """Drive the flow, show it live, print a summary; 0 when it went as designed."""
    console = console or Console()
    correlation_id = f"demo-{uuid.uuid4().hex[:8]}"
    emitted = drive(bus, correlation_id)
    console.print(f"emitted {emitted} events, correlation_id={correlation_id}")
    started = time.monotonic()
    deadline = started + max(seconds, 1.0) + 60
    with Live(handler_table(bus), console=console, refresh_per_second=4) as live:
        while time.monotonic() < deadline:
            live.update(Group(handler_table(bus)))
            settled = bus.dlq.list(workspace_id="ws-demo") and is_idle(bus)
            if settled and time.monotonic() - started >= seconds:
                break
            time.sleep(0.25)
    letters = [d for d in bus.dlq.list() if d.correlation_id == correlation_id]
    guilds = {name.partition(".")[0] for name in bus.get_metrics()["handlers"]}
    console.print(f"guilds reached: {', '.join(sorted(guilds))}")
    for letter in letters:
        console.print(
            f"dead letter {letter.id}: {letter.handler} "
            f"{letter.exception_type}: {letter.message} (attempts {letter.attempts})"
        )
    console.print("inspect with: raptorbus dlq list; replay with: raptorbus dlq replay ID")
    ok = [d.handler for d in letters] == [EXPECTED_DEAD_LETTER]
    ok = ok and guilds >= set(bus.topology.consumers)
    return 0 if ok else 1
