"""Muse guild: drafts creative work from insights."""

from raptorflow_bus import Envelope, HandlerGroup, emit
from raptorflow_bus.events import (
    CouncilOfLordsDirectivePayload,
    InsightGeneratedPayload,
    MuseGuildEventPayload,
)

handlers = HandlerGroup("muse")


@handlers.on("insight.generated")
def draft_content(insight: InsightGeneratedPayload, envelope: Envelope) -> str:
    asset_type = "post" if insight.confidence < 0.8 else "campaign_brief"
    emit(
        "guild.muse.event",
        MuseGuildEventPayload(
            stage="draft_created",
            asset_type=asset_type,
            asset_id=f"draft-{insight.insight_id}",
            details={"title": insight.title},
        ),
    )
    return asset_type


@handlers.on("council.directive")
def acknowledge_directive(directive: CouncilOfLordsDirectivePayload, envelope: Envelope) -> None:
    if "muse" in directive.target_guilds:
        emit(
            "guild.muse.event",
            MuseGuildEventPayload(
                stage="directive_acknowledged", details={"directive_id": directive.directive_id}
            ),
            workspace_id=envelope.workspace_id or "system",
        )
