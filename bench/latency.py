"""Latency from send to handler start, the bus against plain Celery, each with
one real solo-pool worker process (the pool plain Celery's capacity was
measured with). Both workers run throughout and the sides take turns, run by
run.

- One at a time: send, wait for the handler's mark (BLPOP, no polling), send
  the next. The sent stamp is taken just before ``emit``/``apply_async``.
- Fixed rates of 25 %, 50 % and 75 % of plain Celery's measured capacity
  (``drain``'s solo figure, or a short drain measured here when drain is not
  run), for ``rate_seconds`` each. Sends follow a monotonic-clock schedule and
  each carries its *scheduled* time, so a sender that falls behind (or a side
  whose send blocks) shows up as latency instead of hiding it (no coordinated
  omission). A side that cannot keep up at a rate builds a backlog, and its
  p99 and max show how much within the run.

Each run is repeated ``rounds`` times, the sides still taking turns; a run's
p50, p99 and max are over the latencies of all its rounds pooled (a pause of
the shared VM then weighs what it weighs over the longer run, for both sides
alike), and each round's own figures are in the JSON details. p50, p99 and
max per run, and the bus's over plain Celery's."""

from __future__ import annotations

import math
import statistics
import time
from contextlib import ExitStack
from typing import Any

from bench import marks
from bench.context import Context
from bench.drain import capacity
from bench.report import Target
from bench.sides import BusSide, CelerySide, Side, warm_up
from bench.workers import Process, process_cpu, redis_cpu

SECTION = "latency"
FRACTIONS = (0.25, 0.50, 0.75)
CAPACITY_EVENTS = 1000


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest rank: the smallest value with at least ``q`` of them at or below it."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


def summary(latencies_ms: list[float]) -> dict[str, float]:
    ordered = sorted(latencies_ms)
    return {
        "p50": percentile(ordered, 0.50),
        "p99": percentile(ordered, 0.99),
        "max": ordered[-1] if ordered else math.nan,
        "n": float(len(ordered)),
    }


def one_at_a_time(ctx: Context, side: Side, samples: int, procs: list[Process]) -> list[float]:
    latencies = []
    for _ in range(samples):
        side.send(time.monotonic_ns())
        latencies.append(ctx.take_mark(60, procs).latency_ms)
    return latencies


def at_rate(
    ctx: Context, side: Side, rate: float, seconds: float, procs: list[Process], worker: Process
) -> tuple[list[float], dict[str, float]]:
    """Send at ``rate`` events/s for ``seconds``; latencies from the scheduled times,
    and the CPU the side's worker and Redis spent per event meanwhile."""
    ctx.client.delete(marks.MARKS_KEY)
    cpu_worker, cpu_redis = process_cpu(worker.pid), redis_cpu(ctx.client)
    n = max(10, round(rate * seconds))
    interval_ns = round(1e9 / rate)
    start = time.monotonic_ns() + 10_000_000
    worst_lag_ns = 0
    for i in range(n):
        due = start + i * interval_ns
        wait = due - time.monotonic_ns()
        if wait > 0:
            time.sleep(wait / 1e9)
        worst_lag_ns = max(worst_lag_ns, time.monotonic_ns() - due)
        side.send(due)
    sent_seconds = (time.monotonic_ns() - start) / 1e9
    ctx.wait_marks(n, timeout=120 + n / 20, procs=procs, interval=0.1)
    cpu_worker = process_cpu(worker.pid) - cpu_worker
    cpu_redis = redis_cpu(ctx.client) - cpu_redis
    latencies = [m.latency_ms for m in ctx.read_marks()]
    ctx.client.delete(marks.MARKS_KEY)
    info = {
        "events": float(n),
        "target_rate": round(rate, 1),
        "achieved_send_rate": round(n / sent_seconds, 1) if sent_seconds > 0 else math.nan,
        "worst_sender_lag_ms": round(worst_lag_ns / 1e6, 3),
        "worker_cpu_ms_per_event": round(cpu_worker / n * 1e3, 3),
        "redis_cpu_ms_per_event": round(cpu_redis / n * 1e3, 3),
    }
    return latencies, info


def label(fraction: float) -> str:
    return f"@{round(fraction * 100)}%"


