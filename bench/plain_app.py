"""The plain-Celery anchor: one no-op task on a bare Celery app with the bus's
own Celery settings (``celeryconfig``: acks late, prefetch 1, priority steps,
task events on), on stock Kombu unless told otherwise. Workers run it as users
run Celery::

    RAPTORBUS_BROKER_URL=redis://... celery -A bench.plain_app worker -E --pool=solo -Q plain

``RAPTORBUS_BENCH_CELERY_TRANSPORT`` names another Kombu transport (the bench
sets it to ``raptorflow_bus.transport:Transport`` for the run that separates
what the bus's transport costs from what its event hop costs)."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

from bench import marks

TASK_NAME = "bench.noop"
QUEUE = "plain"
TRANSPORT_ENV = "RAPTORBUS_BENCH_CELERY_TRANSPORT"
BUS_TRANSPORT = "raptorflow_bus.transport:Transport"
# The run on the bus's transport has a queue of its own: both Celery workers
# run side by side in a drain group, and on one queue each burst was drained
# by both of them (the stock anchor read twice its own rate).
BUS_TRANSPORT_QUEUE = "plain.bus-transport"


def queue_for(transport: str | None) -> str:
    return QUEUE if transport is None else BUS_TRANSPORT_QUEUE


def make_app(url: str, transport: str | None = None) -> Celery:
    """``transport`` None is Kombu's stock Redis transport for the URL."""
    app = Celery("plain", set_as_current=False)
    app.config_from_object("celeryconfig")
    app.conf.update(
        broker_url=url,
        broker_transport=transport,
        task_default_queue=queue_for(transport),
        # As `celery worker -E`, whatever celeryconfig says: the bus's workers
        # send task events for Flower, so the anchor must too.
        worker_send_task_events=True,
    )

    @app.task(name=TASK_NAME, shared=False)
    def noop(envelope: dict[str, Any]) -> None:
        marks.record(str(envelope["payload"]["signal_id"]))

    return app


app = make_app(os.environ.get(marks.URL_ENV, ""), os.environ.get(TRANSPORT_ENV) or None)
