"""Drain: how fast a real worker process empties a full queue, the bus against
plain Celery with the same pool and concurrency.

The workers of one pool setting run side by side (``raptorbus worker
research`` and ``celery -A bench.plain_app worker -E``, and for solo also plain
Celery on the bus's transport, which separates the cost of the atomic pop from
the cost of the event hop), each warmed up by ``WARM_UP_EVENTS`` events. Then, for ``rounds``
rounds, each side in turn gets a burst of events queued as fast as its
producer goes (``emit_many``; pipelined task messages for Celery), and the
rate is taken between the handler-start stamps (``bench.marks``) of the runs
that started after the burst was fully queued: the producer is not competing
for the CPU then, the queue is never empty, and the polling for completion
is not in it. The figure is the median of the rounds (all are in the JSON);
taking turns spreads a neighbour's load over both sides."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from bench import marks
from bench.context import Context
from bench.plain_app import BUS_TRANSPORT
from bench.report import Target
from bench.sides import BusSide, CelerySide, Side, warm_up
from bench.workers import Process

SECTION = "drain"
UNIT = "runs/s"
# Enough for every pool child to have run a few tasks before anything is measured.
WARM_UP_EVENTS = 20


def celery_on_bus_transport(ctx: Context) -> Side:
    return CelerySide(ctx, BUS_TRANSPORT)


SideFactory = Callable[[Context], Side]
# (figure name, side, pool, concurrency), grouped by pool: one group runs at a time.
GROUPS: tuple[tuple[tuple[str, SideFactory, str, int], ...], ...] = (
    (
        ("celery -E solo", CelerySide, "solo", 1),
        ("bus solo", BusSide, "solo", 1),
        ("celery -E solo, bus transport", celery_on_bus_transport, "solo", 1),
    ),
    (
        ("celery -E prefork c=2", CelerySide, "prefork", 2),
        ("bus prefork c=2", BusSide, "prefork", 2),
    ),
)


def burst(ctx: Context, side: Side, n: int, procs: list[Process]) -> tuple[float, dict[str, Any]]:
    """Handler runs per second of a running worker given ``n`` events at once."""
    ctx.client.delete(marks.MARKS_KEY)
    side.preload(n)
    queued = time.monotonic_ns()
    ctx.wait_marks(n, timeout=120 + n / 20, procs=procs, interval=0.1)
    starts = sorted(m.started_ns for m in ctx.read_marks())
    ctx.client.delete(marks.MARKS_KEY)
    side.check(f"drain burst of {n} on {side.name}")
    after = [s for s in starts if s >= queued]
    seconds = (after[-1] - after[0]) / 1e9 if len(after) > 1 else 0.0
    rate = (len(after) - 1) / seconds if seconds > 0 else float("nan")
    info = {"runs": len(starts), "measured_runs": len(after) - 1, "seconds": round(seconds, 3)}
    return rate, info


def drain_group(
    ctx: Context, group: tuple[tuple[str, SideFactory, str, int], ...], n: int, rounds: int
) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {name: {"rounds": []} for name, *_ in group}
    with ExitStack() as stack:
        sides: dict[str, tuple[Side, Process]] = {}
        for name, make_side, pool, concurrency in group:
            side = make_side(ctx)
            stack.callback(side.close)
            proc = stack.enter_context(side.worker(pool, concurrency, tag="-drain"))
            sides[name] = (side, proc)
        procs = [proc for _, proc in sides.values()]
        for side, proc in sides.values():
            warm_up(ctx, side, proc, events=WARM_UP_EVENTS)
        for _ in range(rounds):
            for name, (side, _) in sides.items():
                rate, info = burst(ctx, side, n, procs)
                out[name]["rounds"].append({"rate": round(rate, 1), **info})
    for data in out.values():
        data["median"] = statistics.median(r["rate"] for r in data["rounds"])
    return out


def run(ctx: Context) -> None:
    res = ctx.results
    rounds = ctx.sizes.rounds
    n = max(10, ctx.sizes.events // rounds)
    for group in GROUPS:
        ctx.fresh()
        for name, data in drain_group(ctx, group, n, rounds).items():
            res.add(SECTION, name, data["median"], UNIT, note=f"median of {rounds} x {n} events")
            res.detail(SECTION, name, data["rounds"])
            if name == "celery -E solo":
                ctx.plain_capacity = data["median"]
    key = f"{SECTION}/"
    res.ratio(
        SECTION, "bus / celery, solo", key + "bus solo", key + "celery -E solo", Target(">=", 0.9)
    )
    res.ratio(
        SECTION,
        "bus / celery, prefork c=2",
        key + "bus prefork c=2",
        key + "celery -E prefork c=2",
        Target(">=", 0.9),
    )
    res.ratio(
        SECTION,
        "celery on bus transport / stock",
        key + "celery -E solo, bus transport",
        key + "celery -E solo",
    )


def capacity(ctx: Context, n: int) -> float:
    """Plain Celery's solo drain rate, one burst, for a run without ``drain``."""
    ctx.fresh()
    data = drain_group(ctx, GROUPS[0][:1], n, 1)
    return float(data["celery -E solo"]["median"])
