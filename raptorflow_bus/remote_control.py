"""Two of Celery's remote control commands, as a guild worker answers them.

A guild worker reads its event queue through a worker bootstep of its own
(the event hop, ``raptorflow_bus.worker``), not through Celery's task
consumer, and Celery's commands only know the task consumer:

- ``active_queues`` would name the handler queue alone. Flower lists exactly
  the queues these replies name, so it would never show an event queue's
  depth, and ``celery inspect active_queues`` would hide that the worker reads
  it. Here the reply names both.
- ``cancel_consumer`` on an event queue would answer "no longer consuming"
  and change nothing (Flower's worker page offers it on every queue that
  ``active_queues`` names). Here it says so instead; a handler queue is
  cancelled as before.

Celery keeps one registry of these commands per process (``Panel``);
``register`` replaces the two entries under their own names, with the same
arguments and reply shapes, in a worker process only."""

from __future__ import annotations

from typing import Any

from celery.worker import control as celery_control
from kombu import Queue

# celery-types declares the registry but not the built-in commands.
control: Any = celery_control

EVENT_STEP = "raptorbus.EventDispatch"


def _event_queues(state: Any) -> list[Queue]:
    """The queues of the worker's event hop (a worker bootstep)."""
    worker = getattr(state.consumer, "controller", None)
    blueprint = getattr(worker, "blueprint", None)
    step = blueprint.steps.get(EVENT_STEP) if blueprint is not None else None
    return list(getattr(step, "queues", None) or [])


def active_queues(state: Any) -> list[dict[str, Any]]:
    """List the queues a worker is currently consuming from (tasks and events)."""
    consumer = state.consumer
    queues = list(consumer.task_consumer.queues) if consumer.task_consumer else []
    queues += _event_queues(state)
    return [dict(queue.as_dict(recurse=True)) for queue in queues]


def cancel_consumer(state: Any, queue: str, **kwargs: Any) -> dict[str, Any]:
    """Tell worker(s) to stop consuming from task queue by name."""
    if any(q.name == queue for q in _event_queues(state)):
        return {
            "error": f"{queue} is an event queue, read by the event step, not a task "
            "queue; stop the worker to hold its events"
        }
    reply: dict[str, Any] = control.cancel_consumer(state, queue, **kwargs)
    return reply


def register() -> None:
    """Install both commands in this process's registry (idempotent)."""
    control.inspect_command(name="active_queues")(active_queues)
    control.control_command(name="cancel_consumer", args=[("queue", str)], signature="<queue>")(
        cancel_consumer
    )
