"""Behaviour that only exists on a real broker: queues in Redis, redelivery,
backpressure, retention, priority, and guild workers as processes."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from typing import Any

import pytest
from kombu import Connection

import routing
from raptorflow_bus import Backpressure, Bus, BusError, Channel, Settings, Topology
from raptorflow_bus.dispatch import dispatch, handler_task_id
from raptorflow_bus.queues import queue_state
from raptorflow_bus.topology import priority_list
from tests.harness import Recorder, RedisBackend, wait_until
from tests.payloads import VALID

pytestmark = pytest.mark.broker
SIGNAL = VALID["signal.detected"]
ROUTING = Topology.from_module(routing)


def reshaped(**changes: Any) -> Topology:
    channels = [Channel(**{**ch.__dict__, **changes}) for ch in ROUTING.channels.values()]
    return Topology.build(channels, ROUTING.consumers.values())


def depth(bus: Bus, queue: str) -> int:
    return queue_state(bus, queue).depth


def test_200_events_over_all_types_arrive_exactly_once_per_event_and_handler(
    redis_backend: RedisBackend,
) -> None:
    seen: Counter[tuple[str, str]] = Counter()

    def recorder(label: str) -> Any:
        def handle(payload: Any, envelope: Any) -> None:
            seen[(envelope.id, label)] += 1

        handle.__name__ = "record"
        return handle

    with redis_backend.bus() as bus:
        handlers = {c: recorder(c) for c in bus.topology.consumers}
        for event_type in VALID:
            for consumer in bus.topology.consumers_for(f"raptorflow.events.{event_type}"):
                bus.subscribe(event_type, handlers[consumer], guild=consumer)
        expected = set()
        with redis_backend.running(bus):
            types = list(VALID)
            for i in range(200):
                event_type = types[i % len(types)]
                env = bus.emit(event_type, VALID[event_type], workspace_id=f"ws-{i % 7}")
                expected |= {(env.id, c) for c in bus.topology.consumers_for(env.routing_key)}
            redis_backend.settle(bus, lambda: len(seen) >= len(expected))
        assert set(seen) == expected
        assert set(seen.values()) == {1}
        assert bus.get_metrics()["totals"]["published"] == 200


def test_an_event_emitted_while_no_worker_runs_waits_in_every_bound_queue(
    redis_backend: RedisBackend,
) -> None:
    calls = Recorder()
    with redis_backend.bus() as bus:
        for guild in bus.topology.consumers:
            bus.subscribe("council.directive", calls.handler(f"ack_{guild}"), guild=guild)
        bus.emit("council.directive", VALID["council.directive"])
        assert {c: depth(bus, c) for c in bus.topology.consumers} == dict.fromkeys(
            bus.topology.consumers, 1
        )
        with redis_backend.running(bus):
            redis_backend.settle(bus, lambda: len(calls.labels()) == 5)
        assert sorted(calls.labels()) == sorted(f"ack_{g}" for g in bus.topology.consumers)


def test_an_unacked_event_is_restored_to_its_own_queue_only(redis_backend: RedisBackend) -> None:
    """Kombu restores through the message's exchange (celery#4091); ours names none."""
    with redis_backend.bus() as bus:
        bus.emit("council.directive", VALID["council.directive"])
        with Connection(bus.broker_url) as conn:
            queue = bus.topology.kombu_event_queue("research")
            message = queue(conn.default_channel).get(no_ack=False)
            assert message is not None
            assert depth(bus, "research") == 0
        assert {c: depth(bus, c) for c in bus.topology.consumers} == dict.fromkeys(
            bus.topology.consumers, 1
        )


