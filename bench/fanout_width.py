"""Emit rate against the number of queues an event is bound to: 1, 2, 5, 10
and 50, on a topology made for it (one channel, ``signal.*``, heard by K
consumers, no queue limit), against Kombu's topic publish to the same K bound
queues and the floor of K LPUSHes pipelined in one round trip (redis-py).

Kombu's cost grows with K because it reads the binding table and pushes one
copy per round trip of its pipeline; the bus's grows because its script checks
every priority list of every queue before it pushes (all or nothing). The
three take turns for ``rounds`` rounds (median kept), each on an emptied
broker, each for at most ``BUDGET`` seconds."""

from __future__ import annotations

import statistics
from collections.abc import Callable

from bench import anchors
from bench.context import Context
from bench.sides import EVENT, SIGNAL, WORKSPACE, new_bus, spooled, wait_unspooled
from raptorflow_bus import Bus, Topology
from raptorflow_bus.kombu_messages import kombu_message
from raptorflow_bus.topology import Channel, Consumer

SECTION = "fanout"
UNLIMITED = 10**9
# Seconds one measurement may take: Kombu publishes a few dozen events/s to 50 queues.
BUDGET = 2.0


def to(width: int) -> str:
    return f"to {width} queue" + ("" if width == 1 else "s")


def topology(width: int) -> Topology:
    channel = Channel(
        name="fan",
        purpose="benchmark fan-out",
        patterns=("raptorflow.events.signal.*",),
        retention_hours=1,
        max_queue_length=UNLIMITED,
    )
    consumers = [Consumer(f"fan{i}", ("fan",)) for i in range(width)]
    return Topology.build([channel], consumers)


def run(ctx: Context) -> None:
    res = ctx.results
    rounds = ctx.sizes.rounds
    n = max(10, ctx.sizes.fanout_events // rounds)
    samples: dict[str, list[float]] = {}
    for width in ctx.sizes.fanout_widths:
        ctx.fresh()
        bus = new_bus(ctx, topology(width))
        queues = tuple(bus.topology.event_queue(c) for c in bus.topology.consumers)
        body = anchors.body_of(bus)
        message = kombu_message(body, queues[0], 6)

        def emit(bus: Bus = bus) -> None:
            bus.emit(EVENT, SIGNAL, workspace_id=WORKSPACE)

        floor = f"redis-py {width}x LPUSH {to(width)}"
        measures: dict[str, Callable[[], float]] = {
            f"bus emit {to(width)}": lambda emit=emit: anchors.timed(n, emit, budget=BUDGET),
            f"kombu publish {to(width)}": lambda bus=bus, body=body: anchors.kombu_topic_publish(
                ctx, bus, body, n, budget=BUDGET
            ),
            floor: lambda q=queues, m=message: anchors.redis_fanout(ctx, m, n, q, budget=BUDGET),
        }
        try:
            for _ in range(rounds):
                for name, measure in measures.items():
                    ctx.fresh()
                    bus.declare_topology()
                    before = spooled(bus)
                    samples.setdefault(name, []).append(measure())
                    if spooled(bus) != before:
                        ctx.results.warnings.append(f"fanout {name}: events spooled to the outbox")
                        wait_unspooled(bus)
        finally:
            ctx.fresh()
            bus.close()
        for name in measures:
            res.add(SECTION, name, statistics.median(samples[name]), "events/s")
    res.detail(SECTION, "rounds (the figure is their median)", samples)
    key = f"{SECTION}/"
    for width in ctx.sizes.fanout_widths:
        res.ratio(
            SECTION,
            f"bus / kombu {to(width)}",
            f"{key}bus emit {to(width)}",
            f"{key}kombu publish {to(width)}",
        )
    for width in ctx.sizes.fanout_widths:
        res.ratio(
            SECTION,
            f"bus / redis-py {to(width)}",
            f"{key}bus emit {to(width)}",
            f"{key}redis-py {width}x LPUSH {to(width)}",
        )
