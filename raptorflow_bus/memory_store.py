"""The in-process ``Store`` for eager mode: same contract as Redis, no server."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterable

from raptorflow_bus.deadletter import DeadLetter
from raptorflow_bus.store import Counts


class MemoryStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._done: dict[str, float] = {}
        self._counters: Counter[tuple[str, str]] = Counter()
        self._dlq: dict[str, DeadLetter] = {}

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
            evicted = []
            while len(self._dlq) > capacity:
                oldest = next(iter(self._dlq))
                del self._dlq[oldest]
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

    def dlq_remove(self, letter_ids: Iterable[str]) -> int:
        with self._lock:
            return sum(self._dlq.pop(i, None) is not None for i in letter_ids)

    def dlq_count(self) -> int:
        with self._lock:
            return len(self._dlq)

    def clear(self) -> None:
        with self._lock:
            self._done.clear()
            self._counters.clear()
            self._dlq.clear()
