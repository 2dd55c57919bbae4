"""What a send did: published, or accepted into the local outbox."""

from __future__ import annotations

from typing import NamedTuple

from raptorflow_bus.envelope import Envelope


class Sent(NamedTuple):
    """What ``Bus.send`` did: ``spooled`` is True when the event was accepted into
    the local outbox (the broker was unreachable, or this bus's earlier spooled
    events had not drained yet) rather than published to its queues."""

    envelope: Envelope
    spooled: bool


class SentBatch(NamedTuple):
    """What ``Bus.send_many`` did. Its first ``published`` events are in their
    queues, the rest in the outbox (``spooled`` is True when any are): the whole
    batch, or none of it, unless a batch split into several calls met a broker
    failure between two of them (``Bus.send_many``)."""

    envelopes: list[Envelope]
    spooled: bool
    published: int