def test_the_same_event_delivered_twice_runs_each_handler_once(
    redis_backend: RedisBackend,
) -> None:
    calls = Recorder()
    with redis_backend.bus() as bus:
        bus.subscribe("signal.detected", calls.handler("once"), guild="research")
        env = bus.emit("signal.detected", SIGNAL, workspace_id="ws-1")
        raw = json.loads(bus.redis.lindex(priority_list("research", 6), 0))
        raw["properties"]["delivery_tag"] = str(uuid.uuid4())
        bus.redis.lpush(priority_list("research", 6), json.dumps(raw))
        assert depth(bus, "research") == 2
        with redis_backend.running(bus, consumers=["research"], concurrency=1):
            redis_backend.settle(bus, lambda: bus.get_metrics()["totals"]["duplicates"] == 1)
        assert calls.count("once") == 1
        assert bus.redis.exists(f"raptorbus:done:{handler_task_id(env.id, 'research.once')}")


def test_a_dead_letter_is_read_back_from_redis_by_another_process(
    redis_backend: RedisBackend,
) -> None:
    calls = Recorder()
    with redis_backend.bus() as bus:
        bus.subscribe("signal.detected", calls.handler("doomed", fail_times=-1), "research")
        with redis_backend.running(bus):
            bus.emit("signal.detected", SIGNAL, workspace_id="ws-1")
            redis_backend.settle(bus, lambda: bus.dlq.count() == 1)
        assert calls.count("doomed") == 4
        code = (
            "import json,sys; from raptorflow_bus import Bus, Settings;"
            f"b=Bus(Settings(broker_url={bus.broker_url!r})).connect();"
            "print(json.dumps([d.model_dump(mode='json') for d in b.dlq.list()]))"
        )
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
        )
        [letter] = json.loads(result.stdout)
        assert (letter["handler"], letter["attempts"]) == ("research.doomed", 4)
        assert letter["envelope"] == bus.dlq.list()[0].envelope.model_dump(mode="json")


BAD = [
    ("signal.detectd", SIGNAL, {"workspace_id": "w"}),
    ("signal.#", SIGNAL, {"workspace_id": "w"}),
    ("signal.detected", {**SIGNAL, "strength": 2}, {"workspace_id": "w"}),
    ("signal.detected", {**SIGNAL, "summary": "x" * 300_000}, {"workspace_id": "w"}),
    ("signal.detected", SIGNAL, {}),
]


def test_bad_input_never_reaches_redis(redis_backend: RedisBackend) -> None:
    with redis_backend.bus() as bus:
        before = {k: bus.redis.dump(k) for k in bus.redis.keys("*")}
        for event_type, payload, kwargs in BAD:
            with pytest.raises(BusError):
                bus.emit(event_type, payload, **kwargs)
        after = {k: bus.redis.dump(k) for k in bus.redis.keys("*")}
        assert after == before


def test_a_full_queue_refuses_the_whole_event_naming_the_queue(
    redis_backend: RedisBackend,
) -> None:
    with redis_backend.bus(topology=reshaped(max_queue_length=2)) as bus:
        bus.emit("signal.detected", SIGNAL, workspace_id="w")
        bus.emit("signal.detected", SIGNAL, workspace_id="w")
        assert (depth(bus, "research"), depth(bus, "council")) == (2, 2)
        with pytest.raises(Backpressure, match="queue 'research' is full"):
            bus.emit("signal.detected", SIGNAL, workspace_id="w")
        with pytest.raises(Backpressure, match="queue 'council' is full"):
            bus.emit("alert.created", VALID["alert.created"])
        assert (depth(bus, "research"), depth(bus, "council")) == (2, 2)
        with pytest.raises(Backpressure, match="queue 'muse' is full"):
            bus.emit_many([("guild.muse.event", VALID["guild.muse.event"])] * 3, workspace_id="w")
        assert depth(bus, "muse") == 0
        assert bus.get_metrics()["totals"]["published"] == 2


def test_an_event_older_than_its_channel_retention_is_not_run(
    redis_backend: RedisBackend, caplog: Any
) -> None:
    calls = Recorder()
    with redis_backend.bus(topology=reshaped(retention_hours=1e-6)) as bus:
        bus.subscribe("signal.detected", calls.handler("stale"), guild="research")
        bus.emit("signal.detected", SIGNAL, workspace_id="w")
        time.sleep(0.05)
        with redis_backend.running(bus, consumers=["research"]):
            redis_backend.settle(bus, lambda: bus.get_metrics()["totals"]["expired"] == 1)
        assert calls.labels() == []
        assert any("expired before research.stale" in r.getMessage() for r in caplog.records)


