"""Redis work: commands per event and an idle worker's polling, counted by Redis
itself (``INFO commandstats``), the bus against plain Celery.

Redis counts every command a Lua script runs under its own name as well as the
EVALSHA that ran the script, so ``total`` includes both and the breakdown in
the JSON shows which is which. Per side, on one solo-pool worker process:

1. idle: after the worker has handled one event and settled, the commands of
   ``idle_seconds`` of nothing, per second (heartbeats, BRPOP timeouts, task
   events, the bus's wake lists and health beacon);
2. handled: N events sent one at a time as fast as the sender goes, handled
   once each; everything Redis did until the last handler started, per event.
   The worker's idle background during that window is included (it is small
   against N, and the window is in the JSON);
3. sent: with the worker stopped, N more events sent; per event, what the
   publishing side alone costs (``emit`` against ``apply_async``).

The bench's own commands are taken out: INFO itself, the LLENs it polls the
marks with (counted as it sends them), and the one RPUSH per handler run both
no-op handlers make (``bench.marks``). On a broker that others use (REDIS_URL)
their commands would be counted too."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from bench import marks
from bench.context import Context
from bench.sides import BusSide, CelerySide, Side, warm_up

SECTION = "redis"
OWN = frozenset({"info"})


def commandstats(ctx: Context) -> Counter[str]:
    stats: dict[str, Any] = ctx.client.info("commandstats")
    return Counter(
        {
            name.removeprefix("cmdstat_"): int(value["calls"])
            for name, value in stats.items()
            if name.removeprefix("cmdstat_") not in OWN
        }
    )


def per(delta: Counter[str], divisor: float) -> dict[str, float]:
    return {
        cmd: round(calls / divisor, 3)
        for cmd, calls in sorted(delta.items(), key=lambda kv: -kv[1])
        if calls
    }


def measure_side(ctx: Context, side: Side) -> dict[str, Any]:
    sizes = ctx.sizes
    n = sizes.work_events
    out: dict[str, Any] = {}
    with side.worker("solo", 1, tag="-redis") as proc:
        warm_up(ctx, side, proc)
        time.sleep(sizes.settle_seconds)
        ctx.client.delete(marks.MARKS_KEY)
        before = commandstats(ctx)
        time.sleep(sizes.idle_seconds)
        idle = commandstats(ctx) - before
        out["idle"] = {
            "seconds": sizes.idle_seconds,
            "per_second": sum(idle.values()) / sizes.idle_seconds,
            "commands": per(idle, sizes.idle_seconds),
        }

        polls = 0

        def count_poll() -> None:
            nonlocal polls
            polls += 1

        before = commandstats(ctx)
        start = time.monotonic()
        for _ in range(n):
            side.send(0)
        ctx.wait_marks(n, timeout=120 + n / 20, procs=[proc], interval=0.05, on_poll=count_poll)
        window = time.monotonic() - start
        handled = commandstats(ctx) - before
        handled.subtract({"llen": polls, "rpush": n})
        handled = +handled
        out["handled"] = {
            "events": n,
            "window_seconds": round(window, 3),
            "per_event": sum(handled.values()) / n,
            "commands": per(handled, n),
        }
    before = commandstats(ctx)
    for _ in range(n):
        side.send(0)
    sent = commandstats(ctx) - before
    out["sent"] = {"events": n, "per_event": sum(sent.values()) / n, "commands": per(sent, n)}
    side.check(f"redis work on {side.name}")
    return out


def run(ctx: Context) -> None:
    res = ctx.results
    data: dict[str, dict[str, Any]] = {}
    for name, make_side in (("celery", CelerySide), ("bus", BusSide)):
        ctx.fresh()
        side = make_side(ctx)
        try:
            data[name] = measure_side(ctx, side)
        finally:
            side.close()
        res.detail(SECTION, name, data[name])
    key = f"{SECTION}/"
    for name, data_ in data.items():
        handled = data_["handled"]
        res.add(SECTION, f"{name} commands per event handled", handled["per_event"], "commands")
        res.add(
            SECTION,
            f"{name} LLEN per event handled",
            handled["commands"].get("llen", 0.0),
            "commands",
        )
        res.add(
            SECTION,
            f"{name} scripts per event handled",
            handled["commands"].get("evalsha", 0.0) + handled["commands"].get("eval", 0.0),
            "EVALSHA",
        )
        res.add(SECTION, f"{name} commands per event sent", data_["sent"]["per_event"], "commands")
        res.add(SECTION, f"{name} idle worker", data_["idle"]["per_second"], "commands/s")
    for what in ("commands per event handled", "commands per event sent", "idle worker"):
        res.ratio(SECTION, f"bus / celery {what}", f"{key}bus {what}", f"{key}celery {what}")
