"""Reading queue state straight from Redis: every queue of the routing table,
its depth over all priority lists and the age of its oldest message, whether
or not any worker runs. Flower shows depths too (``raptorflow_bus.flower``),
but only of queues some worker it heard from named, and no ages."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from raptorflow_bus import keys
from raptorflow_bus.envelope import utcnow
from raptorflow_bus.topology import PRIORITY_STEPS, priority_list

if TYPE_CHECKING:
    from raptorflow_bus.bus import Bus


@dataclass(frozen=True)
class QueueState:
    name: str
    depth: int
    oldest_age_seconds: float | None


def _timestamp(raw: bytes) -> datetime | None:
    """The envelope timestamp inside a Kombu message (event or handler task)."""
    try:
        message = json.loads(raw)
        body: Any = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        data = json.loads(body)
        if isinstance(data, list):  # Celery protocol 2: [args, kwargs, embed]
            data = data[1]["envelope"]
        return datetime.fromisoformat(data["timestamp"])
    except (ValueError, KeyError, TypeError, IndexError):
        return None


def queue_states(bus: Bus, queues: Sequence[str]) -> list[QueueState]:
    """Depth and oldest age of each queue, all priorities, in one round trip."""
    pipe = bus.redis.pipeline(transaction=False)
    for queue in queues:
        for step in PRIORITY_STEPS:
            pipe.llen(priority_list(queue, step))
        for step in PRIORITY_STEPS:
            pipe.lindex(priority_list(queue, step), -1)
    results = pipe.execute()
    width = 2 * len(PRIORITY_STEPS)
    now = utcnow()
    states = []
    for i, queue in enumerate(queues):
        chunk = results[i * width : (i + 1) * width]
        depth = sum(int(n) for n in chunk[: len(PRIORITY_STEPS)])
        stamps = [
            t for raw in chunk[len(PRIORITY_STEPS) :] if raw and (t := _timestamp(raw)) is not None
        ]
        age = (now - min(stamps)).total_seconds() if stamps else None
        states.append(QueueState(queue, depth, age))
    return states


def queue_state(bus: Bus, queue: str) -> QueueState:
    return queue_states(bus, [queue])[0]


def all_queue_states(bus: Bus) -> list[QueueState]:
    return queue_states(bus, bus.topology.all_queue_names())


UNACKED_KEY = keys.UNACKED


def is_idle(bus: Bus, consumers: Sequence[str] | None = None) -> bool:
    """No message waiting in the consumers' queues and none delivered but unacked
    (running, or held by a worker for a delayed retry)."""
    names = bus.topology.consumers if consumers is None else consumers
    queues = [
        q for c in names for q in (bus.topology.event_queue(c), bus.topology.handler_queue(c))
    ]
    if any(q.depth for q in queue_states(bus, queues)):
        return False
    return int(bus.redis.hlen(UNACKED_KEY)) == 0