def test_with_a_backlog_a_critical_event_is_handled_before_the_low_ones(
    redis_backend: RedisBackend,
) -> None:
    order: list[str] = []

    def handle(payload: Any, envelope: Any) -> None:
        order.append(envelope.priority.value)

    with redis_backend.bus() as bus:
        bus.subscribe("signal.detected", handle, guild="research", name="ordered")
        for _ in range(10):
            bus.emit("signal.detected", SIGNAL, workspace_id="w", priority="low")
        bus.emit("signal.detected", SIGNAL, workspace_id="w", priority="critical")
        with redis_backend.running(bus, consumers=["research"], concurrency=1):
            redis_backend.settle(bus, lambda: len(order) == 11)
        assert order[0] == "critical"


def run_cli(
    env: dict[str, str], *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "raptorflow_bus.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_a_worker_for_a_guild_that_does_not_exist_exits_with_a_clear_message(
    redis_url: str,
) -> None:
    result = run_cli({**os.environ, "RAPTORBUS_BROKER_URL": redis_url}, "worker", "finance")
    assert result.returncode == 2
    assert "unknown guild/consumer 'finance'" in result.stderr
    assert "research" in result.stderr


def test_a_guild_worker_process_runs_its_handlers_and_stops_warm(redis_url: str) -> None:
    env = {**os.environ, "RAPTORBUS_BROKER_URL": redis_url}
    bus = Bus(Settings(broker_url=redis_url)).connect()
    bus.redis.flushdb()
    bus.declare_topology()
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "raptorflow_bus.cli",
            "worker",
            "research",
            "--pool=solo",
            "--loglevel=WARNING",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        bus.emit("signal.detected", SIGNAL, workspace_id="ws-1")
        wait_until(
            lambda: (
                bus.get_metrics()["handlers"].get("research.score_signal", {}).get("succeeded") == 1
            ),
            timeout=60,
            what="research.score_signal to run in the worker process",
        )
        assert bus.get_metrics()["events"]["insight.generated"]["published"] == 1
    finally:
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=60)
        bus.close()
    assert worker.returncode == 0, output


def test_a_dispatched_handler_task_is_the_message_apply_async_would_write(
    redis_backend: RedisBackend,
) -> None:
    """dispatch builds handler tasks itself (no producer); this keeps it honest
    against the Celery and Kombu versions installed."""
    calls = Recorder()
    with redis_backend.bus() as bus:
        bus.subscribe("signal.detected", calls.handler("mirror"), guild="research")
        env = bus.emit("signal.detected", SIGNAL, workspace_id="ws-1")
        raw_event = json.loads(bus.redis.rpop(priority_list("research", 6)))
        assert dispatch(bus, env, "research", json.loads(raw_event["body"]), raw_event["body"])
        ours = json.loads(bus.redis.rpop(priority_list("research.handlers", 6)))
        task_id = handler_task_id(env.id, "research.mirror")
        bus.app.tasks["research.mirror"].apply_async(
            kwargs={"envelope": json.loads(raw_event["body"])},
            task_id=task_id,
            queue="research.handlers",
            priority=6,
        )
        celery = json.loads(bus.redis.rpop(priority_list("research.handlers", 6)))
    assert json.loads(ours["body"]) == json.loads(base64.b64decode(celery["body"]))
    differ = {"origin", "kwargsrepr"}
    assert {k: v for k, v in ours["headers"].items() if k not in differ} == {
        k: v for k, v in celery["headers"].items() if k not in differ
    }
    assert ours["headers"]["kwargsrepr"].startswith("{'envelope': {")
    differ = {"delivery_tag", "reply_to", "body_encoding"}
    assert {k: v for k, v in ours["properties"].items() if k not in differ} == {
        k: v for k, v in celery["properties"].items() if k not in differ
    }
    assert {k: v for k, v in ours.items() if k not in ("body", "headers", "properties")} == {
        k: v for k, v in celery.items() if k not in ("body", "headers", "properties")
    }
