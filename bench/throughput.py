"""Speed of the bus against plain Kombu, Celery and redis-py, in the same run
on the same embedded Redis. Prints rates and ratios; asserts nothing.

    python bench/throughput.py [--events 3000]

1. publish: one event to the 2 queues bound to signal.detected (research and
   council): bus.emit (validation + one Lua script), Kombu's topic exchange
   emulation (Producer.publish), and the floor: two raw LPUSHes in redis-py.
2. drain: N events already queued, one no-op handler in the research guild,
   one solo-pool Celery worker in-process: bus (event hop + handler task) vs
   plain Celery (N no-op tasks, same config).
   A third run is plain Celery on raptorflow_bus.transport, to separate what
   the atomic pop costs from what the event hop costs.
3. latency: one event at a time with the worker running, emit -> handler start.
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=3000)
    args = parser.parse_args()
    server = EmbeddedRedis(Path(tempfile.mkdtemp(prefix="raptorbus-bench-")))
    url = server.acquire()
    try:
        pub = bench_publish(url, args.events)
        drain = bench_drain(url, args.events)
    finally:
        server.release()
    print(f"events: {args.events}")
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
