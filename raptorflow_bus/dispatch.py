"""The hop from a consumer's event queue to its handler tasks: one Celery task per
(event, handler) with a deterministic id, so a redelivered event maps onto the
same task ids and the dedup record catches the second run (trap 5).

On a broker the task messages are Celery's own ``as_task_v2`` output in Kombu's
Redis format, written by the caller (the event hop's commit script, or one
pipeline here) with the queue's wake token: going through ``apply_async`` and
a Kombu producer cost a quarter of a handler run (py-spy over
``bench/throughput.py``), and ``saferepr`` of the envelope alone 7 %; the
envelope's JSON text is the readable repr Flower shows.

Building that message per task cost 80 to 230 us (two JSON encodings of the
envelope and Celery's configuration lookups), more than the rest of the hop.
Only four fields of it differ between two tasks of the same handler, queue and
priority (the task id, the kwargs repr, the body and the delivery tag), so
``as_task_v2`` runs once per handler, queue and priority with markers in those
fields, and each message is that text with the markers replaced. A traced
dispatch (``tracing``) adds the span's W3C context to the headers, so it builds
its messages whole instead."""

from __future__ import annotations

import functools
import json
import os
import re
import socket
import uuid
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from celery import Celery

from raptorflow_bus import tracing
from raptorflow_bus.envelope import Envelope
from raptorflow_bus.kombu_messages import kombu_message, wake
from raptorflow_bus.topology import PRIORITY_VALUES, priority_list

if TYPE_CHECKING:
    from raptorflow_bus.bus import Bus

TASK_ID_NAMESPACE = uuid.UUID("6f1c3b8e-2d0a-4c51-9b7e-5a4f3e2d1c0b")
REPR_LIMIT = 1024
EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
_EMBED_JSON = json.dumps(EMBED, separators=(",", ":"))
# Strings no envelope, task name or queue contains (JSON escapes NUL).
_MARKS = {name: f"\x00raptorbus-{name}\x00" for name in ("id", "repr", "body", "tag")}
_MARK_RE = re.compile("|".join(re.escape(json.dumps(m)) for m in _MARKS.values()))
_MARK_NAMES = {json.dumps(m): name for name, m in _MARKS.items()}


def handler_task_id(event_id: str, task_name: str) -> str:
    return str(uuid.uuid5(TASK_ID_NAMESPACE, f"{event_id}/{task_name}"))


@functools.cache
def _origin(pid: int) -> str:
    return f"gen{pid}@{socket.gethostname()}"


@dataclass(frozen=True)
class _Template:
    """A task message's text cut at the four fields that vary."""

    parts: tuple[str, ...]
    slots: tuple[str, ...]

    def fill(self, values: dict[str, str]) -> str:
        out = [self.parts[0]]
        for slot, part in zip(self.slots, self.parts[1:], strict=True):
            out.append(values[slot])
            out.append(part)
        return "".join(out)


# Per app, read once: the time limits in Celery's configuration are start-up settings.
_TEMPLATES: weakref.WeakKeyDictionary[Celery, dict[tuple[str, str, int, int], _Template]] = (
    weakref.WeakKeyDictionary()
)


def _task_v2(app: Celery, task_id: str, task_name: str, kwargsrepr: str) -> Any:
    """Celery's own protocol-2 message for a handler task (its body is ours)."""
    conf = app.conf
    return app.amqp.as_task_v2(
        task_id,
        task_name,
        kwargs={},
        time_limit=conf.task_time_limit,
        soft_time_limit=conf.task_soft_time_limit,
        origin=_origin(os.getpid()),
        ignore_result=True,
        argsrepr="()",
        kwargsrepr=kwargsrepr,
    )


def _template(app: Celery, task_name: str, queue: str, priority: int) -> _Template:
    key = (task_name, queue, priority, os.getpid())
    cache = _TEMPLATES.setdefault(app, {})
    template = cache.get(key)
    if template is None:
        message = _task_v2(app, _MARKS["id"], task_name, _MARKS["repr"])
        text = kombu_message(
            _MARKS["body"],
            queue,
            priority,
            message.headers,
            message.properties,
            delivery_tag=_MARKS["tag"],
        )
        slots = tuple(_MARK_NAMES[m] for m in _MARK_RE.findall(text))
        template = cache[key] = _Template(tuple(_MARK_RE.split(text)), slots)
    return template


