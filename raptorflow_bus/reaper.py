"""Handing a dead worker's deliveries back to their queues, within seconds.

Kombu on Redis brings an unacked message back only when ``visibility_timeout``
(an hour here) has passed, because it cannot tell a dead consumer from a slow
one. Every worker process here beats a heartbeat, and the pop that delivers a
message records it against that worker (``lua/pop.lua``), so a worker whose
heartbeat has lapsed is known to be dead and its deliveries can go back at
once. A live worker's deliveries are never touched, whatever their age, so a
long handler is not run twice. The visibility timeout stays as the backstop
for deliveries nobody owns (stock Kombu consumers).

Restoring is one Lua step per delivery that first deletes the unacked record,
so two reapers racing, or a reaper racing the owner's ack, restore it at most
once; a copy of a run that had already finished is absorbed by the done
record of its deterministic task id."""

from __future__ import annotations

import json
import logging
import time
from bisect import bisect
from collections.abc import Iterable, Sequence
from typing import Any

import redis

from raptorflow_bus import keys, scripts

logger = logging.getLogger("bus")


class Reaper:
    def __init__(
        self,
        client: redis.Redis[bytes],
        lapse_seconds: float,
        priority_steps: Sequence[int],
        sep: str,
    ) -> None:
        self.client = client
        self.lapse_seconds = lapse_seconds
        self._steps = sorted(priority_steps)
        self._sep = sep
        self._restore = scripts.register(client, "restore_delivery")
        self._forget = scripts.register(client, "forget_worker")

    def lapsed_workers(self, now: float | None = None) -> list[str]:
        cutoff = (time.time() if now is None else now) - self.lapse_seconds
        ids: list[bytes] = self.client.zrangebyscore(keys.HEARTBEATS, "-inf", cutoff)
        return [i.decode() for i in ids]

    def reap(self, now: float | None = None) -> int:
        """Restore the deliveries of every worker whose heartbeat has lapsed; returns
        how many went back."""
        now = time.time() if now is None else now
        restored = 0
        for worker in self.lapsed_workers(now):
            restored += self.restore(worker)
            self._forget(
                keys=[keys.HEARTBEATS, keys.owned(worker)],
                args=[worker, now - self.lapse_seconds],
            )
        return restored

    def restore(self, worker: str, tags: Iterable[str] | None = None) -> int:
        """Put ``worker``'s deliveries (all, or only ``tags``) back on their queues,
        unless they were acked meanwhile."""
        owned = keys.owned(worker)
        if tags is None:
            raw: dict[bytes, bytes] = self.client.hgetall(owned)
            pairs = [(t.decode(), q.decode()) for t, q in raw.items()]
        else:
            wanted = list(tags)
            queues = self.client.hmget(owned, wanted) if wanted else []
            pairs = [(t, q.decode()) for t, q in zip(wanted, queues, strict=True) if q]
        restored = 0
        for tag, queue in pairs:
            stored = self.client.hget(keys.UNACKED, tag)
            if stored is None:
                self.client.hdel(owned, tag)
                continue
            message = self._redelivered(stored)
            if message is None:
                logger.error(f"unacked delivery {tag} is unreadable; left for the backstop")
                continue
            body, priority = message
            target = self._priority_list(queue, priority)
            restored += int(
                self._restore(
                    keys=[keys.UNACKED, keys.UNACKED_INDEX, owned, target, keys.wake(queue)],
                    args=[tag, body],
                )
            )
        if restored:
            logger.warning(f"restored {restored} deliveries of worker {worker} to their queues")
        return restored

    @staticmethod
    def _redelivered(stored: bytes) -> tuple[str, int] | None:
        """The message of an unacked record, marked redelivered as Kombu's restore
        marks it, and its priority."""
        try:
            message: Any = json.loads(stored)[0]
        except (ValueError, TypeError, KeyError, IndexError):
            return None
        return redelivered(message)

    def _priority_list(self, queue: str, priority: int) -> str:
        return step_list(queue, priority, self._steps, self._sep)


def redelivered(message: Any) -> tuple[str, int] | None:
    """A Kombu message (parsed) marked redelivered as Kombu's restore marks it, as
    text, and its priority; None if it is not shaped like one."""
    try:
        message["headers"]["redelivered"] = True
        properties = message["properties"]
        properties["delivery_info"]["redelivered"] = True
        priority = int(properties.get("priority") or 0)
    except (ValueError, TypeError, KeyError, IndexError):
        return None
    return json.dumps(message), priority


def step_list(queue: str, priority: int, steps: Sequence[int], sep: str) -> str:
    """The list of ``queue`` a message of ``priority`` goes to (Kombu's rule:
    the highest step not above it; ``steps`` sorted)."""
    step = steps[max(bisect(steps, priority) - 1, 0)]
    return queue if step == 0 else f"{queue}{sep}{step}"
