"""Errors the bus raises. Every one derives from ``BusError`` so callers can catch
the whole family; the ones caused by a bad value also derive from ``ValueError``
(or ``LookupError``) so generic validation code keeps working."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from raptorflow_bus.envelope import Envelope


class BusError(Exception):
    """Base of every error the bus raises on bad input, bad configuration or outage."""


class InvalidEventType(BusError, ValueError):
    """The event type is not a valid dotted name (empty, wildcard, bad characters)."""


class UnknownEventType(BusError, LookupError):
    """The event type is not in the catalogue."""

    def __init__(self, event_type: str, suggestions: list[str]) -> None:
        hint = f"; did you mean {', '.join(repr(s) for s in suggestions)}?" if suggestions else ""
        super().__init__(f"unknown event type {event_type!r}{hint}")
        self.event_type = event_type
        self.suggestions = suggestions


class InvalidPayload(BusError, ValueError):
    """The payload does not validate against its event's model."""


class InvalidEnvelope(BusError, ValueError):
    """An envelope option (priority, ids, expiry) is invalid."""


class PayloadTooLarge(BusError, ValueError):
    """The serialized envelope is larger than the configured limit."""


class MissingWorkspace(BusError, ValueError):
    """A workspace-scoped event was emitted with no workspace_id (argument or context)."""


class Unroutable(BusError):
    """No queue is bound to the event's routing key: publishing would silently drop it."""


class Backpressure(BusError):
    """A queue the event must reach is full; the event was published to no queue."""

    def __init__(self, queue: str, depth: int, limit: int) -> None:
        super().__init__(
            f"queue {queue!r} is full ({depth} messages, limit {limit}); event not published"
        )
        self.queue = queue
        self.depth = depth
        self.limit = limit


class BrokerUnavailable(BusError):
    """The broker could not be reached; nothing was published."""


class BrokerOutOfMemory(BrokerUnavailable):
    """The broker is at ``maxmemory`` with ``noeviction`` and refused the write;
    the publish script's first write failed, so no queue got the event."""


class NotReplicated(BrokerUnavailable):
    """Fewer replicas than ``RAPTORBUS_MIN_REPLICA_ACKS`` confirmed the write in
    time. The master may hold it, but a failover could lose it, so it does not
    count as published: the emit spools (a copy that did land becomes a counted
    duplicate when the outbox drains). ``replies`` are the master's replies to
    the unconfirmed writes, when it sent them."""

    def __init__(self, message: str, replies: list[Any] | None = None) -> None:
        super().__init__(message)
        self.replies = replies or []


class OutboxUnavailable(BrokerUnavailable):
    """The broker could not be reached and the local outbox could not store the
    events either (disk full, permissions): nothing was accepted."""


class BatchInterrupted(BusError):
    """A batch too big for one script call was split, and the broker failed
    after its first calls ran: its first ``published`` events are in their
    queues, the next ``uncertain`` may or may not be (no reply came), and the
    rest are not. Unlike every other error here, this one does not mean that
    nothing was published. ``cause`` is the broker error. ``emit_many`` raises
    it only in strict mode (``envelopes`` then says which events are which);
    with the outbox on, the events after the published ones are spooled."""

    def __init__(self, published: int, uncertain: int, total: int, cause: BaseException) -> None:
        super().__init__(
            f"batch interrupted: the first {published} of {total} events were published, "
            f"{uncertain} more may have been, the rest were not: {cause}"
        )
        self.published = published
        self.uncertain = uncertain
        self.total = total
        self.cause = cause
        self.envelopes: list[Envelope] = []

    @property
    def published_envelopes(self) -> list[Envelope]:
        return self.envelopes[: self.published]

    @property
    def unpublished_envelopes(self) -> list[Envelope]:
        """The events not known to be published (the uncertain ones included)."""
        return self.envelopes[self.published :]


class ConfigurationError(BusError, ValueError):
    """The bus or routing configuration is inconsistent."""


class UnknownConsumer(BusError, LookupError):
    """A guild or consumer name that routing.py does not declare."""


class DeadLetterNotFound(BusError, LookupError):
    """No dead letter with that id."""


class HandlerError(BusError):
    """A handler registration is invalid (duplicate name, bad signature)."""


class InvalidCursor(BusError, ValueError):
    """A dead-letter page cursor that this bus did not hand out (or was altered)."""
