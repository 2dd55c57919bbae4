"""Emitting from ``async def`` code without blocking the event loop.

``Bus.send`` talks to Redis (or, while it is down, to the SQLite outbox) and
may wait up to its 2 s bound on a broker gone silent; in a thread, the loop
keeps serving other requests meanwhile. Unlike ``Bus.publish`` it returns
``Sent``, so an API can say whether the event was spooled. The thread gets a
copy of the request's context (workspace, correlation id, trace)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from raptorflow_bus.bus import Bus, EventItem, Sent, SentBatch


async def send(bus: Bus, event_type: str, payload: Any = None, **options: Any) -> Sent:
    return await asyncio.to_thread(bus.send, event_type, payload, **options)


async def send_many(bus: Bus, events: Iterable[EventItem], **common: Any) -> SentBatch:
    items = list(events)
    return await asyncio.to_thread(bus.send_many, items, **common)
