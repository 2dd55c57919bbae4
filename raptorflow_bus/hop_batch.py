"""What the event hop makes of each event in a popped batch: its handler task
messages, or a dead letter with the reason it may not run.

Every event is checked on its own (``inbound``: size, content type, envelope,
catalogue, routing key), so one bad event in a batch is quarantined and acked
with the others and blocks nothing. The dead letter is written before the
batch's commit acks the event; a crash in between redelivers it, and the
letter, named by the delivery's tag, is written again in the same place."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import redis

from raptorflow_bus.dispatch import HandlerTasks, handler_tasks
from raptorflow_bus.errors import BrokerUnavailable
from raptorflow_bus.inbound import Rejected, accept, delivery, parse_body
from raptorflow_bus.logs import log
from raptorflow_bus.quarantine import oversized, quarantine

if TYPE_CHECKING:
    from raptorflow_bus.bus import Bus


@dataclass(frozen=True)
class Popped:
    """One event message as the pop script returned it."""

    consumer: str
    queue: str
    message: bytes
    tag: str


@dataclass
class Plan:
    """A batch's commit: every popped event (all are acked) and, per event, the
    handler tasks to write (none for a rejected event, or one no handler wants)."""

    popped: list[Popped] = field(default_factory=list)
    tasks: list[HandlerTasks | None] = field(default_factory=list)


def plan_batch(bus: Bus, batch: Sequence[Popped]) -> Plan:
    plan = Plan()
    for popped in batch:
        plan.popped.append(popped)
        plan.tasks.append(plan_event(bus, popped))
    return plan


def plan_event(bus: Bus, popped: Popped) -> HandlerTasks | None:
    """The event's handler tasks, or None once it is dead-lettered. Broker
    errors propagate (the batch is then handed back whole); anything else that
    goes wrong with one event dead-letters that event."""
    consumer, key = popped.consumer, popped.tag
    try:
        got = delivery(json.loads(popped.message))
        too_big = oversized(bus, got.body)
        if too_big:
            quarantine(bus, consumer, too_big, "PayloadTooLarge", body=got.body, key=key)
            return None
        body: Any = got.body
        try:
            body = got.decoded()
            data = parse_body(body)
            envelope = accept(bus, data, got.delivery_info)
        except Rejected as exc:
            quarantine(
                bus,
                consumer,
                exc.reason,
                exc.error_type,
                body=body,
                envelope=exc.envelope,
                key=key,
            )
            return None
        # The bus's own copies are JSON objects whose text is the envelope's.
        raw = got.body if isinstance(body, dict) else None
        return handler_tasks(
            bus, envelope, consumer, data, raw.decode() if isinstance(raw, bytes) else raw
        )
    except (redis.RedisError, BrokerUnavailable):
        raise
    except Exception as exc:
        log(logging.ERROR, f"cannot dispatch an event of {consumer!r}: {exc!r}")
        reason = f"the event hop could not dispatch it: {type(exc).__name__}: {exc}"
        quarantine(bus, consumer, reason, type(exc).__name__, body=popped.message, key=key)
        return None
