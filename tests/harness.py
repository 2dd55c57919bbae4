"""One contract suite, two backends: the same test drives an eager bus or a bus on
a real Redis with a real Celery worker, and waits for the outcome in a way that
is instant in eager mode and bounded (never a timing assertion) on Redis."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celery.contrib.testing.worker import start_worker

from raptorflow_bus import Bus, Settings, Topology
from raptorflow_bus.queues import is_idle
from raptorflow_bus.testing import eager_bus
from raptorflow_bus.topology import PRIORITY_STEPS, priority_list
from raptorflow_bus.worker import make_event_step


def spawn_worker(
    url: str, log: Path, guild: str = "research", **env: str
) -> subprocess.Popen[bytes]:
    """``raptorbus worker <guild> --pool=solo`` as an operator starts it, with
    ``env`` (``RAPTORBUS_...`` settings) on top of this process's environment
    and its output appended to ``log``."""
    with log.open("a") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "raptorflow_bus.cli", "worker", guild, "--pool=solo"],
            env={**os.environ, "RAPTORBUS_BROKER_URL": url, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@contextmanager
def guild_worker(
    url: str, log: Path, guild: str = "research", **env: str
) -> Iterator[subprocess.Popen[bytes]]:
    """A worker that must stop warm (exit 0) when the block ends."""
    worker = spawn_worker(url, log, guild, **env)
    try:
        yield worker
    finally:
        worker.terminate()
        assert worker.wait(timeout=60) == 0, log.read_text()[-3000:]


FAST_RETRIES = {"raptorbus_retry_base_seconds": 0.02, "raptorbus_retry_cap_seconds": 0.2}


@dataclass
class Recorder:
    """Thread-safe log of handler calls: (handler label, payload, envelope)."""

    calls: list[tuple[str, Any, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, label: str, payload: Any, envelope: Any) -> None:
        with self.lock:
            self.calls.append((label, payload, envelope))

    def labels(self) -> list[str]:
        with self.lock:
            return [c[0] for c in self.calls]

    def count(self, label: str) -> int:
        return self.labels().count(label)

    def handler(self, label: str, fail_times: int = 0) -> Callable[..., None]:
        """A handler that records each call and fails its first ``fail_times`` calls."""

        def handle(payload: Any, envelope: Any) -> None:
            self.add(label, payload, envelope)
            if fail_times < 0 or self.count(label) <= fail_times:
                raise RuntimeError(f"{label} failed on purpose")

        handle.__name__ = label.replace(".", "_").replace("-", "_")
        return handle


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(0.02)


class EagerBackend:
    name = "eager"

    @contextmanager
    def bus(self, **kwargs: Any) -> Iterator[Bus]:
        kwargs.setdefault("celery_config", FAST_RETRIES)
        with eager_bus(**kwargs) as bus:
            yield bus

    @contextmanager
    def running(self, bus: Bus, **kwargs: Any) -> Iterator[None]:
        yield

    def settle(self, bus: Bus, predicate: Callable[[], bool] | None = None) -> None:
        if predicate is not None:
            assert predicate(), "eager outcome not reached"

    def queue_depths(self, bus: Bus) -> dict[str, int]:
        return {}


class RedisBackend:
    name = "redis"

    def __init__(self, url: str) -> None:
        self.url = url
        self.consumers: list[str] | None = None

    @contextmanager
    def bus(
        self,
        *,
        topology: Topology | None = None,
        settings: Settings | None = None,
        celery_config: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> Iterator[Bus]:
        config = {**FAST_RETRIES, **(celery_config or {})}
        base = settings or Settings()
        from dataclasses import replace

        bus = Bus(
            replace(base, broker_url=self.url, eager=False),
            topology=topology,
            celery_config=config,
            **kwargs,
        )
        bus.connect()
        bus.redis.flushdb()
        bus.declare_topology()
        try:
            yield bus
        finally:
            bus.close()

    @contextmanager
    def running(
        self,
        bus: Bus,
        consumers: Sequence[str] | None = None,
        concurrency: int = 4,
    ) -> Iterator[None]:
        names = list(consumers or bus.topology.consumers)
        self.consumers = names
        bus.app.steps["worker"].add(make_event_step(bus, names))
        with start_worker(
            bus.app,
            pool="threads",
            concurrency=concurrency,
            perform_ping_check=False,
            queues=[bus.topology.handler_queue(c) for c in names],
            loglevel="WARNING",
            shutdown_timeout=30,
        ):
            yield

    def queue_depths(self, bus: Bus) -> dict[str, int]:
        client = bus.redis
        return {
            q: sum(int(client.llen(priority_list(q, s))) for s in PRIORITY_STEPS)
            for q in bus.topology.all_queue_names()
        }

    def settle(self, bus: Bus, predicate: Callable[[], bool] | None = None) -> None:
        if predicate is not None:
            wait_until(predicate, what="expected outcome")
        wait_until(
            lambda: is_idle(bus, self.consumers) and is_idle(bus, self.consumers),
            what="queues to drain",
        )
