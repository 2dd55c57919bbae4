"""Deliveries this process holds, and the sweep that hands back those it no
longer does after a lost connection (the transport's channels and the event
hop are the holders)."""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any, Protocol

import redis

from raptorflow_bus import keys
from raptorflow_bus.reaper import Reaper

CONNECTION_ERRORS = (redis.ConnectionError, redis.TimeoutError, OSError)


class Holder(Protocol):
    """Something in this process that holds deliveries recorded against ``owner``."""

    owner: str | None

    def held_tags(self) -> list[str]: ...


#: A lost connection can orphan deliveries this process owns: those of a
#: channel that closed while Redis was away, and a pop whose reply never came
#: back (the script ran, the message is recorded against this worker, and
#: nobody holds it). Neither a reaper (this worker is alive) nor the channel
#: (it is gone) would ever hand them back, so the next holder of this process
#: that reaches Redis sweeps: every delivery recorded against its owner that no
#: holder of the process holds goes back to its queue. The holders are the open
#: channels and the guild worker's event hop (``raptorflow_bus.hop``). Process
#: state on purpose: nothing else outlives the connection.
HOLDERS: weakref.WeakSet[Holder] = weakref.WeakSet()
NEEDS_SWEEP: set[str] = set()


def sweep(client: Any, owner: str, priority_steps: Sequence[int], sep: str) -> int:
    """Put back every delivery recorded against ``owner`` that no holder of this
    process holds; returns how many went back."""
    NEEDS_SWEEP.discard(owner)
    try:
        recorded = {t.decode() for t in client.hkeys(keys.owned(owner))}
        held = {t for h in list(HOLDERS) if h.owner == owner for t in h.held_tags()}
        orphans = recorded - held
        if not orphans:
            return 0
        return Reaper(client, 0, priority_steps, sep).restore(owner, orphans)
    except CONNECTION_ERRORS:
        NEEDS_SWEEP.add(owner)
        raise
