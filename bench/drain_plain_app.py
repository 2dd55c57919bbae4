"""A plain Celery app for ``bench/worker_drain.py``: the bus's Celery settings on
stock Kombu (or on ``PLAIN_TRANSPORT``), one no-op task that takes an envelope,
as a bus handler task does. Run as ``celery -A bench.drain_plain_app worker``."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

from bench.drain_noop_handlers import started


def make_app(url: str | None, transport: str | None) -> tuple[Celery, Any]:
    """The app and its no-op task (the sender of a run needs its own, on the
    run's transport, so that a message wakes the worker as it should)."""
    app = Celery("plain", set_as_current=False)
    app.config_from_object("celeryconfig")
    app.conf.update(broker_url=url, broker_transport=transport)

    @app.task(name="plain.noop", acks_late=True)
    def noop(envelope: dict[str, Any]) -> None:
        started(envelope["payload"].get("topic"))

    return app, noop


app, noop = make_app(
    os.environ.get("RAPTORBUS_BROKER_URL"), os.environ.get("PLAIN_TRANSPORT") or None
)
