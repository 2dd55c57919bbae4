"""Messages no producer of the bus would write, pushed straight into a guild's
queues the way a buggy or hostile client could. Each carries a marker, so the
scenario can tell where it ended up: quarantined, dead-lettered, or nowhere."""

from __future__ import annotations

import base64
import json
import pickle
from dataclasses import dataclass
from typing import Any

from raptorflow_bus import Bus
from raptorflow_bus.dispatch import task_message
from raptorflow_bus.envelope import utcnow
from raptorflow_bus.kombu_messages import kombu_message, wake
from raptorflow_bus.topology import priority_list

NORMAL = 6
BIG_BYTES = 20 * 1024 * 1024


@dataclass(frozen=True)
class Garbage:
    label: str
    queue: str
    raw: bytes
    markers: tuple[str, ...]

    @property
    def marker(self) -> str:
        return self.markers[0]


def envelope(marker: str, event_type: str, payload: dict[str, Any]) -> dict[str, Any]:
    """An envelope as the wire carries it, id first so a truncated copy keeps it."""
    return {
        "id": marker,
        "type": event_type,
        "version": 1,
        "payload": payload,
        "priority": "normal",
        "workspace_id": None,
        "correlation_id": marker,
        "causation_id": None,
        "request_id": marker,
        "source_agent_id": None,
        "timestamp": utcnow().isoformat(),
        "expires_at": None,
    }


def oversized_metrics() -> dict[str, Any]:
    """A ``system.metrics`` payload its model accepts, 20 MB long: only the size
    limit stands between it and the handler. Long keys keep it cheap to parse."""
    key = "k" * 10_000
    return {
        "host": "h1",
        "cpu_percent": 1.0,
        "memory_percent": 1.0,
        "extra": {f"{n:06d}{key}": 0.5 for n in range(BIG_BYTES // 10_000)},
    }


def pickled(queue: str, marker: str) -> bytes:
    """A harmless pickle, refused for its content type before anything decodes it."""
    body = base64.b64encode(pickle.dumps({"marker": marker})).decode()
    message = json.loads(kombu_message("", queue, NORMAL, headers={"marker": marker}))
    message.update(
        {
            "body": body,
            "content-type": "application/x-python-serialize",
            "content-encoding": "binary",
        }
    )
    message["properties"]["body_encoding"] = "base64"
    return json.dumps(message).encode()


def _task(bus: Bus, queue: str, name: str, marker: str, data: dict[str, Any]) -> bytes:
    raw = json.dumps(data, separators=(",", ":"))
    return task_message(bus, name, marker, data, raw, queue, NORMAL).encode()


def for_queue(bus: Bus, queue: str, handler: str | None) -> list[Garbage]:
    """The five kinds of garbage for one queue: an event queue when ``handler`` is
    None (events are plain envelopes there), else that handler's task queue."""
    kind = "event" if handler is None else "task"

    def marker(label: str) -> str:
        return f"garbage-{kind}-{label}"

    def carrying(label: str, event_type: str, payload: dict[str, Any]) -> bytes:
        data = envelope(marker(label), event_type, payload)
        if handler is None:
            return kombu_message(json.dumps(data, separators=(",", ":")), queue, NORMAL).encode()
        return _task(bus, queue, handler, marker(label), data)

    metrics = {"host": "h1", "cpu_percent": 1.0, "memory_percent": 1.0}
    unknown_task = envelope(marker("unknown-task"), "system.metrics", metrics)
    pickle_raw = pickled(queue, marker("pickle"))
    items = [
        ("malformed-json", b"{not json " + marker("malformed-json").encode(), ()),
        (
            "unknown-task",
            _task(bus, queue, "council.no_such_handler", marker("unknown-task"), unknown_task),
            (),
        ),
        ("20MB", carrying("20MB", "system.metrics", oversized_metrics()), ()),
        ("unknown-type", carrying("unknown-type", "no.such_type", {"x": 1}), ()),
        ("pickle", pickle_raw, (json.loads(pickle_raw)["body"],)),
    ]
    return [
        Garbage(f"{queue}/{label}", queue, raw, (marker(label), *extra))
        for label, raw, extra in items
    ]


def push(bus: Bus, items: list[Garbage]) -> None:
    for item in items:
        pipe = bus.redis.pipeline(transaction=False)
        pipe.lpush(priority_list(item.queue, NORMAL), item.raw)
        wake(pipe, item.queue)
        pipe.execute()
