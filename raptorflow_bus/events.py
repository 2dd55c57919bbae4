"""RaptorFlow's event payloads: the 21 models of the status report plus the event
names of the API doc. Models are strict about what they carry (``extra="forbid"``)
so a typo in a producer fails at emit, not three hops later in a guild worker."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

Id = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:\-]+$")]
Text = Annotated[str, Field(max_length=4_000)]
LongText = Annotated[str, Field(max_length=64_000)]
Label = Annotated[str, Field(min_length=1, max_length=200)]
Score = Annotated[float, Field(ge=0.0, le=1.0)]
Count = Annotated[int, Field(ge=0)]


class Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Guild(StrEnum):
    RESEARCH = "research"
    MUSE = "muse"
    MATRIX = "matrix"
    GUARDIAN = "guardian"


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"


class HealthStatus(StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    DOWN = "down"


class AgentStartPayload(Payload):
    agent_id: Id
    task_type: Label
    task_id: Id | None = None
    guild: Guild | None = None
    input_summary: Text | None = None


class AgentCompletePayload(Payload):
    agent_id: Id
    task_id: Id | None = None
    task_type: Label | None = None
    duration_ms: Annotated[float, Field(ge=0)] | None = None
    tokens_used: Count | None = None
    result_summary: Text | None = None


class AgentErrorPayload(Payload):
    error: Text
    component: Label
    agent_id: Id | None = None
    error_type: Label | None = None
    recoverable: bool = True


class CampaignActivatePayload(Payload):
    campaign_id: Id
    name: Label
    budget: Annotated[float, Field(ge=0)] | None = None
    channels: list[Label] = Field(default_factory=list, max_length=50)
    starts_at: datetime | None = None


class CampaignPausePayload(Payload):
    campaign_id: Id
    reason: Text
    paused_by: Id | None = None


class MoveExecutePayload(Payload):
    move_id: Id
    campaign_id: Id | None = None
    action: Label
    parameters: dict[str, Any] = Field(default_factory=dict)


class SignalDetectedPayload(Payload):
    signal_id: Id
    source: Label
    topic: Label
    strength: Score
    summary: Text | None = None


class InsightGeneratedPayload(Payload):
    insight_id: Id
    title: Label
    body: LongText
    confidence: Score
    signal_ids: list[Id] = Field(default_factory=list, max_length=100)


class ResourceAllocationPayload(Payload):
    request_id: Id
    resource_type: Label
    amount: Annotated[float, Field(gt=0)]
    requested_by: Id
    guild: Guild | None = None


class AlertCreatedPayload(Payload):
    alert_id: Id
    severity: Severity
    title: Label
    message: Text
    component: Label | None = None


class WorkspaceUpdatePayload(Payload):
    field: Label
    old_value: Any = None
    new_value: Any = None
    updated_by: Id | None = None


class GuildEventPayload(Payload):
    stage: Label
    agent_id: Id | None = None
    details: dict[str, Any] = Field(default_factory=dict)


class ResearchGuildEventPayload(GuildEventPayload):
    sources_consulted: Count = 0


class MuseGuildEventPayload(GuildEventPayload):
    asset_type: Label | None = None
    asset_id: Id | None = None


class MatrixGuildEventPayload(GuildEventPayload):
    metric: Label | None = None
    value: float | None = None


class GuardianGuildEventPayload(GuildEventPayload):
    compliant: bool = True
    rule_id: Id | None = None


class InterGuildCoordinationPayload(Payload):
    from_guild: Guild
    to_guilds: list[Guild] = Field(min_length=1, max_length=4)
    request: Text
    deadline: datetime | None = None


class CouncilOfLordsDirectivePayload(Payload):
    directive_id: Id
    issued_by: Label
    directive: Text
    target_guilds: list[Guild] = Field(default_factory=lambda: list(Guild), max_length=4)
    priority: Annotated[int, Field(ge=1, le=5)] = 3


class PerformanceMetricsPayload(Payload):
    subject_id: Id
    metrics: dict[str, float] = Field(max_length=100)
    window_seconds: Annotated[int, Field(gt=0)] = 60


class RaptorBusHealthPayload(Payload):
    status: HealthStatus
    queue_depths: dict[str, Count] = Field(default_factory=dict)
    dlq_depth: Count = 0


class SystemMetricsPayload(Payload):
    host: Label
    cpu_percent: Annotated[float, Field(ge=0, le=100)]
    memory_percent: Annotated[float, Field(ge=0, le=100)]
    extra: dict[str, float] = Field(default_factory=dict)


class ErrorAggregationPayload(Payload):
    window_seconds: Annotated[int, Field(gt=0)]
    error_counts: dict[str, Count]
    top_error: Text | None = None


class ModelInferenceCompletePayload(Payload):
    tokens_used: Count
    response: LongText
    model: Label | None = None
    latency_ms: Annotated[float, Field(ge=0)] | None = None


class CampaignCreatedPayload(Payload):
    campaign_id: Id
    name: Label
    objective: Text | None = None
    budget: Annotated[float, Field(ge=0)] | None = None


class WorkflowCompletedPayload(Payload):
    workflow_id: Id
    status: Annotated[str, Field(pattern=r"^(succeeded|failed|cancelled)$")] = "succeeded"
    duration_ms: Annotated[float, Field(ge=0)] | None = None
    outputs: dict[str, Any] = Field(default_factory=dict)


STATUS_REPORT_PAYLOADS: tuple[type[Payload], ...] = (
    AgentStartPayload,
    AgentCompletePayload,
    AgentErrorPayload,
    CampaignActivatePayload,
    CampaignPausePayload,
    MoveExecutePayload,
    SignalDetectedPayload,
    InsightGeneratedPayload,
    ResourceAllocationPayload,
    AlertCreatedPayload,
    WorkspaceUpdatePayload,
    ResearchGuildEventPayload,
    MuseGuildEventPayload,
    MatrixGuildEventPayload,
    GuardianGuildEventPayload,
    InterGuildCoordinationPayload,
    CouncilOfLordsDirectivePayload,
    PerformanceMetricsPayload,
    RaptorBusHealthPayload,
    SystemMetricsPayload,
    ErrorAggregationPayload,
)

# event type -> (payload model, workspace scoped). System-wide events (health,
# host metrics, error roll-ups) belong to no tenant, so they carry no workspace.
EVENT_TYPES: dict[str, tuple[type[Payload], bool]] = {
    "agent.task_started": (AgentStartPayload, True),
    "agent.task_completed": (AgentCompletePayload, True),
    "agent.error": (AgentErrorPayload, True),
    "campaign.activated": (CampaignActivatePayload, True),
    "campaign.paused": (CampaignPausePayload, True),
    "campaign.created": (CampaignCreatedPayload, True),
    "move.executed": (MoveExecutePayload, True),
    "signal.detected": (SignalDetectedPayload, True),
    "insight.generated": (InsightGeneratedPayload, True),
    "resource.allocation_requested": (ResourceAllocationPayload, True),
    "alert.created": (AlertCreatedPayload, False),
    "workspace.updated": (WorkspaceUpdatePayload, True),
    "guild.research.event": (ResearchGuildEventPayload, True),
    "guild.muse.event": (MuseGuildEventPayload, True),
    "guild.matrix.event": (MatrixGuildEventPayload, True),
    "guild.guardian.event": (GuardianGuildEventPayload, True),
    "guild.coordination": (InterGuildCoordinationPayload, True),
    "council.directive": (CouncilOfLordsDirectivePayload, False),
    "metrics.performance": (PerformanceMetricsPayload, True),
    "bus.health": (RaptorBusHealthPayload, False),
    "system.metrics": (SystemMetricsPayload, False),
    "system.error_aggregation": (ErrorAggregationPayload, False),
    "model.inference_complete": (ModelInferenceCompletePayload, True),
    "workflow.completed": (WorkflowCompletedPayload, True),
}


def validate_payload(event_type: str, data: Any) -> BaseModel | dict[str, Any]:
    """Validate ``data`` against the default catalogue's model for ``event_type``."""
    from raptorflow_bus.catalogue import Catalogue

    return Catalogue.default().validate(event_type, data)
