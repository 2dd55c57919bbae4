"""Where the bus keeps its own state: dedup records, counters and dead letters.

Two implementations with one contract (tests run against both): ``MemoryStore``
for eager mode, ``RedisStore`` for real workers, so every process of a
deployment reports the same counters and sees the same dead-letter queue."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from raptorflow_bus.deadletter import DeadLetter
from raptorflow_bus.dlq_groups import GroupPosition, GroupSummary

Counts = Mapping[tuple[str, str], int]
# A dead letter's place in the queue: (when it was stored, in unix seconds; its
# id). Letters are ordered by it, oldest first, and a page resumes after one.
Position = tuple[float, str]


class Store(Protocol):
    def claim(self, task_id: str, counts: Counts, duplicate_counts: Counts) -> bool:
        """Whether a handler run may start: False (and ``duplicate_counts`` added)
        when ``task_id`` already succeeded; else ``counts`` are added. One round trip."""
        ...

    def finish(self, task_id: str, ttl_seconds: int, counts: Counts) -> None:
        """Record ``task_id`` as done (for ``ttl_seconds``) and add ``counts``."""
        ...

    def incr(self, counts: Counts) -> None: ...

    def counters(self) -> dict[tuple[str, str], int]: ...

    def dlq_put(self, letter: DeadLetter, capacity: int) -> list[str]:
        """Store or replace ``letter``; return the ids evicted to stay within capacity."""
        ...

    def dlq_get(self, letter_id: str) -> DeadLetter | None: ...

    def dlq_all(self) -> list[DeadLetter]:
        """Oldest first."""
        ...

    def dlq_page(self, after: Position | None, count: int) -> list[tuple[Position, DeadLetter]]:
        """Up to ``count`` letters positioned strictly after ``after``, oldest
        first, each with its position: a bounded read, so a caller can walk a
        queue of 50,000 letters without holding it all. Letters stored or
        replaced after ``after`` was read come later in the walk."""
        ...

    def dlq_remove(self, letter_ids: Iterable[str]) -> int:
        """Remove letters (and take them out of their groups); how many were there."""
        ...

    def dlq_groups(
        self, workspace: str | None, after: GroupPosition | None, count: int
    ) -> list[tuple[GroupPosition, GroupSummary]]:
        """Up to ``count`` failure groups after ``after``, last seen first, each
        summarised over every workspace (``workspace`` None) or over that one
        only. Reads the groups' aggregates, not their letters."""
        ...

    def dlq_group(self, group_id: str, workspace: str | None) -> GroupSummary | None: ...

    def dlq_group_page(
        self, group_id: str, workspace: str | None, after: Position | None, count: int
    ) -> list[tuple[Position, DeadLetter]]:
        """``dlq_page`` over one group's letters (of one workspace, or all)."""
        ...

    def dlq_count(self) -> int: ...

    def clear(self) -> None: ...
