"""Test helpers: an isolated eager bus with the production code paths."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from raptorflow_bus.bus import Bus
from raptorflow_bus.catalogue import Catalogue
from raptorflow_bus.settings import Settings
from raptorflow_bus.topology import Topology


@contextmanager
def eager_bus(
    *,
    topology: Topology | None = None,
    catalogue: Catalogue | None = None,
    settings: Settings | None = None,
    celery_config: Mapping[str, Any] | None = None,
) -> Iterator[Bus]:
    """A bus whose handlers run in-process (Celery eager mode) with an in-memory
    store. Handlers registered on it exist only on it; a handler's failure is
    retried and dead-lettered, never raised out of ``emit``."""
    base = settings or Settings(broker_url=None)
    bus = Bus(
        replace(base, eager=True),
        topology=topology,
        catalogue=catalogue,
        celery_config=celery_config,
    )
    bus.connect()
    try:
        yield bus
    finally:
        bus.close()
