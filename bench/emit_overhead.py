"""What tracing costs on emit: an in-process loop of single emits on the eager
bus (with no handler, and with one no-op handler) and on a real embedded Redis,
with no tracer provider configured (the default) or with an SDK provider
(``--traced``), and one redis-py LPUSH round trip of the same size on the same
Redis (the single-emit target's anchor). Run it on two checkouts to compare;
prints the mean cost of one emit in microseconds of wall time and of this
process's CPU time (each the best of ``--rounds``; CPU time is the steadier
on a shared machine, and leaves out the Redis server's own work); asserts
nothing.

    python bench/emit_overhead.py [--events 5000] [--rounds 5] [--traced]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from raptorflow_bus import Bus, Settings
from raptorflow_bus.embedded import EmbeddedRedis
from raptorflow_bus.testing import eager_bus

SIGNAL = {"signal_id": "s-1", "source": "news", "topic": "ai", "strength": 0.9}


def best_us(call: Callable[[], object], n: int, rounds: int) -> tuple[float, float]:
    """Mean wall and CPU microseconds of one of ``n`` calls, each the best of
    ``rounds`` rounds."""
    wall = cpu = float("inf")
    for _ in range(rounds):
        start, start_cpu = time.perf_counter(), time.process_time()
        for _ in range(n):
            call()
        wall = min(wall, (time.perf_counter() - start) / n * 1e6)
        cpu = min(cpu, (time.process_time() - start_cpu) / n * 1e6)
    return wall, cpu


def per_emit_us(bus: Bus, events: int, rounds: int) -> tuple[float, float]:
    return best_us(lambda: bus.emit("signal.detected", SIGNAL, workspace_id="ws-1"), events, rounds)


def per_lpush_us(bus: Bus, body: str, events: int, rounds: int) -> tuple[float, float]:
    """One redis-py LPUSH round trip of an envelope-sized value: the anchor of
    issue 11's single-emit target, timed as the emits are."""
    client = bus.redis
    try:
        return best_us(lambda: client.lpush("bench:lpush", body), events, rounds)
    finally:
        client.delete("bench:lpush")


def noop(payload: Any) -> None:
    return None


def run(events: int, rounds: int) -> list[tuple[str, tuple[float, float]]]:
    rows = []
    with eager_bus() as bus:
        rows.append(("eager, no handler", per_emit_us(bus, events, rounds)))
    with eager_bus() as bus:
        bus.subscribe("signal.detected", noop, guild="research")
        rows.append(("eager, 1 no-op handler", per_emit_us(bus, events, rounds)))
    with tempfile.TemporaryDirectory() as home:
        server = EmbeddedRedis(Path(home))
        url = server.acquire()
        try:
            with Bus(Settings(broker_url=url)) as bus:
                bus.redis.flushdb()
                bus.declare_topology()
                rows.append(("redis, published", per_emit_us(bus, events // 5, rounds)))
                body = "x" * len(bus.prepare("signal.detected", SIGNAL, workspace_id="ws-1")[1])
                anchor = per_lpush_us(bus, body, events // 5, rounds)
                rows.append(("redis-py LPUSH (anchor)", anchor))
        finally:
            server.release()
    return rows


def traced() -> Callable[[], None]:
    """An SDK tracer provider whose spans are dropped after they end."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

    from raptorflow_bus import tracing

    class Drop(SpanExporter):
        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(Drop()))
    tracing.configure(provider)
    return lambda: tracing.configure(None)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--traced", action="store_true", help="with an SDK tracer provider")
    args = parser.parse_args()
    undo = traced() if args.traced else None
    try:
        rows = run(args.events, args.rounds)
    finally:
        if undo is not None:
            undo()
    print(f"{'':<26}{'wall us/emit':>14}{'cpu us/emit':>14}")
    for label, (wall, cpu) in rows:
        print(f"{label:<26}{wall:>14.1f}{cpu:>14.1f}")


if __name__ == "__main__":
    main()
