"""Messages as Kombu's Redis channel stores them, and the wake token that every
writer through the bus's transport pushes beside a message (``transport``).
Shared by the transport, the event hop's dispatch and the tools that write
queues directly."""

from __future__ import annotations

import json
import uuid
from typing import Any

from kombu.transport import redis as kombu_redis

from raptorflow_bus import keys

# Kombu's type stubs omit it.
PublishBatch: Any = getattr(kombu_redis, "PublishBatch")  # noqa: B009

wake_key = keys.wake


def queue_command(pipe: Any, name: str, *args: Any) -> None:
    """A command on a redis pipeline or on a Kombu publish batch."""
    if isinstance(pipe, PublishBatch):
        pipe.add(name, *args)
    else:
        getattr(pipe, name)(*args)


def wake(pipe: Any, queue: str, expires_ms: int | None = None) -> None:
    """Queue the token for ``queue`` on ``pipe`` (a redis pipeline or a Kombu
    publish batch); an expiring queue gets an expiring token."""
    queue_command(pipe, "lpush", wake_key(queue), "1")
    queue_command(pipe, "ltrim", wake_key(queue), 0, 0)
    if expires_ms:
        queue_command(pipe, "pexpire", wake_key(queue), expires_ms)


def kombu_message(
    body: str,
    queue: str,
    priority: int,
    headers: dict[str, Any] | None = None,
    properties: dict[str, Any] | None = None,
    delivery_tag: str | None = None,
) -> str:
    """A message exactly as Kombu's Redis channel stores it (body not re-encoded),
    addressed to ``queue`` through the anonymous exchange, so a restore goes
    back to that queue only."""
    return json.dumps(
        {
            "body": body,
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": headers or {},
            "properties": {
                **(properties or {}),
                "delivery_info": {"exchange": "", "routing_key": queue},
                "priority": priority,
                "delivery_mode": 2,
                "delivery_tag": delivery_tag or str(uuid.uuid4()),
            },
        },
        separators=(",", ":"),
    )
