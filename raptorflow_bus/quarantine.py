"""Where a message that no handler may run on goes: the dead-letter queue, with
its raw body and the reason, so nothing that reached a queue vanishes and no
handler ever sees invalid data. Celery's own answer (log it, ack it, gone) is
what the fault suite found for a pickle body, an unknown task name and an
oversized message; a worker must also live on through all of them."""

from __future__ import annotations

import json
import logging
import uuid
from typing import TYPE_CHECKING, Any

from raptorflow_bus.deadletter import DeadLetter
from raptorflow_bus.envelope import Envelope, utcnow
from raptorflow_bus.logs import log

if TYPE_CHECKING:
    from raptorflow_bus.bus import Bus

DISPATCH = "<dispatch>"
RAW_BODY_LIMIT = 65_536
# A handler task's body is the envelope plus Celery's small wrapper.
TASK_BODY_SLACK = 4_096


def raw_text(body: Any) -> str:
    if isinstance(body, bytes):
        return body.decode("utf-8", errors="replace")
    return body if isinstance(body, str) else json.dumps(body, default=str)


def quarantine(
    bus: Bus,
    guild: str,
    reason: str,
    error_type: str,
    *,
    body: Any = None,
    envelope: Envelope | None = None,
    handler: str = DISPATCH,
    key: str | None = None,
) -> DeadLetter:
    """Dead-letter a message that must not run; returns the letter. ``key`` names
    the message for good (the event hop passes its delivery tag): the same
    message rejected again after a redelivery replaces its letter."""
    now = utcnow()
    letter = DeadLetter(
        id=f"rejected-{guild}-{key or uuid.uuid4().hex}",
        envelope=envelope,
        raw_body=None if body is None else raw_text(body)[:RAW_BODY_LIMIT],
        handler=handler,
        guild=guild,
        exception_type=error_type,
        message=reason[:4_000],
        traceback="",
        attempts=1,
        first_failed_at=now,
        last_failed_at=now,
    )
    bus.store.dlq_put(letter, bus.topology.dlq_capacity)
    bus.store.incr({("dispatch", "rejected"): 1})
    log(
        logging.ERROR,
        f"rejected a message on {guild!r} ({error_type}: {reason[:200]}); dead-lettered as "
        f"{letter.id}",
        envelope=envelope,
    )
    return letter


def oversized(bus: Bus, body: Any, slack: int = 0) -> str | None:
    """The reason ``body`` is over the bus's size limit, or None."""
    size = len(body) if isinstance(body, bytes | str) else 0
    limit = bus.settings.max_payload_bytes + slack
    return f"message body is {size} bytes, over the limit of {limit}" if size > limit else None
