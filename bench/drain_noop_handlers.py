"""A no-op research handler for ``bench/worker_drain.py``, loaded by a real worker
with ``RAPTORBUS_HANDLERS=bench.drain_noop_handlers``. It does nothing, except for an
event whose topic is ``latency``: then it pushes its start time (one LPUSH,
which the plain Celery task of ``bench/drain_plain_app.py`` does alike)."""

from __future__ import annotations

import functools
import os
import time
from typing import Any

import redis

from raptorflow_bus import HandlerGroup

LATENCY_KEY = "bench:latency"

handlers = HandlerGroup("research")


@functools.cache
def _client(pid: int) -> redis.Redis[bytes]:
    return redis.Redis.from_url(os.environ["RAPTORBUS_BROKER_URL"])


def started(topic: Any) -> None:
    """Record the start time of a latency probe; nothing for any other event."""
    if topic == "latency":
        _client(os.getpid()).lpush(LATENCY_KEY, repr(time.time()))


@handlers.on("signal.detected")
def noop(payload: Any) -> None:
    started(getattr(payload, "topic", None))


GROUPS = [handlers]
