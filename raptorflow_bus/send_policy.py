"""Where an accepted event goes, the broker or the outbox: the rules that
``Bus._send`` (emit, emit_many) and the async group commit (publish) share.

Spooled events of this bus go first: while any wait, new ones queue behind
them in the outbox instead of overtaking them. While the breaker is open the
broker is not tried at all, so an emit costs one local write. A broker that
cannot take the events (unreachable, timed out, out of memory, replicas
missing) gets them spooled; a timeout is ambiguous (the broker may have
published before it went silent), and the spooled copy then becomes a counted
duplicate. Strict mode (no relay) raises instead of spooling.

Every step that spools writes SQLite with an fsync; the async path runs those
on a thread, and asks ``may_spool_first`` (no lock, no I/O) before it does."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from raptorflow_bus.breaker import Breaker
from raptorflow_bus.errors import BatchInterrupted, BrokerUnavailable
from raptorflow_bus.logs import log, logger

if TYPE_CHECKING:
    from raptorflow_bus.publisher import Prepared
    from raptorflow_bus.relay import Relay

UNREACHABLE = "broker unreachable"
BEHIND = "behind this bus's earlier spooled events"


class SendPolicy:
    def __init__(self, relay: Relay | None, breaker: Breaker) -> None:
        self.relay = relay
        self.breaker = breaker

    @property
    def strict(self) -> bool:
        return self.relay is None

    def may_spool_first(self) -> bool:
        """Whether ``spool_first`` could spool now (the breaker is open, or this
        bus's spooled events wait). Lock-free; a False here is what
        ``spool_first`` would find too, short of a race it may lose anyway."""
        relay = self.relay
        return relay is not None and (relay.behind or not self.breaker.allow())

    def spool_first(self, prepared: Sequence[Prepared]) -> bool:
        """Spool ``prepared`` without trying the broker, if the breaker is open
        or this bus's spooled events have not drained; True when spooled."""
        relay = self.relay
        if relay is None:
            return False
        if not self.breaker.allow():
            relay.spool(prepared)
            log_spooled(prepared, UNREACHABLE)
            return True
        if relay.spool_if_behind(prepared):
            log_spooled(prepared, BEHIND)
            return True
        return False

    def unreachable(self, prepared: Sequence[Prepared], exc: BrokerUnavailable) -> None:
        """The broker could not take ``prepared``: spool them, or raise ``exc``
        in strict mode."""
        relay = self.relay
        if relay is None:
            raise exc
        self.breaker.failure(str(exc))
        relay.spool(prepared)
        log_spooled(prepared, UNREACHABLE)

    def interrupted(self, prepared: Sequence[Prepared], exc: BatchInterrupted) -> int:
        """A split batch whose first ``exc.published`` events were published:
        spool the rest and return how many; strict mode raises ``exc``, which
        then lists the envelopes."""
        exc.envelopes = [envelope for envelope, _ in prepared]
        relay = self.relay
        if relay is None:
            raise exc
        self.breaker.failure(str(exc.cause))
        log_published(prepared[: exc.published])
        rest = prepared[exc.published :]
        relay.spool(rest)
        log_spooled(rest, UNREACHABLE)
        return len(rest)

    def answered(self) -> None:
        """The broker answered: it published, or refused (``Backpressure``)."""
        if self.relay is not None:
            self.breaker.success()


def log_published(prepared: Sequence[Prepared]) -> None:
    if not logger.isEnabledFor(logging.INFO):
        return
    for envelope, _ in prepared:
        log(
            logging.INFO,
            f"Publishing event {envelope.type} to {envelope.routing_key}",
            envelope=envelope,
            event_id=envelope.id,
        )


def log_spooled(prepared: Sequence[Prepared], reason: str) -> None:
    for envelope, _ in prepared:
        log(
            logging.WARNING,
            f"spooled event {envelope.type} to the outbox ({reason})",
            envelope=envelope,
            event_id=envelope.id,
        )
