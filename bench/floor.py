"""Where a publish's time goes, part by part, and what that leaves as the best
any code could reach: the section behind the publish targets the bus misses.

Every part is timed in the same run, on the same broker, as medians of
``rounds`` rounds that take turns, in microseconds per event:

- a round trip of nothing (PING) on the emit's own kept connection (``Wire``)
  and on the async publish's (``AsyncWire``, awaited by a task);
- ``bus.prepare``: the validation, the envelope and its JSON, which every
  publish path does once per event whatever it does next;
- the fan-out script's Redis time per call and per event (``INFO
  commandstats``: EVALSHA's time includes the commands the script runs);
- the whole ``emit``, ``emit_many`` (batches of ``batch``) and ``publish``
  at concurrency 1 and 100, and one redis-py LPUSH round trip.

From them, bounds that assume everything else costs nothing:

- ``emit floor``: the PING round trip, plus ``prepare``, plus the script's
  Redis time; ``LPUSH / emit floor`` is the best ``emit / LPUSH`` ratio
  (the target is 0.65).
- ``emit_many ceiling``: one event's ``prepare`` plus its share of the
  script's Redis time, which the caller waits for (the target is 50,000/s).
- ``publish c=100 ceiling``: the same, for the script's per-event mode.
- ``asyncio - sync round trip``: what awaiting a reply costs more than a
  blocking read, which ``publish`` at concurrency 1 pays and ``emit`` does not.
"""

from __future__ import annotations

import asyncio
import importlib
import statistics
import time
from collections.abc import Callable
from typing import Any

import redis

from bench import anchors
from bench.context import Context
from bench.publish import in_tasks, lifted
from bench.sides import EVENT, SIGNAL, WORKSPACE, new_bus
from raptorflow_bus import Bus, Settings, Topology
from raptorflow_bus.kombu_messages import kombu_message
from raptorflow_bus.resp import command
from raptorflow_bus.wire import Wire

SECTION = "floor"
PING = command("PING")


def redis_usec(ctx: Context, name: str) -> float:
    """Redis's own time in ``name`` since the last reset, microseconds."""
    stats: dict[str, Any] = ctx.client.info("commandstats")
    return float(stats.get(f"cmdstat_{name}", {}).get("usec", 0))


def per_call(
    ctx: Context, n: int, call: Callable[[], object], name: str | None = None
) -> tuple[float, float]:
    """(wall, Redis time of ``name``) per call of ``call``, microseconds."""
    for _ in range(anchors.WARM_CALLS):
        call()
    ctx.client.config_resetstat()
    wall = 1e6 / anchors.timed(n, call, warm=0)
    return wall, (redis_usec(ctx, name) / n if name else 0.0)


def async_ping_us(bus: Bus, n: int) -> float:
    """One PING on the async publish's connection, awaited by a task."""

    async def run() -> float:
        wire = bus.async_wire()
        await wire.connect()
        loop = asyncio.get_running_loop()

        async def ping() -> None:
            done: asyncio.Future[Any] = loop.create_future()
            wire.send([PING], lambda replies, error: done.set_result(replies))
            await done

        try:
            for _ in range(anchors.WARM_CALLS):
                await ping()
            start = time.perf_counter()
            for _ in range(n):
                await ping()
            return (time.perf_counter() - start) / n * 1e6
        finally:
            wire.drop()

    return asyncio.run(run())


