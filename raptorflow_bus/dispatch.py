"""The hop from a consumer's event queue to its handler tasks: one Celery task per
(event, handler) with a deterministic id, so a redelivered event maps onto the
same task ids and the dedup record catches the second run (trap 5).

On a broker the task messages are built with Celery's own ``as_task_v2`` and
written in Kombu's Redis format in one pipeline with the queue's wake token:
going through ``apply_async`` and a Kombu producer cost a quarter of a handler
run (py-spy over ``bench/throughput.py``), and ``saferepr`` of the envelope
alone 7 %; the envelope's JSON text is the readable repr Flower shows."""

from __future__ import annotations

import functools
import json
import os
import socket
import uuid
from typing import TYPE_CHECKING, Any

from raptorflow_bus import tracing
from raptorflow_bus.envelope import Envelope
from raptorflow_bus.topology import PRIORITY_VALUES, priority_list
from raptorflow_bus.transport import kombu_message, wake

if TYPE_CHECKING:
    from raptorflow_bus.bus import Bus

TASK_ID_NAMESPACE = uuid.UUID("6f1c3b8e-2d0a-4c51-9b7e-5a4f3e2d1c0b")
REPR_LIMIT = 1024
EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def handler_task_id(event_id: str, task_name: str) -> str:
    return str(uuid.uuid5(TASK_ID_NAMESPACE, f"{event_id}/{task_name}"))


@functools.cache
def _origin(pid: int) -> str:
    return f"gen{pid}@{socket.gethostname()}"


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
    Redis channel stores it; ``raw`` is the envelope's JSON text."""
    conf = bus.app.conf
    kwargsrepr = "{'envelope': " + raw + "}"
    if len(kwargsrepr) > REPR_LIMIT:
        kwargsrepr = kwargsrepr[: REPR_LIMIT - 3] + "..."
    message = bus.app.amqp.as_task_v2(
        task_id,
        task_name,
        kwargs={"envelope": data},
        time_limit=conf.task_time_limit,
        soft_time_limit=conf.task_soft_time_limit,
        origin=_origin(os.getpid()),
        ignore_result=True,
        argsrepr="()",
        kwargsrepr=kwargsrepr,
    )
    body = json.dumps([[], {"envelope": data}, EMBED], separators=(",", ":"))
    headers = tracing.task_headers(message.headers)
    return kombu_message(body, queue, priority, headers, message.properties)


@tracing.traced_dispatch
def dispatch(
    bus: Bus,
    envelope: Envelope,
    consumer: str,
    data: dict[str, Any] | None = None,
    raw: str | None = None,
) -> int:
    """Queue the handlers ``consumer`` has for this event; returns how many."""
    specs = bus.handlers_for(consumer, envelope.type)
    if not specs:
        return 0
    data = data if data is not None else envelope.model_dump(mode="json")
    if bus.eager:
        for spec in specs:
            bus.app.tasks[spec.task_name].apply_async(
                kwargs={"envelope": data},
                task_id=handler_task_id(envelope.id, spec.task_name),
                **tracing.apply_options(),
            )
        return len(specs)
    raw = raw if raw is not None else json.dumps(data, separators=(",", ":"))
    queue = bus.topology.handler_queue(consumer)
    priority = PRIORITY_VALUES[envelope.priority]
    key = priority_list(queue, priority)
    pipe = bus.redis.pipeline(transaction=False)
    for spec in specs:
        task_id = handler_task_id(envelope.id, spec.task_name)
        pipe.lpush(key, task_message(bus, spec.task_name, task_id, data, raw, queue, priority))
    wake(pipe, queue)
    bus.replica_acks.execute(pipe)
    return len(specs)
