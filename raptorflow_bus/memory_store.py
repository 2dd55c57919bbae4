"""The in-process ``Store`` for eager mode: same contract as Redis, no server."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterable

from raptorflow_bus.deadletter import DeadLetter
from raptorflow_bus.dlq_groups import GroupPosition, GroupSummary
from raptorflow_bus.memory_groups import MemoryGroups
from raptorflow_bus.store import Counts, Position


class MemoryStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._done: dict[str, float] = {}
        self._counters: Counter[tuple[str, str]] = Counter()
        self._dlq: dict[str, DeadLetter] = {}
        self._positions: dict[str, Position] = {}
        self._groups = MemoryGroups()

    def claim(self, task_id: str, counts: Counts, duplicate_counts: Counts) -> bool:
        with self._lock:
            expires = self._done.get(task_id)
            done = expires is not None and expires > time.monotonic()
            self._counters.update(duplicate_counts if done else counts)
            return not done

    def finish(self, task_id: str, ttl_seconds: int, counts: Counts) -> None:
        with self._lock:
            self._done[task_id] = time.monotonic() + ttl_seconds
            self._counters.update(counts)

    def incr(self, counts: Counts) -> None:
        with self._lock:
            self._counters.update(counts)

    def counters(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self._counters)

    def dlq_put(self, letter: DeadLetter, capacity: int) -> list[str]:
        with self._lock:
            self._dlq.pop(letter.id, None)
            self._dlq[letter.id] = letter
            # Strictly increasing, so position order is the dict's insertion
            # order that eviction and ``dlq_all`` follow.
            last = max((p[0] for p in self._positions.values()), default=0.0)
            self._positions.pop(letter.id, None)
            self._positions[letter.id] = (max(time.time(), last + 1e-6), letter.id)
            self._groups.add(letter, self._positions[letter.id])
            evicted = []
            while len(self._dlq) > capacity:
                oldest = next(iter(self._dlq))
                del self._dlq[oldest]
                del self._positions[oldest]
                self._groups.drop(oldest)
                evicted.append(oldest)
            if evicted:
                self._counters[("dlq", "evicted")] += len(evicted)
            return evicted

    def dlq_get(self, letter_id: str) -> DeadLetter | None:
        with self._lock:
            return self._dlq.get(letter_id)

    def dlq_all(self) -> list[DeadLetter]:
        with self._lock:
            return list(self._dlq.values())

    def dlq_page(self, after: Position | None, count: int) -> list[tuple[Position, DeadLetter]]:
        with self._lock:
            later = sorted(p for p in self._positions.values() if after is None or p > after)
            return [(p, self._dlq[p[1]]) for p in later[:count]]

    def dlq_remove(self, letter_ids: Iterable[str]) -> int:
        with self._lock:
            removed = 0
            for letter_id in letter_ids:
                self._positions.pop(letter_id, None)
                self._groups.drop(letter_id)
                removed += self._dlq.pop(letter_id, None) is not None
            return removed

    def dlq_groups(
        self, workspace: str | None, after: GroupPosition | None, count: int
    ) -> list[tuple[GroupPosition, GroupSummary]]:
        with self._lock:
            return self._groups.page(workspace, after, count)

    def dlq_group(self, group_id: str, workspace: str | None) -> GroupSummary | None:
        with self._lock:
            return self._groups.summary(group_id, workspace)

    def dlq_group_page(
        self, group_id: str, workspace: str | None, after: Position | None, count: int
    ) -> list[tuple[Position, DeadLetter]]:
        with self._lock:
            positions = self._groups.members_after(group_id, workspace, after, count)
            return [(p, self._dlq[p[1]]) for p in positions]

    def dlq_count(self) -> int:
        with self._lock:
            return len(self._dlq)

    def clear(self) -> None:
        with self._lock:
            self._done.clear()
            self._counters.clear()
            self._dlq.clear()
            self._positions.clear()
            self._groups.clear()
