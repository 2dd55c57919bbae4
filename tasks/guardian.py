"""Guardian guild: compliance checks.

``check_campaign_compliance`` fails on purpose for a campaign activated on a
channel in ``BLOCKED_CHANNELS`` (e.g. ``"purchased_email_list"``): the failure
is permanent, so it is retried three times and lands in the dead-letter queue,
where a person can read why and replay it once the campaign is fixed."""

from raptorflow_bus import Envelope, HandlerGroup, emit
from raptorflow_bus.events import (
    CampaignActivatePayload,
    CouncilOfLordsDirectivePayload,
    GuardianGuildEventPayload,
)

handlers = HandlerGroup("guardian")

BLOCKED_CHANNELS = frozenset({"purchased_email_list", "unverified_sms"})


class ComplianceViolation(Exception):
    """A campaign breaks a compliance rule; only a person can fix that."""


@handlers.on("campaign.activated")
def check_campaign_compliance(campaign: CampaignActivatePayload, envelope: Envelope) -> None:
    blocked = sorted(BLOCKED_CHANNELS.intersection(campaign.channels))
    if blocked:
        raise ComplianceViolation(
            f"campaign {campaign.campaign_id} uses blocked channel(s): {', '.join(blocked)}"
        )
    emit(
        "guild.guardian.event",
        GuardianGuildEventPayload(
            stage="campaign_approved", compliant=True, details={"campaign": campaign.campaign_id}
        ),
    )


@handlers.on("council.directive")
def acknowledge_directive(directive: CouncilOfLordsDirectivePayload, envelope: Envelope) -> None:
    if "guardian" in directive.target_guilds:
        emit(
            "guild.guardian.event",
            GuardianGuildEventPayload(
                stage="directive_acknowledged", details={"directive_id": directive.directive_id}
            ),
            workspace_id=envelope.workspace_id or "system",
        )