def task_message(
    bus: Bus,
    task_name: str,
    task_id: str,
    data: dict[str, Any],
    raw: str,
    queue: str,
    priority: int,
) -> str:
    """A Celery protocol-2 message for ``task_name(envelope=data)`` as Kombu's
    Redis channel stores it; ``raw`` is the envelope's JSON text (``data``
    parsed), which goes into the body as it is."""
    kwargsrepr = "{'envelope': " + raw + "}"
    if len(kwargsrepr) > REPR_LIMIT:
        kwargsrepr = kwargsrepr[: REPR_LIMIT - 3] + "..."
    body = '[[],{"envelope":' + raw + "}," + _EMBED_JSON + "]"
    trace = tracing.task_headers({})
    if trace:
        return _traced_message(
            bus.app, task_name, task_id, kwargsrepr, body, queue, priority, trace
        )
    return _template(bus.app, task_name, queue, priority).fill(
        {
            "id": json.dumps(task_id),
            "repr": json.dumps(kwargsrepr),
            "body": json.dumps(body),
            "tag": json.dumps(str(uuid.uuid4())),
        }
    )


def _traced_message(
    app: Celery,
    task_name: str,
    task_id: str,
    kwargsrepr: str,
    body: str,
    queue: str,
    priority: int,
    trace: dict[str, Any],
) -> str:
    message = _task_v2(app, task_id, task_name, kwargsrepr)
    headers = {**message.headers, **trace}
    return kombu_message(body, queue, priority, headers, message.properties)


@dataclass(frozen=True)
class HandlerTasks:
    """The task messages of one event for one consumer, and where they go; the
    envelope and handler names count a second copy of the event as duplicates."""

    queue: str
    key: str
    messages: Sequence[str]
    envelope: Envelope
    handlers: Sequence[str] = ()

    def __len__(self) -> int:
        return len(self.messages)


@tracing.traced_dispatch
def handler_tasks(
    bus: Bus, envelope: Envelope, consumer: str, data: dict[str, Any], raw: str | None
) -> HandlerTasks:
    """One task message per handler ``consumer`` has for this event (maybe none)."""
    queue = bus.topology.handler_queue(consumer)
    priority = PRIORITY_VALUES[envelope.priority]
    specs = bus.handlers_for(consumer, envelope.type)
    if specs and raw is None:
        raw = json.dumps(data, separators=(",", ":"))
    messages = [
        task_message(
            bus,
            spec.task_name,
            handler_task_id(envelope.id, spec.task_name),
            data,
            raw or "",
            queue,
            priority,
        )
        for spec in specs
    ]
    handlers = [spec.task_name for spec in specs]
    return HandlerTasks(queue, priority_list(queue, priority), messages, envelope, handlers)


def dispatch(
    bus: Bus,
    envelope: Envelope,
    consumer: str,
    data: dict[str, Any] | None = None,
    raw: str | None = None,
) -> int:
    """Queue the handlers ``consumer`` has for this event; returns how many.
    The event hop writes its batches with ``raptorflow_bus.hop``; this is the
    one-event path (eager buses, tools, tests)."""
    data = data if data is not None else envelope.model_dump(mode="json")
    if bus.eager:
        return _apply_eagerly(bus, envelope, consumer, data)
    tasks = handler_tasks(bus, envelope, consumer, data, raw)
    if not tasks.messages:
        return 0
    pipe = bus.redis.pipeline(transaction=False)
    for message in tasks.messages:
        pipe.lpush(tasks.key, message)
    wake(pipe, tasks.queue)
    bus.replica_acks.execute(pipe)
    return len(tasks.messages)


@tracing.traced_dispatch
def _apply_eagerly(bus: Bus, envelope: Envelope, consumer: str, data: dict[str, Any]) -> int:
    specs = bus.handlers_for(consumer, envelope.type)
    for spec in specs:
        bus.app.tasks[spec.task_name].apply_async(
            kwargs={"envelope": data},
            task_id=handler_task_id(envelope.id, spec.task_name),
            **tracing.apply_options(),
        )
    return len(specs)
