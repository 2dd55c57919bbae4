"""RaptorFlow's own handlers (tasks/), run on an eager bus."""

from collections.abc import Iterator

import pytest

from raptorflow_bus import Bus, HandlerError, UnknownConsumer, Unroutable
from raptorflow_bus.testing import eager_bus
from tests.payloads import VALID


@pytest.fixture
def bus() -> Iterator[Bus]:
    with eager_bus() as bus:
        bus.load_handlers(["tasks"])
        yield bus


def published(bus: Bus, event_type: str) -> int:
    return int(bus.get_metrics()["events"].get(event_type, {}).get("published", 0))


def test_every_guild_module_registers_its_handlers_as_named_tasks(bus: Bus) -> None:
    names = {spec.task_name for spec in bus.handler_specs}
    assert {
        "research.score_signal",
        "muse.draft_content",
        "matrix.allocate_resources",
        "guardian.check_campaign_compliance",
        "council.record_directive",
    } <= names
    assert {spec.consumer for spec in bus.handler_specs} == {
        "research",
        "muse",
        "matrix",
        "guardian",
        "council",
    }
    assert all(name in bus.app.tasks for name in names)


def test_a_strong_signal_becomes_an_insight_then_a_draft_in_one_correlation(bus: Bus) -> None:
    signal = bus.emit(
        "signal.detected",
        {**VALID["signal.detected"], "strength": 0.9},
        workspace_id="ws-1",
        correlation_id="run-1",
    )
    assert published(bus, "insight.generated") == 1
    assert published(bus, "guild.muse.event") == 1
    assert bus.get_metrics()["totals"]["failed"] == 0
    assert signal.correlation_id == "run-1"


def test_a_weak_signal_produces_no_insight(bus: Bus) -> None:
    bus.emit(
        "signal.detected",
        {**VALID["signal.detected"], "source": "social", "strength": 0.2},
        workspace_id="ws-1",
    )
    assert published(bus, "insight.generated") == 0


def test_a_campaign_on_a_blocked_channel_lands_in_the_dlq(bus: Bus) -> None:
    bus.emit(
        "campaign.activated",
        {"campaign_id": "c-9", "name": "Spam", "channels": ["email", "purchased_email_list"]},
        workspace_id="ws-1",
    )
    [letter] = bus.dlq.list()
    assert letter.handler == "guardian.check_campaign_compliance"
    assert letter.exception_type == "ComplianceViolation"
    assert "purchased_email_list" in letter.message
    assert letter.attempts == 4


def test_a_council_directive_is_acknowledged_by_all_four_guilds(bus: Bus) -> None:
    bus.emit("council.directive", VALID["council.directive"], workspace_id="ws-1")
    for guild in ("research", "muse", "matrix", "guardian"):
        assert published(bus, f"guild.{guild}.event") == 1


def test_an_agent_error_is_escalated_to_an_alert(bus: Bus) -> None:
    bus.emit("agent.error", VALID["agent.error"], workspace_id="ws-1")
    assert published(bus, "alert.created") == 1


def test_subscribing_where_an_event_cannot_arrive_is_refused_with_the_reason() -> None:
    with eager_bus() as bus:
        with pytest.raises(HandlerError, match="'muse' does not hear 'signal.detected'"):
            bus.subscribe("signal.detected", lambda p: None, guild="muse", name="x")
        with pytest.raises(UnknownConsumer, match="unknown guild/consumer 'finance'"):
            bus.subscribe("signal.detected", lambda p: None, guild="finance", name="x")
        with pytest.raises(HandlerError, match="not an identifier"):
            bus.subscribe("signal.detected", lambda p: None, guild="research")
        spec = bus.subscribe("signal.detected", print, name="printer")
        assert spec.consumer == "research"


def test_an_event_type_nobody_is_bound_to_is_refused_not_dropped() -> None:
    from raptorflow_bus import Catalogue

    cat = Catalogue.default()
    cat.register("orphan.event", workspace_scoped=False)
    with eager_bus(catalogue=cat) as bus, pytest.raises(Unroutable, match="would be dropped"):
        bus.emit("orphan.event", {})
