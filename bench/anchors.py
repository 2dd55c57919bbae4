"""The anchors of the publish side: what plain redis-py, Kombu and Celery do
with the same message on the same broker, in the same run.

- redis-py, one LPUSH per round trip: the limit of anything that makes one
  round trip per event (a single ``emit`` makes one).
- redis-py, two LPUSHes in one pipelined round trip: the floor of an event
  fanned out to two queues, which ``signal.detected`` is (research, council).
- redis-py, a batch of events (two LPUSHes each) in one pipelined round trip:
  the limit of ``emit_many`` with the same batch size.
- Kombu's topic publish (stock Redis transport) on the bus's own exchange, so
  the same two bound queues get a copy, read from the same binding table.
- Celery's ``apply_async`` of a no-op task with the envelope as argument,
  stock Kombu, the bus's Celery settings.

The redis-py messages are the bus's own (the envelope in Kombu's format), so
every anchor moves the same bytes."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import redis
from kombu import Connection, Producer

from bench.context import Context
from bench.sides import EVENT, SIGNAL, WORKSPACE, CelerySide
from raptorflow_bus import Bus

ANCHOR_QUEUES = ("anchor.a", "anchor.b")
WARM_CALLS = 10


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def timed(
    n: int, send: Callable[[], object], *, warm: int = WARM_CALLS, budget: float | None = None
) -> float:
    """Events per second of ``n`` calls of ``send``, after ``warm`` untimed ones
    (connections, script loads); stops early once ``budget`` seconds passed, so
    a slow anchor does not hold the run up."""
    for _ in range(warm):
        send()
    start = time.perf_counter()
    deadline = start + budget if budget is not None else math.inf
    done = 0
    while done < n:
        send()
        done += 1
        if done % 16 == 0 and time.perf_counter() > deadline:
            break
    return rate(done, time.perf_counter() - start)


def body_of(bus: Bus) -> str:
    """The envelope JSON the bus would publish for the benchmark's event."""
    return bus.prepare(EVENT, SIGNAL, workspace_id=WORKSPACE)[1]


def redis_single(ctx: Context, message: str, n: int) -> float:
    client = redis.Redis.from_url(ctx.url)
    try:
        return timed(n, lambda: client.lpush(ANCHOR_QUEUES[0], message))
    finally:
        client.close()


def redis_fanout(
    ctx: Context, message: str, n: int, queues: tuple[str, ...], budget: float | None = None
) -> float:
    """One round trip per event, one LPUSH per queue in it."""
    client = redis.Redis.from_url(ctx.url)

    def send() -> None:
        pipe = client.pipeline(transaction=False)
        for queue in queues:
            pipe.lpush(queue, message)
        pipe.execute()

    try:
        return timed(n, send, budget=budget)
    finally:
        client.close()


def redis_batches(ctx: Context, message: str, n: int, batch: int) -> float:
    """``n`` events, ``batch`` of them (two LPUSHes each) per round trip."""
    client = redis.Redis.from_url(ctx.url)
    rounds = max(1, n // batch)

    def send() -> None:
        pipe = client.pipeline(transaction=False)
        for _ in range(batch):
            for queue in ANCHOR_QUEUES:
                pipe.lpush(queue, message)
        pipe.execute()

    try:
        return batch * timed(rounds, send, warm=1)
    finally:
        client.close()


def kombu_topic_publish(
    ctx: Context, bus: Bus, body: str, n: int, budget: float | None = None
) -> float:
    """Stock Kombu on the bus's exchange: it reads the binding table the bus
    declared and pushes one copy to each queue bound to the routing key."""
    routing_key = bus.prepare(EVENT, SIGNAL, workspace_id=WORKSPACE)[0].routing_key
    with Connection(ctx.url) as conn:
        producer = Producer(
            conn.default_channel, exchange=bus.topology.kombu_exchange, serializer="json"
        )
        return timed(
            n,
            lambda: producer.publish(
                body, routing_key=routing_key, content_type="application/json"
            ),
            budget=budget,
        )


def celery_apply_async(ctx: Context, n: int) -> float:
    side = CelerySide(ctx)
    try:
        return timed(n, lambda: side.send(0))
    finally:
        side.close()
