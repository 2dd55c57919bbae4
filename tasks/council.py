"""Council of Lords: hears every channel, records directives, escalates errors,
watches the bus's health reports."""

import logging

from raptorflow_bus import Envelope, HandlerGroup, emit
from raptorflow_bus.events import (
    AgentErrorPayload,
    AlertCreatedPayload,
    CouncilOfLordsDirectivePayload,
    HealthStatus,
    RaptorBusHealthPayload,
    Severity,
)
from raptorflow_bus.logs import log

handlers = HandlerGroup("council")


@handlers.on("council.directive")
def record_directive(directive: CouncilOfLordsDirectivePayload, envelope: Envelope) -> str:
    log(
        logging.INFO,
        f"council directive {directive.directive_id} recorded: {directive.directive}",
        envelope=envelope,
        targets=",".join(directive.target_guilds),
    )
    return directive.directive_id


@handlers.on("agent.error")
def escalate_agent_error(error: AgentErrorPayload, envelope: Envelope) -> None:
    emit(
        "alert.created",
        AlertCreatedPayload(
            alert_id=f"alert-{envelope.id[:8]}",
            severity=Severity.WARNING if error.recoverable else Severity.CRITICAL,
            title=f"{error.component} failed",
            message=error.error,
            component=error.component,
        ),
    )


@handlers.on("bus.health")
def watch_bus_health(health: RaptorBusHealthPayload, envelope: Envelope) -> str:
    """Workers report every 30 s; the Council logs only what needs a look."""
    if health.status is not HealthStatus.HEALTHY:
        backlog = {q: n for q, n in health.queue_depths.items() if n}
        log(
            logging.WARNING,
            f"bus is {health.status}: DLQ depth {health.dlq_depth}, waiting {backlog}",
            envelope=envelope,
        )
    return health.status.value
