"""Where the bus keeps its own state: dedup records, counters and dead letters.

Two implementations with one contract (tests run against both): ``MemoryStore``
for eager mode, ``RedisStore`` for real workers, so every process of a
deployment reports the same counters and sees the same dead-letter queue."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from raptorflow_bus.deadletter import DeadLetter

Counts = Mapping[tuple[str, str], int]


class Store(Protocol):
    def is_done(self, task_id: str) -> bool: ...

    def mark_done(self, task_id: str, ttl_seconds: int) -> None: ...

    def incr(self, counts: Counts) -> None: ...

    def counters(self) -> dict[tuple[str, str], int]: ...

    def dlq_put(self, letter: DeadLetter, capacity: int) -> list[str]:
        """Store or replace ``letter``; return the ids evicted to stay within capacity."""
        ...

    def dlq_get(self, letter_id: str) -> DeadLetter | None: ...

    def dlq_all(self) -> list[DeadLetter]:
        """Oldest first."""
        ...

    def dlq_remove(self, letter_ids: Iterable[str]) -> int: ...

    def dlq_count(self) -> int: ...

    def clear(self) -> None: ...
