"""The process-wide bus the seed API promises (``bus = await get_bus()``).

A thin accessor: the instance is created from the environment on first use,
never at import, and a handler's own bus always wins over it."""

from __future__ import annotations

import asyncio
import atexit
import threading
from typing import Any

from raptorflow_bus.bus import Bus
from raptorflow_bus.context import current_bus_var
from raptorflow_bus.envelope import Envelope

_lock = threading.Lock()
_instance: list[Bus] = []


def default_bus() -> Bus:
    with _lock:
        if not _instance:
            bus = Bus()
            bus.load_handlers()
            bus.connect()
            atexit.register(bus.close)
            _instance.append(bus)
        return _instance[0]


async def get_bus() -> Bus:
    """The process-wide, connected bus (connecting may start the embedded Redis).

    With the outbox on it returns even while the broker is unreachable: its emits
    spool, and it connects and drains by itself once the broker answers."""
    return await asyncio.to_thread(default_bus)


def emit(event_type: str, payload: Any = None, **options: Any) -> Envelope:
    """Emit on the bus of the running handler, else on the process-wide bus."""
    bus = current_bus_var.get() or default_bus()
    return bus.emit(event_type, payload, **options)
