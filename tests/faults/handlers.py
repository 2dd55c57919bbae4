"""Council handlers that write down every run in the ledger, a Redis of its own
that survives whatever the scenario does to the broker.

A worker loads them through ``RAPTORBUS_HANDLERS=tests.faults.handlers``; the
ledger's URL comes from ``RAPTORBUS_FAULT_LEDGER_URL``. Each event type has one
handler, so a ledger entry is keyed by the event id alone. A run is counted
when it starts (``runs``) and again only once its work is finished (``done``,
and ``order`` for the completion order), so a run cut short by a kill shows as
started but not done."""

from __future__ import annotations

import functools
import os
import time
from typing import Any

import redis

from raptorflow_bus import Envelope, HandlerGroup

LEDGER_URL_ENV = "RAPTORBUS_FAULT_LEDGER_URL"
SLEEP_ENV = "RAPTORBUS_FAULT_SLEEP"
RUNS, DONE, ORDER, PIDS, FIXED = "runs", "done", "order", "pids", "fixed"
# Every start and finish as "<event id> <start|done> <pid> <time>": read only to
# tell how an event came to run twice (one process after another, or two at once).
TRACE = "trace"

handlers = HandlerGroup("council")


@functools.cache
def _ledger(url: str, pid: int) -> redis.Redis[bytes]:
    """One client per process: a prefork child must not share its parent's socket."""
    return redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=10)


def ledger() -> redis.Redis[bytes]:
    return _ledger(os.environ[LEDGER_URL_ENV], os.getpid())


def _started(envelope: Envelope) -> redis.Redis[bytes]:
    client = ledger()
    pipe = client.pipeline(transaction=True)
    pipe.hincrby(RUNS, envelope.id, 1)
    pipe.hset(PIDS, envelope.id, os.getpid())
    pipe.rpush(TRACE, f"{envelope.id} start {os.getpid()} {time.time():.4f}")
    pipe.execute()
    return client


def _finished(client: redis.Redis[bytes], envelope: Envelope) -> None:
    pipe = client.pipeline(transaction=True)
    pipe.hincrby(DONE, envelope.id, 1)
    pipe.rpush(ORDER, envelope.id)
    pipe.rpush(TRACE, f"{envelope.id} done {os.getpid()} {time.time():.4f}")
    pipe.execute()


@handlers.on("system.metrics", "signal.detected")
def count_run(payload: Any, envelope: Envelope) -> None:
    _finished(_started(envelope), envelope)


@handlers.on("bus.health")
def slow_run(payload: Any, envelope: Envelope) -> None:
    client = _started(envelope)
    time.sleep(float(os.environ.get(SLEEP_ENV, "0")))
    _finished(client, envelope)


@handlers.on("system.error_aggregation")
def fail_until_fixed(payload: Any, envelope: Envelope) -> None:
    client = _started(envelope)
    if not client.exists(FIXED):
        raise RuntimeError("fails on purpose until the ledger says fixed")
    _finished(client, envelope)


GROUPS = (handlers,)
