"""Matrix guild: watches agent runs and resource requests."""

from raptorflow_bus import Envelope, HandlerGroup, emit
from raptorflow_bus.events import (
    AgentCompletePayload,
    CouncilOfLordsDirectivePayload,
    MatrixGuildEventPayload,
    ResourceAllocationPayload,
)

handlers = HandlerGroup("matrix")

# Per-request ceiling on compute units; above it a human must approve.
MAX_UNITS_PER_REQUEST = 1_000.0


@handlers.on("agent.task_completed")
def record_agent_run(done: AgentCompletePayload, envelope: Envelope) -> None:
    emit(
        "guild.matrix.event",
        MatrixGuildEventPayload(
            stage="agent_run_recorded",
            agent_id=done.agent_id,
            metric="duration_ms",
            value=done.duration_ms,
        ),
    )


@handlers.on("resource.allocation_requested")
def allocate_resources(request: ResourceAllocationPayload, envelope: Envelope) -> bool:
    granted = request.amount <= MAX_UNITS_PER_REQUEST
    emit(
        "guild.matrix.event",
        MatrixGuildEventPayload(
            stage="allocation_granted" if granted else "allocation_needs_approval",
            metric=request.resource_type,
            value=request.amount,
        ),
    )
    return granted


@handlers.on("council.directive")
def acknowledge_directive(directive: CouncilOfLordsDirectivePayload, envelope: Envelope) -> None:
    if "matrix" in directive.target_guilds:
        emit(
            "guild.matrix.event",
            MatrixGuildEventPayload(
                stage="directive_acknowledged", details={"directive_id": directive.directive_id}
            ),
            workspace_id=envelope.workspace_id or "system",
        )
