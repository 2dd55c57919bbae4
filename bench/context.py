"""What every section of a run shares: the broker, a private home, the sizes,
the results, and the few helpers to empty the broker and wait for handler marks."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis

from bench import marks
from bench.report import Results
from bench.workers import Process

DEFAULT_EVENTS = 3000
QUICK_EVENTS = 200


@dataclass(frozen=True)
class Sizes:
    """How much each section does. ``events`` scales the rest; ``--quick`` is for
    a smoke test (every figure produced, none of them meaningful)."""

    events: int
    rounds: int
    batch: int
    concurrency: tuple[int, ...]
    latency_samples: int
    rate_seconds: float
    fanout_events: int
    fanout_widths: tuple[int, ...]
    work_events: int
    idle_seconds: float
    settle_seconds: float

    @classmethod
    def for_run(cls, events: int | None, quick: bool) -> Sizes:
        n = events or (QUICK_EVENTS if quick else DEFAULT_EVENTS)
        if quick:
            return cls(
                events=n,
                rounds=1,
                batch=100,
                concurrency=(1, 10, 100),
                latency_samples=20,
                rate_seconds=0.5,
                fanout_events=max(20, n // 4),
                fanout_widths=(1, 2, 5, 10, 50),
                work_events=max(20, n // 4),
                idle_seconds=1.0,
                settle_seconds=0.5,
            )
        return cls(
            events=n,
            rounds=3,
            batch=1000,
            concurrency=(1, 10, 100),
            latency_samples=max(50, min(500, n // 10)),
            rate_seconds=5.0,
            fanout_events=max(100, n // 3),
            fanout_widths=(1, 2, 5, 10, 50),
            work_events=max(100, n // 3),
            idle_seconds=10.0,
            settle_seconds=3.0,
        )


class WorkerFailed(RuntimeError):
    pass


@dataclass
class Context:
    url: str
    home: Path
    sizes: Sizes
    results: Results = field(default_factory=Results)
    # Plain Celery's solo drain rate, measured by ``drain`` (or by ``latency``
    # itself when drain is not run); the fixed latency rates are fractions of it.
    plain_capacity: float | None = None
    _client: redis.Redis[bytes] | None = None

    @property
    def client(self) -> redis.Redis[bytes]:
        """The bench's own connection: setup, marks and counters, never the
        thing measured."""
        if self._client is None:
            self._client = redis.Redis.from_url(self.url, socket_timeout=30)
        return self._client

    def fresh(self) -> None:
        """An empty broker: no event, mark, binding or counter of an earlier run."""
        self.client.flushdb()

    def log(self, name: str) -> Path:
        return self.home / "logs" / f"{name}.log"

    def mark_count(self) -> int:
        return int(self.client.llen(marks.MARKS_KEY))

    def read_marks(self) -> list[marks.Mark]:
        return marks.parse(self.client.lrange(marks.MARKS_KEY, 0, -1))

    def wait_marks(
        self,
        n: int,
        timeout: float,
        procs: Sequence[Process] = (),
        interval: float = 0.05,
        on_poll: Callable[[], None] | None = None,
    ) -> None:
        """Until ``n`` handler runs have recorded their start. One LLEN per
        ``interval`` (both sides pay the same); a worker that died or a
        deadline that passed raises with the worker's log."""
        deadline = time.monotonic() + timeout
        while True:
            if on_poll is not None:
                on_poll()
            if self.mark_count() >= n:
                return
            for proc in procs:
                if not proc.alive():
                    raise WorkerFailed(f"{proc.name} exited:\n{proc.tail()}")
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {p.name}\n{p.tail()}" for p in procs)
                raise WorkerFailed(
                    f"{self.mark_count()} of {n} handler runs after {timeout:.0f}s\n{logs}"
                )
            time.sleep(interval)

    def take_mark(self, timeout: float, procs: Sequence[Process] = ()) -> marks.Mark:
        """The next mark, waiting for it without polling (BLPOP)."""
        deadline = time.monotonic() + timeout
        while True:
            item = self.client.blpop([marks.MARKS_KEY], timeout=1)
            if item is not None:
                return marks.parse([item[1]])[0]
            for proc in procs:
                if not proc.alive():
                    raise WorkerFailed(f"{proc.name} exited:\n{proc.tail()}")
            if time.monotonic() > deadline:
                raise WorkerFailed(f"no handler run within {timeout:.0f}s")

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