def run(ctx: Context) -> None:
    sizes, res = ctx.sizes, ctx.results
    n = max(100, sizes.events // 3)
    batch = sizes.batch
    ctx.fresh()
    routing = importlib.import_module(Settings.from_env().routing_module)
    bus = new_bus(ctx, lifted(Topology.from_module(routing)))
    lpush_client = redis.Redis.from_url(ctx.url)
    wire = Wire(bus.redis)
    samples: dict[str, list[float]] = {}

    def keep(name: str, value: float) -> None:
        samples.setdefault(name, []).append(value)

    try:
        message = kombu_message(anchors.body_of(bus), "research", 6)
        events = [(EVENT, SIGNAL)] * batch

        def emit() -> None:
            bus.emit(EVENT, SIGNAL, workspace_id=WORKSPACE)

        def prepare() -> None:
            bus.prepare(EVENT, SIGNAL, workspace_id=WORKSPACE)

        def emit_batch() -> None:
            bus.emit_many(events, workspace_id=WORKSPACE)

        def prepare_batch() -> None:
            for event_type, payload in events:
                bus.prepare(event_type, payload, workspace_id=WORKSPACE)

        batches = max(2, n // batch)
        for _ in range(sizes.rounds):
            ctx.fresh()
            bus.declare_topology()
            keep("sync round trip (PING)", per_call(ctx, n, lambda: wire.roundtrip([PING]))[0])
            keep("asyncio round trip (PING)", async_ping_us(bus, n))
            wall, in_redis = per_call(
                ctx, n, lambda: lpush_client.lpush(anchors.ANCHOR_QUEUES[0], message), "lpush"
            )
            keep("redis-py LPUSH round trip", wall)
            keep("LPUSH Redis time", in_redis)
            keep("prepare", per_call(ctx, n, prepare)[0])
            wall, in_redis = per_call(ctx, n, emit, "evalsha")
            keep("emit", wall)
            keep("emit script Redis time", in_redis)
            ctx.fresh()
            bus.declare_topology()
            wall, in_redis = per_call(ctx, batches, emit_batch, "evalsha")
            keep("emit_many per event", wall / batch)
            keep("emit_many script Redis time per event", in_redis / batch)
            keep("prepare in a batch, per event", per_call(ctx, batches, prepare_batch)[0] / batch)
            ctx.fresh()
            bus.declare_topology()
            keep("publish c=1", in_tasks(1, bus, n) / n * 1e6)
            ctx.client.config_resetstat()
            per_task = max(1, n // 100)
            keep("publish c=100 per event", in_tasks(100, bus, per_task) / (100 * per_task) * 1e6)
            # The warm-up publish of ``in_tasks`` is one call more, of one event.
            keep(
                "publish c=100 script Redis time per event",
                redis_usec(ctx, "evalsha") / (100 * per_task + 1),
            )
        med = {name: statistics.median(values) for name, values in samples.items()}
        for name, value in med.items():
            res.add(SECTION, name, value, "us")
        res.detail(SECTION, "rounds", samples)

        floor = med["sync round trip (PING)"] + med["prepare"] + med["emit script Redis time"]
        res.add(SECTION, "emit floor", floor, "us", note="PING round trip + prepare + script")
        res.add(
            SECTION,
            "emit, beyond its floor",
            med["emit"] - floor,
            "us",
            note="building the call, reading the reply, the outbox policy",
        )
        res.ratio(
            SECTION,
            "LPUSH / emit floor",
            f"{SECTION}/redis-py LPUSH round trip",
            f"{SECTION}/emit floor",
        )
        per_event = med["prepare in a batch, per event"]
        many = per_event + med["emit_many script Redis time per event"]
        res.add(SECTION, "emit_many ceiling", 1e6 / many, "events/s", note="prepare + script only")
        res.add(
            SECTION,
            "emit_many, beyond its ceiling",
            med["emit_many per event"] - many,
            "us",
            note="per event: building the call, sending and reading it",
        )
        c100 = med["prepare"] + med["publish c=100 script Redis time per event"]
        res.add(
            SECTION, "publish c=100 ceiling", 1e6 / c100, "events/s", note="prepare + script only"
        )
        res.add(
            SECTION,
            "asyncio - sync round trip",
            med["asyncio round trip (PING)"] - med["sync round trip (PING)"],
            "us",
            note="what publish c=1 pays and emit does not",
        )
        res.add(SECTION, "publish c=1 - emit", med["publish c=1"] - med["emit"], "us")
    finally:
        wire.close()
        lpush_client.close()
        bus.close()
