"""Worker deaths on a real Redis: what a SIGKILL may cost and what it may not.

Every test here kills a real worker process; none waits for the death to be
noticed before going on, because a broker does not wait either."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection, Message, Queue

from raptorflow_bus import Bus, scripts
from raptorflow_bus.kombu_messages import kombu_message, wake_key
from raptorflow_bus.queues import UNACKED_KEY
from raptorflow_bus.transport import MALFORMED_KEY
from tests.harness import guild_worker, spawn_worker, wait_until
from tests.payloads import VALID

pytestmark = pytest.mark.broker


def succeeded(bus: Bus, handler: str) -> int:
    return int(bus.get_metrics()["handlers"].get(handler, {}).get("succeeded", 0))


def emit_signals(bus: Bus, first: int, count: int) -> None:
    for n in range(first, first + count):
        bus.emit(
            "signal.detected",
            {**VALID["signal.detected"], "signal_id": f"s-{n}"},
            workspace_id="ws-1",
        )


def ping_one(bus: Bus) -> bool:
    return len(bus.app.control.ping(timeout=0.5) or []) == 1


def test_events_emitted_the_instant_a_worker_is_killed_are_all_handled_by_the_next(
    bus: Bus, redis_url: str, tmp_path: Path
) -> None:
    """Stock Kombu hands the next message to the dead worker's pending BRPOP, and
    it is gone; here that BRPOP only takes a wake token."""
    log = tmp_path / "worker.log"
    for round_ in range(3):
        worker = spawn_worker(redis_url, log)
        wait_until(lambda: ping_one(bus), timeout=60, what="the research worker")
        worker.kill()
        emit_signals(bus, round_ * 3, 3)
        worker.wait(timeout=30)
    with guild_worker(redis_url, log):
        wait_until(
            lambda: succeeded(bus, "research.score_signal") == 9,
            timeout=60,
            what="all nine signals to be handled",
        )
    assert bus.get_metrics()["handlers"]["research.score_signal"].get("duplicates", 0) == 0
    assert bus.redis.hlen(UNACKED_KEY) == 0


def test_a_worker_killed_mid_handler_leaves_the_task_unacked_and_it_runs_again(
    bus: Bus, redis_url: str, tmp_path: Path
) -> None:
    """acks_late: the message stays in the unacked hash until the handler returns,
    and the visibility-timeout restore brings it back to its own queue."""
    log = tmp_path / "worker.log"
    env = {
        "RAPTORBUS_HANDLERS": "tests.slow_handlers",
        "RAPTORBUS_CELERY_CONFIG": "tests.short_visibility_config",
    }
    worker = spawn_worker(redis_url, log, **env)
    wait_until(lambda: ping_one(bus), timeout=60, what="the research worker")
    emit_signals(bus, 0, 1)
    wait_until(
        lambda: bus.get_metrics()["handlers"].get("research.slow_score", {}).get("delivered"),
        timeout=30,
        what="the slow handler to start",
    )
    worker.kill()
    worker.wait(timeout=30)
    assert bus.redis.hlen(UNACKED_KEY) == 1
    with guild_worker(redis_url, log, **env):
        wait_until(
            lambda: succeeded(bus, "research.slow_score") == 1,
            timeout=90,
            what="the restored task to run to completion",
        )
    assert bus.redis.hlen(UNACKED_KEY) == 0


def test_a_message_nobody_can_parse_is_set_aside_not_lost_and_the_next_one_flows(
    bus: Bus, redis_url: str
) -> None:
    bus.redis.lpush("research", b"{not json")
    bus.redis.lpush(wake_key("research"), b"1")
    emit_signals(bus, 0, 1)
    got: list[dict[str, object]] = []

    def on_message(body: dict[str, object], message: Message) -> None:
        got.append(body)
        message.ack()

    with Connection(
        redis_url,
        transport="raptorflow_bus.transport:Transport",
        transport_options=bus.app.conf.broker_transport_options,
    ) as conn:
        queue = bus.topology.kombu_event_queue("research")
        with conn.Consumer(queue, callbacks=[on_message], accept=["json"]):
            conn.drain_events(timeout=10)
    assert bus.redis.lrange(MALFORMED_KEY, 0, -1) == [b"{not json"]
    assert [body["type"] for body in got] == ["signal.detected"]
    assert bus.redis.hlen(UNACKED_KEY) == 0


def test_a_message_without_a_wake_token_is_served_first_if_it_ranks_first(
    bus: Bus, redis_url: str
) -> None:
    """A token can die with a connection; the next wake of any queue the consumer
    reads pops across all of them, priority first, as stock Kombu's BRPOP does."""
    options = bus.app.conf.broker_transport_options
    got: list[str] = []

    def on_message(body: dict[str, str], message: Message) -> None:
        got.append(body["name"])
        message.ack()

    with Connection(
        redis_url, transport="raptorflow_bus.transport:Transport", transport_options=options
    ) as conn:
        busy, quiet = Queue("t-busy"), Queue("t-quiet")
        with conn.Producer(serializer="json") as producer:
            for n in range(5):
                producer.publish(
                    {"name": f"low-{n}"}, routing_key="t-busy", priority=9, declare=[busy]
                )
        critical = kombu_message(json.dumps({"name": "critical"}), "t-quiet", 0)
        bus.redis.lpush("t-quiet", critical)
        assert not bus.redis.exists(wake_key("t-quiet"))
        with conn.Consumer([busy, quiet], callbacks=[on_message], accept=["json"]):
            for _ in range(6):
                conn.drain_events(timeout=10)
    assert got == ["critical", *(f"low-{n}" for n in range(5))]
    assert bus.redis.hlen(UNACKED_KEY) == 0


def test_a_backlog_is_consumed_at_one_round_trip_per_message(bus: Bus, redis_url: str) -> None:
    """While the last pop left messages queued, the next pop is sent in place of
    the BRPOP: one script call per message, one BRPOP for the whole backlog."""
    options = bus.app.conf.broker_transport_options
    got: list[int] = []

    def on_message(body: dict[str, int], message: Message) -> None:
        got.append(body["n"])
        message.ack()

    def calls(command: str) -> int:
        stats: dict[str, Any] = bus.redis.info("commandstats")
        return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))

    with Connection(
        redis_url, transport="raptorflow_bus.transport:Transport", transport_options=options
    ) as conn:
        queue = Queue("t-backlog")
        with conn.Producer(serializer="json") as producer:
            for n in range(20):
                producer.publish({"n": n}, routing_key="t-backlog", declare=[queue])
        bus.redis.script_load(scripts.source("pop"))
        brpop, evalsha = calls("brpop"), calls("evalsha")
        with conn.Consumer(queue, callbacks=[on_message], accept=["json"]):
            for _ in range(20):
                conn.drain_events(timeout=10)
    assert got == list(range(20))
    assert calls("evalsha") - evalsha == 20
    assert calls("brpop") - brpop == 1
    assert bus.redis.hlen(UNACKED_KEY) == 0
