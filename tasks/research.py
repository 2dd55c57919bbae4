"""Research guild: scores market signals and turns the strong ones into insights."""

from raptorflow_bus import Envelope, HandlerGroup, emit
from raptorflow_bus.events import (
    CouncilOfLordsDirectivePayload,
    InsightGeneratedPayload,
    ResearchGuildEventPayload,
    SignalDetectedPayload,
)

handlers = HandlerGroup("research")

# Sources whose signals we trust more; anything else is weighted down.
SOURCE_WEIGHT = {"earnings_call": 1.0, "news": 0.8, "social": 0.6}
INSIGHT_THRESHOLD = 0.4


def score(signal: SignalDetectedPayload) -> float:
    return round(signal.strength * SOURCE_WEIGHT.get(signal.source, 0.5), 3)


@handlers.on("signal.detected")
def score_signal(signal: SignalDetectedPayload, envelope: Envelope) -> float:
    """An insight emitted here carries the signal's correlation id and, as its
    causation id, the signal event's id: the bus does that from context."""
    value = score(signal)
    if value >= INSIGHT_THRESHOLD:
        emit(
            "insight.generated",
            InsightGeneratedPayload(
                insight_id=f"ins-{signal.signal_id}",
                title=f"{signal.topic}: {signal.source} signal",
                body=signal.summary or f"{signal.topic} moved with strength {signal.strength}",
                confidence=value,
                signal_ids=[signal.signal_id],
            ),
            source_agent_id="RES-001",
        )
    return value


@handlers.on("council.directive")
def acknowledge_directive(directive: CouncilOfLordsDirectivePayload, envelope: Envelope) -> None:
    if "research" in directive.target_guilds:
        emit(
            "guild.research.event",
            ResearchGuildEventPayload(
                stage="directive_acknowledged", details={"directive_id": directive.directive_id}
            ),
            workspace_id=envelope.workspace_id or "system",
        )
