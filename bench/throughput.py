"""Speed of the bus against plain Kombu, Celery and redis-py, in the same run
on the same embedded Redis. Prints rates and ratios; asserts nothing.

    python bench/throughput.py [--events 3000] [--paths-only] [--rounds 5]

1. publish: one event to the 2 queues bound to signal.detected (research and
   council): bus.emit (validation + one Lua script), Kombu's topic exchange
   emulation (Producer.publish), and the floor: two raw LPUSHes in redis-py.
2. drain: N events already queued, one no-op handler in the research guild,
   one solo-pool Celery worker in-process: bus (event hop + handler task) vs
   plain Celery (N no-op tasks, same config).
   A third run is plain Celery on raptorflow_bus.transport, to separate what
   the atomic pop costs from what the event hop costs.
3. latency: one event at a time with the worker running, emit -> handler start.
4. emit paths (issue 11; ``--paths-only`` runs just these), against anchors
   measured in the same rounds: one redis-py LPUSH round trip, and redis-py
   pipelining two LPUSHes per event in pipelines of 1,000 events. Single emit;
   emit_many in batches of 10/100/1,000; ``await bus.publish`` at concurrency
   1/50/100; a 10,000-event emit_many with SLOWLOG on, for its number of calls
   and the longest one. Rounds interleave the figures, and each ratio is the
   median of its per-round ratios (the VM is shared: absolute rates move).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from celery import Celery
from celery.contrib.testing.worker import start_worker
from kombu import Connection, Exchange, Producer, Queue

from raptorflow_bus import Bus, Settings
from raptorflow_bus.embedded import EmbeddedRedis
from raptorflow_bus.queues import is_idle
from raptorflow_bus.worker import make_event_step

SIGNAL = {"signal_id": "s-1", "source": "news", "topic": "ai", "strength": 0.9}


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def bench_publish(url: str, n: int) -> dict[str, float]:
    bus = Bus(Settings(broker_url=url)).connect()
    bus.redis.flushdb()
    bus.declare_topology()
    start = time.perf_counter()
    for _ in range(n):
        bus.emit("signal.detected", SIGNAL, workspace_id="ws-bench")
    ours = rate(n, time.perf_counter() - start)
    bus.close()

    exchange = Exchange("bench.events", type="topic")
    queues = [Queue(q, exchange, routing_key="bench.events.signal.*") for q in ("b1", "b2")]
    client = redis.Redis.from_url(url)
    client.flushdb()
    body = Bus(Settings(broker_url=url, eager=True)).prepare(
        "signal.detected", SIGNAL, workspace_id="ws-bench"
    )[1]
    with Connection(url) as conn:
        for q in queues:
            q(conn.default_channel).declare()
        producer = Producer(conn.default_channel, exchange=exchange, serializer="json")
        start = time.perf_counter()
        for _ in range(n):
            producer.publish(body, routing_key="bench.events.signal.detected")
        kombu = rate(n, time.perf_counter() - start)

    client.flushdb()
    start = time.perf_counter()
    for _ in range(n):
        client.lpush("r1", body)
        client.lpush("r2", body)
    raw = rate(n, time.perf_counter() - start)
    return {"bus.emit": ours, "kombu topic publish": kombu, "redis-py 2x LPUSH": raw}


def drain_then_latency(
    done: dict[str, int], n: int, start: float, send_one: Callable[[], object]
) -> tuple[float, list[float]]:
    """Wait for the ``n`` queued runs (a rate since ``start``), then time 200
    single sends from send to handler start, in ms."""
    while done["n"] < n:
        time.sleep(0.01)
    drained = rate(n, time.perf_counter() - start)
    latencies = []
    for _ in range(200):
        before = done["n"]
        sent = time.perf_counter()
        send_one()
        while done["n"] == before:
            time.sleep(0.0002)
        latencies.append((time.perf_counter() - sent) * 1000)
    return drained, latencies


def bench_drain(url: str, n: int) -> dict[str, float]:
    bus = Bus(Settings(broker_url=url)).connect()
    bus.redis.flushdb()
    bus.declare_topology()
    done = {"n": 0}

    def noop(payload: Any) -> None:
        done["n"] += 1

    bus.subscribe("signal.detected", noop, guild="research")
    bus.emit_many([("signal.detected", SIGNAL)] * n, workspace_id="ws-bench")
    bus.app.steps["worker"].add(make_event_step(bus, ["research"]))
    start = time.perf_counter()
    with start_worker(
        bus.app,
        pool="solo",
        perform_ping_check=False,
        loglevel="ERROR",
        queues=["research.handlers"],
    ):
        ours, latencies = drain_then_latency(
            done, n, start, lambda: bus.emit("signal.detected", SIGNAL, workspace_id="ws-bench")
        )
        while not is_idle(bus, ["research"]):
            time.sleep(0.01)
    bus.close()

    plain, plain_lat = plain_celery(url, n, transport=None)
    atomic, atomic_lat = plain_celery(url, n, transport="raptorflow_bus.transport:Transport")
    return {
        "bus drain (handler runs/s)": ours,
        "plain celery drain (tasks/s)": plain,
        "celery+bus transport (tasks/s)": atomic,
        "bus latency p50 ms": statistics.median(latencies),
        "plain celery latency p50 ms": statistics.median(plain_lat),
        "celery+bus transport p50 ms": statistics.median(atomic_lat),
        "bus latency p95 ms": statistics.quantiles(latencies, n=20)[18],
        "plain celery latency p95 ms": statistics.quantiles(plain_lat, n=20)[18],
    }


def plain_celery(url: str, n: int, transport: str | None) -> tuple[float, list[float]]:
    """N no-op tasks through a bare Celery app with the bus's settings; ``transport``
    None is stock Kombu, so the ratio shows what the bus and its transport cost."""
    app = Celery("plain", set_as_current=False)
    app.config_from_object("celeryconfig")
    app.conf.update(broker_url=url, broker_transport=transport)
    plain_done = {"n": 0}

    @app.task(name="plain.noop", acks_late=True)
    def plain_noop(envelope: dict[str, Any]) -> None:
        plain_done["n"] += 1

    redis.Redis.from_url(url).flushdb()
    envelope = {"type": "signal.detected", "payload": SIGNAL}
    with app.producer_or_acquire() as producer:
        for _ in range(n):
            plain_noop.apply_async(kwargs={"envelope": envelope}, queue="plain", producer=producer)
    start = time.perf_counter()
    with start_worker(
        app, pool="solo", perform_ping_check=False, loglevel="ERROR", queues=["plain"]
    ):
        return drain_then_latency(
            plain_done,
            n,
            start,
            lambda: plain_noop.apply_async(kwargs={"envelope": envelope}, queue="plain"),
        )


def bench_paths(url: str, n: int, rounds: int) -> tuple[dict[str, float], dict[str, float]]:
    """Medians of each figure, and of each per-round ratio to its anchor."""
    bus = Bus(Settings(broker_url=url)).connect()
    client = redis.Redis.from_url(url)
    body = bus.prepare("signal.detected", SIGNAL, workspace_id="ws-bench")[1]

    def reset() -> None:
        client.flushdb()
        bus.declare_topology()

    def timed(count: int, run: Callable[[], object]) -> float:
        start = time.perf_counter()
        run()
        return rate(count, time.perf_counter() - start)

    def lpush() -> float:
        client.delete("r1")
        return timed(n, lambda: [client.lpush("r1", body) for _ in range(n)])

    def pipelined() -> float:
        client.delete("r1", "r2")

        def run() -> None:
            for _ in range(n // 1000 or 1):
                pipe = client.pipeline(transaction=False)
                for _ in range(1000):
                    pipe.lpush("r1", body)
                    pipe.lpush("r2", body)
                pipe.execute()

        return timed((n // 1000 or 1) * 1000, run)

    def emit() -> float:
        reset()
        return timed(
            n,
            lambda: [
                bus.emit("signal.detected", SIGNAL, workspace_id="ws-bench") for _ in range(n)
            ],
        )

    def many(size: int) -> Callable[[], float]:
        def run() -> float:
            reset()
            items = [("signal.detected", SIGNAL)] * size
            batches = max(1, n // size)
            return timed(
                batches * size,
                lambda: [bus.emit_many(items, workspace_id="ws-bench") for _ in range(batches)],
            )

        return run

    def publish(concurrency: int) -> Callable[[], float]:
        async def go() -> float:
            each = max(1, n // concurrency)

            async def worker() -> None:
                for _ in range(each):
                    await bus.publish("signal.detected", SIGNAL, workspace_id="ws-bench")

            await bus.publish("signal.detected", SIGNAL, workspace_id="ws-bench")
            start = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return rate(each * concurrency, time.perf_counter() - start)

        def run() -> float:
            reset()
            return asyncio.run(go())

        return run

    figures: dict[str, Callable[[], float]] = {
        "lpush round trip (anchor)": lpush,
        "emit": emit,
        "pipelined 2x LPUSH (anchor)": pipelined,
        **{f"emit_many {size}": many(size) for size in (10, 100, 1000)},
        **{f"publish c={c}": publish(c) for c in (1, 50, 100)},
    }
    got: dict[str, list[float]] = {name: [] for name in figures}
    for _ in range(rounds):
        for name, run in figures.items():
            got[name].append(run())
    reset()
    client.config_set("slowlog-log-slower-than", 0)
    client.slowlog_reset()
    client.config_resetstat()
    bus.emit_many([("signal.detected", SIGNAL)] * 10_000, workspace_id="ws-bench")
    calls = client.info("commandstats")["cmdstat_evalsha"]["calls"]
    longest = max(
        e["duration"] for e in client.slowlog_get(1000) if e["command"].startswith(b"EVALSHA")
    )
    client.config_set("slowlog-log-slower-than", 10_000)
    bus.close()
    median = {name: statistics.median(values) for name, values in got.items()}
    median["10,000-event emit_many: calls"] = calls
    median["10,000-event emit_many: longest call ms"] = longest / 1000

    def ratio(name: str, anchor: str) -> float:
        return statistics.median(v / a for v, a in zip(got[name], got[anchor], strict=True))

    lpush_anchor, pipe_anchor = "lpush round trip (anchor)", "pipelined 2x LPUSH (anchor)"
    ratios = {
        "emit / lpush round trip": ratio("emit", lpush_anchor),
        **{
            f"emit_many {s} / pipelined": ratio(f"emit_many {s}", pipe_anchor)
            for s in (10, 100, 1000)
        },
        "publish c=1 / emit": ratio("publish c=1", "emit"),
        "publish c=100 / pipelined": ratio("publish c=100", pipe_anchor),
        "publish c=100 / lpush round trip": ratio("publish c=100", lpush_anchor),
    }
    return median, ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--paths-only", action="store_true", help="only section 4")
    parser.add_argument("--rounds", type=int, default=5, help="section 4's rounds")
    args = parser.parse_args()
    server = EmbeddedRedis(Path(tempfile.mkdtemp(prefix="raptorbus-bench-")))
    url = server.acquire()
    try:
        paths, ratios = bench_paths(url, args.events, args.rounds)
        if args.paths_only:
            pub, drain = None, None
        else:
            pub = bench_publish(url, args.events)
            drain = bench_drain(url, args.events)
    finally:
        server.release()
    print(f"events: {args.events}, rounds: {args.rounds}")
    for name, value in paths.items():
        print(f"paths    {name:40s} {value:10.1f}")
    for name, value in ratios.items():
        print(f"ratio    {name:40s} {value:10.2f}")
    if pub is None or drain is None:
        return
    for name, value in pub.items():
        print(f"publish  {name:28s} {value:10.0f} events/s")
    print(
        f"ratio    bus.emit / kombu publish     {pub['bus.emit'] / pub['kombu topic publish']:.2f}"
    )
    print(f"ratio    bus.emit / redis-py floor    {pub['bus.emit'] / pub['redis-py 2x LPUSH']:.2f}")
    for name, value in drain.items():
        print(f"drain    {name:28s} {value:10.2f}")
    ratio = drain["bus drain (handler runs/s)"] / drain["plain celery drain (tasks/s)"]
    print(f"ratio    bus drain / plain celery     {ratio:.2f}")
    lat = drain["bus latency p50 ms"] / drain["plain celery latency p50 ms"]
    print(f"ratio    bus p50 / plain celery p50   {lat:.2f}")


if __name__ == "__main__":
    main()
