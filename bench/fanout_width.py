"""Emit rate against the number of queues an event is bound to: 1, 2, 5, 10
and 50, on a topology made for it (one channel, ``signal.*``, heard by K
consumers, no queue limit), against Kombu's topic publish to the same K bound
queues and the floor of K LPUSHes pipelined in one round trip (redis-py).

Kombu's cost grows with K because it reads the binding table and pushes one
copy per round trip of its pipeline; the bus's grows because its script checks
every priority list of every queue before it pushes (all or nothing). Each
width empties the broker first."""

from __future__ import annotations

from bench import anchors
from bench.context import Context
from bench.sides import EVENT, SIGNAL, WORKSPACE, new_bus
from raptorflow_bus import Topology
from raptorflow_bus.topology import Channel, Consumer
from raptorflow_bus.transport import kombu_message

SECTION = "fanout"
UNLIMITED = 10**9


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
    n = ctx.sizes.fanout_events
    key = f"{SECTION}/"
    for width in ctx.sizes.fanout_widths:
        ctx.fresh()
        bus = new_bus(ctx, topology(width))
        try:
            body = anchors.body_of(bus)
            message = kombu_message(body, "fan0", 6)
            bus_rate = anchors.timed(
                n, lambda bus=bus: bus.emit(EVENT, SIGNAL, workspace_id=WORKSPACE)
            )
            ctx.fresh()
            bus.declare_topology()
            kombu_rate = anchors.kombu_topic_publish(ctx, bus, body, n)
            ctx.fresh()
            queues = tuple(f"fan{i}" for i in range(width))
            floor = anchors.redis_fanout(ctx, message, n, queues)
        finally:
            ctx.fresh()
            bus.close()
        res.add(SECTION, f"bus emit {to(width)}", bus_rate, "events/s")
        res.add(SECTION, f"kombu publish {to(width)}", kombu_rate, "events/s")
        res.add(SECTION, f"redis-py {width}x LPUSH {to(width)}", floor, "events/s")
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
