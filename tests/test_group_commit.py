"""``await bus.publish`` (issue 11): native asyncio with group commit. Publishes
made in the same loop tick go to Redis in one script call, each checked and
accepted or refused on its own; each caller gets its own envelope or its own
error; the outbox rules are the emit's. Real Redis, real redis-server killed."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
from kombu import Connection, Exchange, Queue

import routing
from raptorflow_bus import Backpressure, BrokerUnavailable, Bus, Channel, Settings, Topology
from raptorflow_bus.embedded import free_port
from raptorflow_bus.publisher import RedisPublisher
from raptorflow_bus.queues import queue_state
from tests.harness import RedisBackend, wait_until
from tests.netproxy import SilentProxy
from tests.payloads import VALID
from tests.test_outbox import closed_url, redis_server_on

pytestmark = [pytest.mark.broker, pytest.mark.timeout(120)]

SIGNAL, AGENT = "signal.detected", "agent.task_started"


def signal(tag: str) -> dict[str, Any]:
    return {**VALID[SIGNAL], "signal_id": tag}


def depth(bus: Bus, queue: str) -> int:
    return queue_state(bus, queue).depth


def evalsha_calls(client: redis.Redis[bytes]) -> int:
    stats: dict[str, dict[str, int]] = client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def tags_in(client: redis.Redis[bytes], queue: str) -> Counter[str]:
    """The signal ids of the events in ``queue`` (every priority list)."""
    found: Counter[str] = Counter()
    for key in client.keys(f"{queue}*"):
        if key.decode().startswith(queue) and client.type(key) == b"list":
            for raw in client.lrange(key, 0, -1):
                body = json.loads(json.loads(raw)["body"])
                found[body["payload"].get("signal_id", body["type"])] += 1
    return found


async def gather(bus: Bus, events: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    """Publish ``events`` from as many tasks, all started in the same tick."""
    return await asyncio.gather(
        *(bus.asend(t, p, workspace_id="ws-1") for t, p in events), return_exceptions=True
    )


@pytest.fixture
def steady(monkeypatch: pytest.MonkeyPatch) -> None:
    """A binding table trusted for the whole test: a call count is then exact."""
    monkeypatch.setattr(RedisPublisher, "max_age_seconds", 3600.0)


def test_concurrent_publishes_go_in_one_script_call_and_each_gets_its_own_envelope(
    redis_backend: RedisBackend, steady: None
) -> None:
    with redis_backend.bus() as bus:

        async def scenario() -> list[Any]:
            await bus.publish(SIGNAL, signal("warm-up"), workspace_id="ws-1")
            bus.redis.config_resetstat()
            return await gather(bus, [(SIGNAL, signal(f"s-{n}")) for n in range(50)])

        sent = asyncio.run(scenario())
        assert evalsha_calls(bus.redis) == 1
        assert all(not s.spooled for s in sent)
        envelopes = [s.envelope for s in sent]
        assert [e.payload["signal_id"] for e in envelopes] == [f"s-{n}" for n in range(50)]
        assert len({e.id for e in envelopes}) == 50
        expected = Counter({f"s-{n}": 1 for n in range(50)} | {"warm-up": 1})
        assert tags_in(bus.redis, "research") == tags_in(bus.redis, "council") == expected
        assert bus.get_metrics()["events"][SIGNAL]["published"] == 51


def small_research() -> Topology:
    """research (and the broadcast channel it hears) holds 5; council 50."""
    base = Topology.from_module(routing)
    channels = [
        Channel(
            **{
                **ch.__dict__,
                "max_queue_length": 5 if ch.name in ("guild_research", "guild_broadcast") else 50,
            }
        )
        for ch in base.channels.values()
    ]
    return Topology.build(channels, base.consumers.values())


def test_an_event_that_meets_a_full_queue_is_refused_alone_and_counts_its_group(
    redis_backend: RedisBackend, steady: None
) -> None:
    with redis_backend.bus(topology=small_research()) as bus:
        bus.emit_many([(SIGNAL, signal(f"old-{n}")) for n in range(4)], workspace_id="ws-1")

        async def scenario() -> list[Any]:
            await bus.publish(AGENT, VALID[AGENT], workspace_id="ws-1")
            bus.redis.config_resetstat()
            # research has room for one more: the first signal takes it, the
            # second is refused (the first counts against the limit though it
            # is in the same call), the agent event does not go to research.
            return await gather(
                bus, [(SIGNAL, signal("a")), (SIGNAL, signal("b")), (AGENT, VALID[AGENT])]
            )

        a, b, c = asyncio.run(scenario())
        assert evalsha_calls(bus.redis) == 1
        assert a.envelope.payload["signal_id"] == "a" and c.envelope.type == AGENT
        assert isinstance(b, Backpressure)
        assert (b.queue, b.depth, b.limit) == ("research", 5, 5)
        assert depth(bus, "research") == 5
        council = tags_in(bus.redis, "council")
        assert council["a"] == 1 and "b" not in council and council[AGENT] == 2
        assert bus.get_metrics()["events"][SIGNAL]["published"] == 5


def test_a_changed_binding_table_reroutes_the_whole_group(
    redis_backend: RedisBackend, redis_url: str, steady: None
) -> None:
    with redis_backend.bus() as bus:
        asyncio.run(bus.publish(SIGNAL, signal("before"), workspace_id="ws-1"))
        audit = Queue(
            "external.audit",
            Exchange("raptorflow.events", type="topic"),
            routing_key="raptorflow.events.signal.*",
        )
        with Connection(redis_url) as conn:
            audit(conn.default_channel).declare()
        bus.redis.config_resetstat()
        sent = asyncio.run(gather(bus, [(SIGNAL, signal(f"s-{n}")) for n in range(10)]))
        assert all(not s.spooled for s in sent)
        # The call met the new token, read the table, and ran once more.
        assert evalsha_calls(bus.redis) == 2
        assert tags_in(bus.redis, "external.audit") == Counter(f"s-{n}" for n in range(10))
        assert depth(bus, "research") == 11


def test_a_group_while_the_broker_is_down_spools_each_event(tmp_path: Path) -> None:
    bus = Bus(Settings(broker_url=closed_url(), home=tmp_path)).connect()
    try:
        sent = asyncio.run(gather(bus, [(SIGNAL, signal(f"s-{n}")) for n in range(10)]))
        assert all(s.spooled for s in sent)
        assert len({s.envelope.id for s in sent}) == 10
        assert bus.outbox is not None and bus.outbox.depth() == 10
    finally:
        bus.close()


@pytest.mark.parametrize("port", ["closed", "killed"])
def test_in_strict_mode_each_caller_of_a_group_gets_its_own_error(
    tmp_path: Path, port: str
) -> None:
    if port == "closed":
        url = closed_url()
        bus = Bus(Settings(broker_url=url, home=tmp_path), outbox=False)
        sent = asyncio.run(gather(bus, [(SIGNAL, signal(f"s-{n}")) for n in range(10)]))
        bus.close()
    else:
        server_port = free_port()
        with redis_server_on(server_port, tmp_path) as url:
            bus = Bus(Settings(broker_url=url, home=tmp_path), outbox=False).connect()
            asyncio.run(bus.publish(SIGNAL, signal("ok"), workspace_id="ws-1"))
        # The server is gone; the loop's connection finds out on its next call.
        started = time.monotonic()
        sent = asyncio.run(gather(bus, [(SIGNAL, signal(f"s-{n}")) for n in range(10)]))
        assert time.monotonic() - started < 10
        bus.close()
    assert all(isinstance(s, BrokerUnavailable) for s in sent), sent
    assert len({id(s) for s in sent}) == 10
    assert bus.outbox is not None and bus.outbox.depth() == 0


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    yield free_port(), tmp_path


def test_a_group_spools_when_the_broker_dies_and_every_event_lands_once_after(
    server: tuple[int, Path],
) -> None:
    port, home = server
    url = f"redis://127.0.0.1:{port}/0"
    with redis_server_on(port, home):
        bus = Bus(Settings(broker_url=url, home=home)).connect()
        sent = asyncio.run(gather(bus, [(SIGNAL, signal(f"up-{n}")) for n in range(5)]))
        assert not any(s.spooled for s in sent)
    try:
        down = asyncio.run(gather(bus, [(SIGNAL, signal(f"down-{n}")) for n in range(20)]))
        assert all(s.spooled for s in down), down
        with redis_server_on(port, home):
            wait_until(lambda: not bus.spooling, what="the relay to drain")
            # The first server's data went with it (no AOF here): the 20 spooled remain.
            client = redis.Redis.from_url(url)
            assert tags_in(client, "council") == Counter(f"down-{n}" for n in range(20))
            again = asyncio.run(gather(bus, [(SIGNAL, signal("after"))]))
            assert not again[0].spooled
    finally:
        bus.close()


@pytest.mark.parametrize("strict", [False, True])
def test_a_group_on_a_connection_gone_silent_is_bounded_like_an_emit(
    redis_url: str, tmp_path: Path, strict: bool
) -> None:
    """The loop's connection stops hearing back (no FIN, no RST): the group's
    call gives up at the read timeout, as an emit does, then spools; strict
    mode raises in each caller."""
    target = urlsplit(redis_url)
    with SilentProxy(int(target.port or 6379)) as proxy:
        url = redis_url.replace(f":{target.port}/", f":{proxy.port}/")
        bus = Bus(Settings(broker_url=url, home=tmp_path), outbox=not strict).connect()
        try:

            async def scenario() -> tuple[list[Any], float]:
                await bus.publish(SIGNAL, signal("warm-up"), workspace_id="ws-1")
                assert proxy.freeze() >= 1
                started = time.monotonic()
                sent = await gather(bus, [(SIGNAL, signal(f"s-{n}")) for n in range(5)])
                return sent, time.monotonic() - started

            sent, elapsed = asyncio.run(scenario())
            assert elapsed < 10, elapsed  # a bound, not a measurement (2 s on a quiet VM)
            if strict:
                assert all(isinstance(s, BrokerUnavailable) for s in sent), sent
            else:
                assert all(s.spooled for s in sent), sent
        finally:
            bus.close()


def test_the_loops_connection_closes_when_idle_and_the_next_publish_reconnects(
    redis_backend: RedisBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    from raptorflow_bus import group_commit

    monkeypatch.setattr(group_commit, "IDLE_SECONDS", 0.05)
    with redis_backend.bus() as bus:

        def clients() -> int:
            return int(bus.redis.info("clients")["connected_clients"])

        async def scenario() -> tuple[int, int, int]:
            await bus.publish(SIGNAL, signal("first"), workspace_id="ws-1")
            busy = clients()
            deadline = time.monotonic() + 20
            while clients() >= busy and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            idle = clients()
            await bus.publish(SIGNAL, signal("second"), workspace_id="ws-1")
            return busy, idle, clients()

        busy, idle, again = asyncio.run(scenario())
        assert (idle, again) == (busy - 1, busy)
        assert tags_in(bus.redis, "research") == Counter(["first", "second"])