def run(ctx: Context) -> None:
    res = ctx.results
    if ctx.plain_capacity is None:
        ctx.plain_capacity = capacity(ctx, min(ctx.sizes.events, CAPACITY_EVENTS))
        res.add(SECTION, "celery -E solo capacity (measured here)", ctx.plain_capacity, "runs/s")
    rate = ctx.plain_capacity
    for fraction in FRACTIONS:
        res.add(SECTION, f"rate {label(fraction)}", fraction * rate, "events/s")
    runs = ["one at a time", *(label(f) for f in FRACTIONS)]
    data: dict[str, dict[str, Any]] = {"celery": {}, "bus": {}}
    ctx.fresh()
    with ExitStack() as stack:
        sides: dict[str, tuple[Side, Process]] = {}
        for name, make_side in (("celery", CelerySide), ("bus", BusSide)):
            side: Side = make_side(ctx)
            stack.callback(side.close)
            sides[name] = (side, stack.enter_context(side.worker("solo", 1, tag="-latency")))
        procs = [proc for _, proc in sides.values()]
        for side, proc in sides.values():
            warm_up(ctx, side, proc)
        # Rounds, and in each the sides take turns run by run, so a neighbour's
        # burst of load hits both sides alike; a run's figures pool its rounds.
        samples: dict[str, dict[str, list[float]]] = {n: {r: [] for r in runs} for n in sides}
        for round_no in range(ctx.sizes.rounds):
            for name, (side, _) in sides.items():
                latencies = one_at_a_time(ctx, side, ctx.sizes.latency_samples, procs)
                samples[name]["one at a time"] += latencies
                data[name].setdefault("rounds", []).append({"one at a time": summary(latencies)})
                side.check(f"latency one at a time on {name}")
            for fraction in FRACTIONS:
                for name, (side, proc) in sides.items():
                    rate_run = label(fraction)
                    latencies, info = at_rate(
                        ctx, side, fraction * rate, ctx.sizes.rate_seconds, procs, proc
                    )
                    samples[name][rate_run] += latencies
                    data[name]["rounds"][round_no][rate_run] = {**summary(latencies), **info}
                    side.check(f"latency {rate_run} on {name}")
        for name, by_run in samples.items():
            for run_name, pooled in by_run.items():
                worst_lag = max(
                    (r[run_name].get("worst_sender_lag_ms", 0.0) for r in data[name]["rounds"]),
                    default=0.0,
                )
                stats = summary(pooled)
                if run_name != "one at a time":
                    stats["worst_sender_lag_ms"] = worst_lag
                    for cpu in ("worker_cpu_ms_per_event", "redis_cpu_ms_per_event"):
                        stats[cpu] = statistics.median(
                            r[run_name][cpu] for r in data[name]["rounds"]
                        )
                data[name][run_name] = stats
    for name, side_data in data.items():
        res.detail(SECTION, f"{name} rounds", side_data["rounds"])
    key = f"{SECTION}/"
    for run_name in runs:
        for name, side_data in data.items():
            stats = side_data[run_name]
            lag = stats.get("worst_sender_lag_ms")
            # How far the sender fell behind its schedule (that delay is in the latencies).
            note = "" if lag is None else f"sender lag <= {lag:.1f} ms"
            for stat in ("p50", "p99", "max"):
                res.add(
                    SECTION,
                    f"{name} {stat} {run_name}",
                    stats[stat],
                    "ms",
                    note=note if stat == "max" else "",
                )
            if "worker_cpu_ms_per_event" in stats:
                res.add(
                    SECTION,
                    f"{name} worker cpu/event {run_name}",
                    stats["worker_cpu_ms_per_event"],
                    "ms",
                    note=f"redis {stats['redis_cpu_ms_per_event']:.2f} ms/event; rounds' median",
                )
            res.detail(SECTION, f"{name} {run_name}", side_data[run_name])
        if run_name != "one at a time":
            res.ratio(
                SECTION,
                f"bus / celery worker cpu/event {run_name}",
                f"{key}bus worker cpu/event {run_name}",
                f"{key}celery worker cpu/event {run_name}",
            )
        for stat in ("p50", "p99", "max"):
            target = None
            if run_name == "one at a time" and stat == "p50":
                target = Target("<=", 1.2)
            elif run_name == label(0.5) and stat == "p99":
                target = Target("<=", 1.5)
            res.ratio(
                SECTION,
                f"bus / celery {stat} {run_name}",
                f"{key}bus {stat} {run_name}",
                f"{key}celery {stat} {run_name}",
                target,
            )
