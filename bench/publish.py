"""Publishing: ``emit``, ``emit_many`` and async ``publish`` at concurrency 1,
10 and 100, against the anchors of ``bench.anchors``, all to the two queues
that hear ``signal.detected`` (research and council).

Concurrency is threads for ``emit`` and ``emit_many`` (each sends its share,
all released together by a barrier) and asyncio tasks of one event loop for
``publish``. The broker is emptied between variants so that no variant pushes
onto longer lists than another. The topology is routing.py's with the queue
limits lifted (the biggest variant queues 100,000 events in each queue, over
the research limit): the Lua script checks the same lists' lengths either way."""

from __future__ import annotations

import asyncio
import importlib
import threading
import time
from collections.abc import Callable
from dataclasses import replace

from bench import anchors
from bench.context import Context
from bench.report import Target
from bench.sides import EVENT, SIGNAL, WORKSPACE, new_bus
from raptorflow_bus import Bus, Settings, Topology
from raptorflow_bus.queues import queue_states
from raptorflow_bus.transport import kombu_message

SECTION = "publish"
UNLIMITED = 10**9


def lifted(topology: Topology) -> Topology:
    """The same channels, consumers and bindings, without queue limits."""
    channels = [replace(c, max_queue_length=UNLIMITED) for c in topology.channels.values()]
    return Topology.build(
        channels,
        topology.consumers.values(),
        exchange=topology.exchange,
        dlq_capacity=topology.dlq_capacity,
    )


def in_threads(c: int, work: Callable[[], None]) -> float:
    """Seconds for ``c`` threads to each run ``work`` once, started together."""
    barrier = threading.Barrier(c + 1)
    errors: list[BaseException] = []

    def run() -> None:
        barrier.wait()
        try:
            work()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, daemon=True) for _ in range(c)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    if errors:
        raise errors[0]
    return seconds


def in_tasks(c: int, bus: Bus, per_task: int) -> float:
    """Seconds for ``c`` asyncio tasks to each ``await bus.publish`` ``per_task`` times."""

    async def task() -> None:
        for _ in range(per_task):
            await bus.publish(EVENT, SIGNAL, workspace_id=WORKSPACE)

    async def run() -> float:
        start = time.perf_counter()
        await asyncio.gather(*(task() for _ in range(c)))
        return time.perf_counter() - start

    return asyncio.run(run())


def run(ctx: Context) -> None:
    res, sizes = ctx.results, ctx.sizes
    n, batch = sizes.events, sizes.batch
    ctx.fresh()
    routing = importlib.import_module(Settings.from_env().routing_module)
    bus = new_bus(ctx, lifted(Topology.from_module(routing)))
    try:

        def reset() -> None:
            ctx.fresh()
            bus.declare_topology()

        body = anchors.body_of(bus)
        message = kombu_message(body, "research", 6)
        reset()
        res.add(
            SECTION,
            "redis-py LPUSH, 1 round trip",
            anchors.redis_single(ctx, message, n),
            "events/s",
        )
        reset()
        res.add(
            SECTION,
            "redis-py 2x LPUSH, 1 round trip",
            anchors.redis_fanout(ctx, message, n, anchors.ANCHOR_QUEUES),
            "events/s",
        )
        many = max(n, 10 * batch)
        reset()
        res.add(
            SECTION,
            "redis-py pipelined batch",
            anchors.redis_batches(ctx, message, many, batch),
            "events/s",
            note=f"{batch} events x 2 LPUSH per round trip",
        )
        reset()
        res.add(
            SECTION,
            "kombu topic publish",
            anchors.kombu_topic_publish(ctx, bus, body, n),
            "events/s",
            note="stock Kombu, same exchange, same 2 bound queues",
        )
        reset()
        res.add(
            SECTION,
            "celery apply_async",
            anchors.celery_apply_async(ctx, n),
            "tasks/s",
            note="stock Kombu",
        )
        res.add(
            SECTION,
            "bus.prepare (validation only)",
            anchors.timed(n, lambda: bus.prepare(EVENT, SIGNAL, workspace_id=WORKSPACE)),
            "events/s",
        )

        counts: dict[str, int] = {}
        for c in sizes.concurrency:
            per = max(1, n // c)
            reset()

            def emit(per: int = per) -> None:
                for _ in range(per):
                    bus.emit(EVENT, SIGNAL, workspace_id=WORKSPACE)

            seconds = in_threads(c, emit)
            res.add(SECTION, f"emit c={c}", anchors.rate(per * c, seconds), "events/s")
            counts[f"emit c={c}"] = per * c
        events = [(EVENT, SIGNAL)] * batch
        for c in sizes.concurrency:
            rounds = max(1, many // (c * batch))
            reset()

            def send_batches(rounds: int = rounds) -> None:
                for _ in range(rounds):
                    bus.emit_many(events, workspace_id=WORKSPACE)

            seconds = in_threads(c, send_batches)
            target = Target(">=", 50_000) if c == 1 else None
            res.add(
                SECTION,
                f"emit_many c={c}",
                anchors.rate(rounds * c * batch, seconds),
                "events/s",
                target=target,
                note=f"batches of {batch}",
            )
            counts[f"emit_many c={c}"] = rounds * c * batch
        for c in sizes.concurrency:
            per = max(1, n // c)
            reset()
            target = Target(">=", 20_000) if c == 100 else None
            res.add(
                SECTION,
                f"publish c={c}",
                anchors.rate(per * c, in_tasks(c, bus, per)),
                "events/s",
                target=target,
                note="async, asyncio tasks",
            )
            counts[f"publish c={c}"] = per * c
        check_queued(bus)
    finally:
        ctx.fresh()
        bus.close()
    res.detail(SECTION, "events per variant", counts)
    res.detail(SECTION, "batch", batch)
    key = f"{SECTION}/"
    res.ratio(
        SECTION,
        "emit / redis-py LPUSH",
        key + "emit c=1",
        key + "redis-py LPUSH, 1 round trip",
        Target(">=", 0.65),
    )
    res.ratio(
        SECTION,
        "emit / redis-py 2x LPUSH",
        key + "emit c=1",
        key + "redis-py 2x LPUSH, 1 round trip",
    )
    res.ratio(SECTION, "emit / kombu topic publish", key + "emit c=1", key + "kombu topic publish")
    res.ratio(SECTION, "emit / celery apply_async", key + "emit c=1", key + "celery apply_async")
    res.ratio(
        SECTION, "publish c=1 / emit c=1", key + "publish c=1", key + "emit c=1", Target(">=", 1.0)
    )
    res.ratio(
        SECTION,
        "emit_many c=1 / redis-py batch",
        key + "emit_many c=1",
        key + "redis-py pipelined batch",
    )


def check_queued(bus: Bus) -> None:
    """The last variant's events are all in their queues: what was timed was
    published, not refused or lost on the way."""
    routing_key = bus.prepare(EVENT, SIGNAL, workspace_id=WORKSPACE)[0].routing_key
    queues = bus.topology.consumers_for(routing_key)
    depths = [q.depth for q in queue_states(bus, [bus.topology.event_queue(c) for c in queues])]
    if not depths or min(depths) == 0:
        raise RuntimeError(f"published events are missing from their queues: {depths}")
