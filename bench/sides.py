"""The two sides of every worker comparison, behind one interface: how to send
one stamped event, how to queue many, and how to start the worker that
handles them.

- ``BusSide``: ``bus.emit`` of ``signal.detected`` (validated, fanned out to
  research and council by the Lua script), handled by ``raptorbus worker
  research`` running ``bench.noop_handlers`` only; council's copy waits unread.
- ``CelerySide``: ``apply_async`` of ``bench.noop`` with the same envelope as
  its argument, handled by ``celery -A bench.plain_app worker -E``.

``preload`` queues many events fast (``emit_many`` for the bus, pipelined
task messages for Celery), so that a running worker finds a full queue.

A side is built after the broker was emptied (``Context.fresh``): Kombu
remembers which queues a connection declared, and would not declare them again
on a database that lost them."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Protocol

from bench import marks, plain_app
from bench.context import Context
from bench.workers import Process, bus_worker_argv, celery_worker_argv, worker_env
from raptorflow_bus import Bus, Settings
from raptorflow_bus.envelope import Envelope
from raptorflow_bus.kombu_messages import kombu_message, wake
from raptorflow_bus.topology import Topology, priority_list

EVENT = "signal.detected"
SIGNAL: dict[str, Any] = {"signal_id": "s-1", "source": "news", "topic": "ai", "strength": 0.9}
WORKSPACE = "ws-bench"
PRELOAD_BATCH = 1000


def new_bus(ctx: Context, topology: Topology | None = None) -> Bus:
    """A connected bus on the bench's broker with the topology declared, as an
    API process has it (default settings, outbox on)."""
    return Bus(Settings(broker_url=ctx.url, home=ctx.home), topology=topology).connect()


def spooled(bus: Bus) -> int:
    """Events this host's outbox has taken for the broker, ever. An emit whose
    broker round trip times out (1.5 s: a broker swamped by a big concurrent
    variant) spools instead of publishing, and so does every emit of that bus
    after it until the relay has drained: such a figure measures the outbox,
    not the publish path, and must be flagged."""
    return int(bus.outbox_stats()["spooled"])


def wait_unspooled(bus: Bus, timeout: float = 120.0) -> None:
    """Until the relay has published what the bus spooled and emits go to the
    broker again."""
    deadline = time.monotonic() + timeout
    while bus.spooling:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the outbox did not drain within {timeout:.0f}s")
        time.sleep(0.1)


def signal(sent_ns: int) -> dict[str, Any]:
    return {**SIGNAL, "signal_id": marks.stamp_id(sent_ns)}


class Side(Protocol):
    name: str

    def send(self, sent_ns: int) -> None: ...

    def preload(self, n: int) -> None: ...

    def worker(self, pool: str, concurrency: int, tag: str = "") -> Process: ...

    def check(self, what: str) -> None: ...

    def close(self) -> None: ...


class BusSide:
    name = "bus"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.bus = new_bus(ctx)
        self._spooled = spooled(self.bus)

    def send(self, sent_ns: int) -> None:
        self.bus.emit(EVENT, signal(sent_ns), workspace_id=WORKSPACE)

    def preload(self, n: int) -> None:
        while n > 0:
            k = min(n, PRELOAD_BATCH)
            self.bus.emit_many([(EVENT, signal(0))] * k, workspace_id=WORKSPACE)
            n -= k

    def worker(self, pool: str, concurrency: int, tag: str = "") -> Process:
        env = worker_env(self.ctx.url, self.ctx.home)
        log = self.ctx.log(f"bus-{pool}{concurrency}{tag}")
        return Process(f"raptorbus worker ({pool})", bus_worker_argv(pool, concurrency), env, log)

    def check(self, what: str) -> None:
        """Flag ``what`` if any of its events went through the outbox."""
        n = spooled(self.bus) - self._spooled
        if n:
            self.ctx.results.warnings.append(
                f"{what}: {n} bus events were spooled to the outbox (broker read timeout) "
                "and published later by the relay"
            )
            wait_unspooled(self.bus)
            self._spooled = spooled(self.bus)

    def close(self) -> None:
        self.bus.close()


class CelerySide:
    """``transport`` None is stock Kombu (the anchor); the bus's transport
    separates what the atomic pop costs from what the event hop costs."""

    def __init__(self, ctx: Context, transport: str | None = None) -> None:
        self.ctx = ctx
        self.transport = transport
        self.name = "celery" if transport is None else "celery+bus transport"
        self.app = plain_app.make_app(ctx.url, transport)
        self.task: Any = self.app.tasks[plain_app.TASK_NAME]
        correlation = str(uuid.uuid4())
        self.envelope = Envelope(
            type=EVENT,
            payload=SIGNAL,
            workspace_id=WORKSPACE,
            correlation_id=correlation,
            request_id=correlation,
        ).model_dump(mode="json")

    def _kwargs(self, sent_ns: int) -> dict[str, Any]:
        return {"envelope": {**self.envelope, "payload": signal(sent_ns)}}

    def send(self, sent_ns: int) -> None:
        self.task.apply_async(kwargs=self._kwargs(sent_ns))

    def preload(self, n: int) -> None:
        """``n`` task messages as ``apply_async`` writes them (Celery's own
        ``as_task_v2``, Kombu's Redis format, the queue's priority list), in
        pipelined batches: ``apply_async`` one by one is about as slow as a
        worker drains, so the queue would never build up."""
        queue = plain_app.queue_for(self.transport)
        priority = int(self.app.conf.task_default_priority)
        key = priority_list(queue, priority)
        client = self.ctx.client
        while n > 0:
            k = min(n, PRELOAD_BATCH)
            pipe = client.pipeline(transaction=False)
            for _ in range(k):
                task = self.app.amqp.as_task_v2(
                    str(uuid.uuid4()), plain_app.TASK_NAME, kwargs=self._kwargs(0)
                )
                body = json.dumps(task.body)
                pipe.lpush(key, kombu_message(body, queue, priority, task.headers, task.properties))
            wake(pipe, queue)  # read by the bus's transport, ignored by Kombu's
            pipe.execute()
            n -= k

    def worker(self, pool: str, concurrency: int, tag: str = "") -> Process:
        extra = {plain_app.TRANSPORT_ENV: self.transport} if self.transport else {}
        env = worker_env(self.ctx.url, self.ctx.home, **extra)
        name = "celery worker -E" + ("" if self.transport is None else " (bus transport)")
        log = self.ctx.log(f"celery-{pool}{concurrency}{tag}")
        argv = celery_worker_argv(pool, concurrency, self.transport)
        return Process(f"{name} ({pool})", argv, env, log)

    def check(self, what: str) -> None:
        """Celery has no outbox: an unreachable broker raises instead."""

    def close(self) -> None:
        self.app.close()


def warm_up(ctx: Context, side: Side, proc: Process, events: int = 1) -> None:
    """Until the worker has handled ``events`` events end to end: it is then
    up, its queues are declared and its first-run costs (imports, script
    loads, each pool child's first connection) are paid. Their marks are
    removed."""
    for _ in range(events):
        side.send(time.monotonic_ns())
    ctx.wait_marks(events, timeout=120, procs=[proc], interval=0.05)
    ctx.client.delete(marks.MARKS_KEY)
