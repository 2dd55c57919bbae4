"""The bus's behaviour, run against the eager bus and against real Redis with a
real Celery worker (the ``backend`` fixture): one suite, two backends."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from raptorflow_bus import (
    BusError,
    InvalidEnvelope,
    InvalidEventType,
    InvalidPayload,
    MissingWorkspace,
    PayloadTooLarge,
    Settings,
    Topology,
    UnknownEventType,
    bus_context,
)
from raptorflow_bus.events import SignalDetectedPayload
from tests.harness import Recorder
from tests.payloads import VALID

SIGNAL = VALID["signal.detected"]
ALL_GUILDS = {"research", "muse", "matrix", "guardian", "council"}

FAN_OUT = [
    ("signal.detected", {"research", "council"}),
    ("model.inference_complete", {"research", "council"}),
    ("guild.research.event", {"research", "council"}),
    ("insight.generated", {"muse", "council"}),
    ("campaign.created", {"muse", "council"}),
    ("guild.muse.event", {"muse", "council"}),
    ("agent.task_started", {"matrix", "council"}),
    ("workflow.completed", {"matrix", "council"}),
    ("guild.matrix.event", {"matrix", "council"}),
    ("campaign.activated", {"guardian", "council"}),
    ("agent.error", {"guardian", "council"}),
    ("guild.guardian.event", {"guardian", "council"}),
    ("council.directive", ALL_GUILDS),
    ("guild.coordination", ALL_GUILDS),
    ("metrics.performance", ALL_GUILDS),
    ("alert.created", {"council"}),
    ("bus.health", {"council"}),
    ("workspace.updated", {"council"}),
]


@pytest.mark.parametrize(("event_type", "expected"), FAN_OUT)
def test_an_event_reaches_exactly_the_consumers_bound_to_it(
    backend: Any, event_type: str, expected: set[str]
) -> None:
    calls = Recorder()
    with backend.bus() as bus:
        for consumer in bus.topology.consumers_for(f"raptorflow.events.{event_type}"):
            bus.subscribe(event_type, calls.handler(consumer), guild=consumer)
        with backend.running(bus):
            bus.emit(event_type, VALID[event_type], workspace_id="ws-1")
            backend.settle(bus, lambda: len(calls.labels()) >= len(expected))
        assert sorted(calls.labels()) == sorted(expected)


def test_a_handler_that_always_fails_runs_4_times_and_lands_in_the_dlq_once(backend: Any) -> None:
    calls = Recorder()
    with backend.bus() as bus:
        bus.subscribe("signal.detected", calls.handler("doomed", fail_times=-1), guild="research")
        with backend.running(bus):
            with bus_context(workspace_id="ws-9", correlation_id="corr-9"):
                sent = bus.emit("signal.detected", SIGNAL)
            backend.settle(bus, lambda: bus.dlq.count() == 1)
        assert calls.count("doomed") == 4
        [letter] = bus.dlq.list()
        assert letter.envelope == sent
        assert (letter.handler, letter.guild) == ("research.doomed", "research")
        assert letter.exception_type == "RuntimeError"
        assert letter.message == "doomed failed on purpose"
        assert "RuntimeError: doomed failed on purpose" in letter.traceback
        assert letter.attempts == 4
        assert letter.first_failed_at < letter.last_failed_at
        assert (letter.workspace_id, letter.correlation_id) == ("ws-9", "corr-9")
        counts = bus.get_metrics()["events"]["signal.detected"]
        assert (
            counts
            | {
                "published": 1,
                "delivered": 1,
                "failed": 4,
                "retried": 3,
                "dead_lettered": 1,
                "succeeded": 0,
            }
            == counts
        )


def test_a_handler_failing_twice_then_succeeding_leaves_no_dead_letter(backend: Any) -> None:
    calls = Recorder()
    with backend.bus() as bus:
        bus.subscribe("signal.detected", calls.handler("flaky", fail_times=2), guild="research")
        with backend.running(bus):
            bus.emit("signal.detected", SIGNAL, workspace_id="ws-1")
            backend.settle(bus, lambda: calls.count("flaky") == 3)
        assert calls.count("flaky") == 3
        assert bus.dlq.count() == 0
        counts = bus.get_metrics()["events"]["signal.detected"]
        assert (counts["retried"], counts["succeeded"], counts["dead_lettered"]) == (2, 1, 0)


def test_a_retry_never_reruns_the_other_handlers_of_the_same_event(backend: Any) -> None:
    calls = Recorder()
    with backend.bus() as bus:
        bus.subscribe("council.directive", calls.handler("failing", fail_times=-1), "research")
        bus.subscribe("council.directive", calls.handler("sibling"), guild="research")
        for guild in ("muse", "matrix", "guardian", "council"):
            bus.subscribe("council.directive", calls.handler(f"other_{guild}"), guild=guild)
        with backend.running(bus):
            bus.emit("council.directive", VALID["council.directive"])
            backend.settle(bus, lambda: bus.dlq.count() == 1)
        assert calls.count("failing") == 4
        assert calls.count("sibling") == 1
        for guild in ("muse", "matrix", "guardian", "council"):
            assert calls.count(f"other_{guild}") == 1


def test_each_handler_gets_the_validated_model_and_the_envelope(backend: Any) -> None:
    calls = Recorder()
    with backend.bus() as bus:
        bus.subscribe("signal.detected", calls.handler("typed"), guild="research")
        with backend.running(bus):
            sent = bus.emit("signal.detected", SignalDetectedPayload(**SIGNAL), workspace_id="w")
            backend.settle(bus, lambda: calls.count("typed") == 1)
        _, payload, envelope = calls.calls[0]
        assert payload == SignalDetectedPayload(**SIGNAL)
        assert envelope == sent


def test_replay_reruns_only_that_handler_and_the_letter_leaves_on_success(backend: Any) -> None:
    calls = Recorder()
    broken = {"on": True}

    def fragile(payload: Any, envelope: Any) -> None:
        calls.add("fragile", payload, envelope)
        if broken["on"]:
            raise ValueError("downstream unavailable")

    with backend.bus() as bus:
        bus.subscribe("signal.detected", fragile, guild="research")
        bus.subscribe("signal.detected", calls.handler("steady"), guild="council")
        with backend.running(bus):
            bus.emit("signal.detected", SIGNAL, workspace_id="ws-1", correlation_id="c-1")
            backend.settle(bus, lambda: bus.dlq.count() == 1)
            [letter] = bus.dlq.list()

            bus.dlq.replay(letter.id)
            backend.settle(bus, lambda: calls.count("fragile") == 8)
            again = bus.dlq.get(letter.id)
            assert (again.attempts, again.replays) == (8, 1)
            assert again.first_failed_at == letter.first_failed_at

            broken["on"] = False
            bus.dlq.replay(letter.id)
            backend.settle(bus, lambda: bus.dlq.count() == 0)
        assert calls.count("fragile") == 9
        assert calls.count("steady") == 1
        replayed = calls.calls[-1] if calls.calls[-1][0] == "fragile" else None
        assert replayed is not None and replayed[2] == letter.envelope


def test_dead_letters_filter_by_workspace_event_type_and_handler_and_purge(backend: Any) -> None:
    calls = Recorder()
    with backend.bus() as bus:
        bus.subscribe("signal.detected", calls.handler("sig_fail", fail_times=-1), "research")
        bus.subscribe("insight.generated", calls.handler("ins_fail", fail_times=-1), "muse")
        with backend.running(bus):
            bus.emit("signal.detected", SIGNAL, workspace_id="ws-a")
            bus.emit("signal.detected", SIGNAL, workspace_id="ws-b")
            bus.emit("insight.generated", VALID["insight.generated"], workspace_id="ws-a")
            backend.settle(bus, lambda: bus.dlq.count() == 3)
        assert len(bus.dlq.list(workspace_id="ws-a")) == 2
        assert len(bus.dlq.list(event_type="insight.generated")) == 1
        assert [d.handler for d in bus.dlq.list(handler="sig_fail")] == ["research.sig_fail"] * 2
        assert len(bus.dlq.list(handler="research.sig_fail", workspace_id="ws-b")) == 1
        with pytest.raises(BusError, match="purge needs"):
            bus.dlq.purge()
        assert bus.dlq.purge(workspace_id="ws-b") == 1
        first = bus.dlq.list()[0]
        assert bus.dlq.purge([first.id]) == 1
        assert bus.dlq.purge(everything=True) == 1
        assert bus.dlq.count() == 0


def test_the_dlq_keeps_its_capacity_by_evicting_the_oldest(backend: Any, caplog: Any) -> None:
    import routing

    small = Topology.from_module(routing)
    small = Topology.build(small.channels.values(), small.consumers.values(), dlq_capacity=2)
    calls = Recorder()
    with backend.bus(topology=small) as bus:
        bus.subscribe("signal.detected", calls.handler("doomed", fail_times=-1), "research")
        with backend.running(bus, concurrency=1):
            sent = [bus.emit("signal.detected", SIGNAL, workspace_id=f"ws-{i}") for i in range(3)]
            backend.settle(bus, lambda: calls.count("doomed") == 12)
        kept = {d.envelope.id for d in bus.dlq.list() if d.envelope}
        assert len(kept) == 2 and kept < {e.id for e in sent}
        assert bus.get_metrics()["dlq"] == {"depth": 2, "evicted": 1}
        assert any("evicted 1 oldest" in r.getMessage() for r in caplog.records)


def test_context_reaches_the_handler_the_logs_and_the_dead_letter(
    backend: Any, caplog: Any
) -> None:
    calls = Recorder()
    with backend.bus() as bus:
        bus.subscribe("signal.detected", calls.handler("seen"), guild="research")
        bus.subscribe("signal.detected", calls.handler("dies", fail_times=-1), guild="council")
        with backend.running(bus):
            with bus_context(workspace_id="ws-ctx", correlation_id="corr-ctx"):
                bus.emit("signal.detected", SIGNAL)
                explicit = bus.emit(
                    "signal.detected", SIGNAL, workspace_id="ws-x", correlation_id="corr-x"
                )
            backend.settle(bus, lambda: bus.dlq.count() == 2)
        seen = [c[2] for c in calls.calls if c[0] == "seen"]
        assert {(e.workspace_id, e.correlation_id, e.request_id) for e in seen} == {
            ("ws-ctx", "corr-ctx", "corr-ctx"),
            ("ws-x", "corr-x", "corr-x"),
        }
        assert explicit.workspace_id == "ws-x"
        letters = {(d.workspace_id, d.correlation_id) for d in bus.dlq.list()}
        assert letters == {("ws-ctx", "corr-ctx"), ("ws-x", "corr-x")}
        bus_lines = [r.getMessage() for r in caplog.records if r.name == "bus"]
        assert bus_lines
        assert all(
            "workspace_id=" in m and "correlation_id=" in m and "event_type=" in m
            for m in bus_lines
        )
        assert any(
            "workspace_id=ws-ctx correlation_id=corr-ctx event_type=signal.detected" in m
            and "dead-lettered" in m
            for m in bus_lines
        )


def test_an_event_emitted_by_a_handler_carries_correlation_and_causation(backend: Any) -> None:
    from raptorflow_bus import emit

    calls = Recorder()

    def research(signal: Any, envelope: Any) -> None:
        calls.add("research", signal, envelope)
        emit("insight.generated", VALID["insight.generated"])

    with backend.bus() as bus:
        bus.subscribe("signal.detected", research, guild="research")
        bus.subscribe("insight.generated", calls.handler("muse"), guild="muse")
        with backend.running(bus):
            cause = bus.emit("signal.detected", SIGNAL, workspace_id="ws-7", correlation_id="c-7")
            backend.settle(bus, lambda: calls.count("muse") == 1)
        effect = next(c[2] for c in calls.calls if c[0] == "muse")
        assert effect.correlation_id == "c-7"
        assert effect.workspace_id == "ws-7"
        assert effect.causation_id == cause.id
        assert effect.type == "insight.generated"


BAD_INPUTS: list[tuple[str, Any, dict[str, Any], type[Exception], str]] = [
    ("signal.detectd", SIGNAL, {}, UnknownEventType, "did you mean 'signal.detected'"),
    ("signal.*", SIGNAL, {}, InvalidEventType, "wildcard"),
    ("guild.#", SIGNAL, {}, InvalidEventType, "wildcard"),
    ("Signal Detected", SIGNAL, {}, InvalidEventType, "dotted lowercase"),
    ("signal.detected", {**SIGNAL, "strength": 7}, {}, InvalidPayload, "strength"),
    ("signal.detected", {**SIGNAL, "extra": 1}, {}, InvalidPayload, "extra"),
    ("signal.detected", {"signal_id": "s"}, {}, InvalidPayload, "source"),
    (
        "signal.detected",
        {**SIGNAL, "summary": "x" * 3_000},
        {"max": 2_048},
        PayloadTooLarge,
        "over the limit of 2048 bytes",
    ),
    ("signal.detected", SIGNAL, {"no_ws": True}, MissingWorkspace, "workspace-scoped"),
    ("signal.detected", SIGNAL, {"priority": "urgent"}, InvalidEnvelope, "priority 'urgent'"),
]


@pytest.mark.parametrize(("event_type", "payload", "opts", "error", "message"), BAD_INPUTS)
def test_bad_input_raises_a_named_bus_error_and_publishes_nothing(
    backend: Any,
    event_type: str,
    payload: Any,
    opts: dict[str, Any],
    error: type[Exception],
    message: str,
) -> None:
    calls = Recorder()
    settings = Settings(max_payload_bytes=opts.get("max", 256 * 1024))
    with backend.bus(settings=settings) as bus:
        bus.subscribe("signal.detected", calls.handler("never"), guild="research")
        kwargs: dict[str, Any] = {} if opts.get("no_ws") else {"workspace_id": "ws-1"}
        if "priority" in opts:
            kwargs["priority"] = opts["priority"]
        with backend.running(bus):
            with pytest.raises(error, match=message) as raised:
                bus.emit(event_type, payload, **kwargs)
            assert isinstance(raised.value, BusError)
            backend.settle(bus)
        assert calls.labels() == []
        assert bus.get_metrics()["totals"]["published"] == 0
        assert sum(backend.queue_depths(bus).values()) == 0


def test_an_invalid_payload_is_also_a_value_error(backend: Any) -> None:
    with backend.bus() as bus, pytest.raises(ValueError, match="strength"):
        bus.emit("signal.detected", {**SIGNAL, "strength": -1}, workspace_id="w")


def test_emit_many_is_all_or_nothing(backend: Any) -> None:
    calls = Recorder()
    with backend.bus() as bus:
        bus.subscribe("signal.detected", calls.handler("batch"), guild="research")
        with backend.running(bus):
            with pytest.raises(InvalidPayload):
                bus.emit_many(
                    [("signal.detected", SIGNAL), ("signal.detected", {})], workspace_id="w"
                )
            sent = bus.emit_many(
                [
                    ("signal.detected", SIGNAL),
                    {"type": "signal.detected", "payload": SIGNAL, "priority": "high"},
                ],
                workspace_id="w",
            )
            backend.settle(bus, lambda: calls.count("batch") == 2)
        assert [e.priority for e in sent] == ["normal", "high"]
        assert calls.count("batch") == 2
        assert bus.get_metrics()["events"]["signal.detected"]["published"] == 2


def test_async_publish_returns_the_envelope_it_sent(backend: Any) -> None:
    import asyncio

    calls = Recorder()
    with backend.bus() as bus:
        bus.subscribe("agent.task_started", calls.handler("started"), guild="matrix")
        with backend.running(bus):

            async def go() -> Any:
                with bus_context(workspace_id="ws-123"):
                    return await bus.publish(
                        "agent.task_started",
                        {"agent_id": "RES-001", "task_type": "research"},
                        correlation_id="corr-456",
                    )

            sent = asyncio.run(go())
            backend.settle(bus, lambda: calls.count("started") == 1)
        assert (sent.workspace_id, sent.correlation_id, sent.type) == (
            "ws-123",
            "corr-456",
            "agent.task_started",
        )
        assert calls.calls[0][2] == sent


def test_a_handler_failure_is_never_raised_out_of_emit(backend: Any, caplog: Any) -> None:
    calls = Recorder()
    with backend.bus() as bus:
        bus.subscribe("signal.detected", calls.handler("boom", fail_times=-1), guild="research")
        with backend.running(bus):
            bus.emit("signal.detected", SIGNAL, workspace_id="w")
            backend.settle(bus, lambda: bus.dlq.count() == 1)
        assert any(r.levelno == logging.ERROR for r in caplog.records if r.name == "bus")
