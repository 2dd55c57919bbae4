"""The hop from a consumer's event queue to its handler tasks: one Celery task per
(event, handler) with a deterministic id, so a redelivered event maps onto the
same task ids and the dedup record catches the second run (trap 5)."""

from __future__ import annotations

import contextlib
import uuid
from typing import TYPE_CHECKING, Any

from raptorflow_bus.envelope import Envelope
from raptorflow_bus.topology import PRIORITY_VALUES

if TYPE_CHECKING:
    from raptorflow_bus.bus import Bus

TASK_ID_NAMESPACE = uuid.UUID("6f1c3b8e-2d0a-4c51-9b7e-5a4f3e2d1c0b")


def handler_task_id(event_id: str, task_name: str) -> str:
    return str(uuid.uuid5(TASK_ID_NAMESPACE, f"{event_id}/{task_name}"))


def _batch(producer: Any, size: int) -> Any:
    """One Redis pipeline for several handler tasks; a batch of one only costs."""
    return producer.batch() if size > 1 else contextlib.nullcontext()


def dispatch(
    bus: Bus, envelope: Envelope, consumer: str, data: dict[str, Any] | None = None
) -> int:
    """Queue the handlers ``consumer`` has for this event; returns how many."""
    specs = bus.handlers_for(consumer, envelope.type)
    if not specs:
        return 0
    kwargs = {"envelope": data if data is not None else envelope.model_dump(mode="json")}
    if bus.eager:
        for spec in specs:
            bus.app.tasks[spec.task_name].apply_async(
                kwargs=kwargs, task_id=handler_task_id(envelope.id, spec.task_name)
            )
        return len(specs)
    queue = bus.topology.handler_queue(consumer)
    priority = PRIORITY_VALUES[envelope.priority]
    with bus.app.producer_or_acquire() as producer, _batch(producer, len(specs)):
        for spec in specs:
            bus.app.tasks[spec.task_name].apply_async(
                kwargs=kwargs,
                task_id=handler_task_id(envelope.id, spec.task_name),
                queue=queue,
                priority=priority,
                producer=producer,
            )
    return len(specs)
