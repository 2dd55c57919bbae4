"""A fault scenario's stage: a broker redis-server it may SIGKILL, pause and
restart, a second redis-server as the ledger the handlers write to (so the
broker's faults cannot touch the evidence), a bus in this process emitting at
a fixed rate, and the guild's workers. Everything started is stopped on the
way out, whatever happened."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from raptorflow_bus import Bus, Envelope, Settings
from raptorflow_bus.queues import UNACKED_KEY, is_idle
from raptorflow_bus.topology import PRIORITY_STEPS, priority_list
from tests.faults.handlers import DONE, FIXED, LEDGER_URL_ENV, ORDER, PIDS, RUNS, SLEEP_ENV, TRACE
from tests.faults.processes import GUILD, ROOT, RedisServer, Worker, wait_for
from tests.faults.table import Row
from tests.netproxy import SilentProxy

HANDLERS_MODULE = "tests.faults.handlers"
READY_SECONDS = 90.0
SETTLE_SECONDS = 45.0


class Ledger:
    """What the handlers wrote: runs started and finished, per event id."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client = redis.Redis.from_url(url, socket_timeout=10)

    def _counts(self, key: str, ids: list[str]) -> dict[str, int]:
        if not ids:
            return {}
        values = self.client.hmget(key, ids)
        return {i: int(v or 0) for i, v in zip(ids, values, strict=True)}

    def runs(self, ids: list[str]) -> dict[str, int]:
        return self._counts(RUNS, ids)

    def done(self, ids: list[str]) -> dict[str, int]:
        return self._counts(DONE, ids)

    def pids(self, ids: list[str]) -> dict[str, int]:
        return {i: n for i, n in self._counts(PIDS, ids).items() if n}

    def order(self) -> list[str]:
        return [i.decode() for i in self.client.lrange(ORDER, 0, -1)]

    def trace(self, ids: list[str]) -> dict[str, list[str]]:
        """Each of ``ids``' starts and finishes, as "<start|done> <pid> <time>"."""
        wanted: dict[str, list[str]] = {i: [] for i in ids}
        for entry in self.client.lrange(TRACE, 0, -1):
            event_id, _, rest = entry.decode().partition(" ")
            if event_id in wanted:
                wanted[event_id].append(rest)
        return wanted

    def total_runs(self) -> int:
        return sum(int(v) for v in self.client.hvals(RUNS))

    def fix(self) -> None:
        self.client.set(FIXED, b"1")

    def close(self) -> None:
        self.client.close()


@dataclass
class Emitted:
    started: float
    ended: float
    envelope: Envelope | None = None
    spooled: bool = False
    error: BaseException | None = None


class Emitter:
    """Emits one event type at a fixed rate, as an API would, and keeps every
    outcome with its start and end time. ``Bus.send`` is ``emit`` that also says
    whether the event was spooled to the outbox rather than published."""

    def __init__(self, bus: Bus, event_type: str, payload: Any, **options: Any) -> None:
        self.bus = bus
        self.event_type = event_type
        self.payload = payload
        self.options = options
        self.records: list[Emitted] = []
        self._thread: threading.Thread | None = None

    def run(self, count: int, rate: float) -> Emitter:
        t0 = time.monotonic()
        for n in range(count):
            delay = t0 + n / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            started = time.monotonic()
            try:
                sent = self.bus.send(self.event_type, self.payload, **self.options)
                self.records.append(
                    Emitted(started, time.monotonic(), envelope=sent.envelope, spooled=sent.spooled)
                )
            except Exception as exc:
                self.records.append(Emitted(started, time.monotonic(), error=exc))
        return self

    def start(self, count: int, rate: float) -> Emitter:
        self._thread = threading.Thread(target=self.run, args=(count, rate), daemon=True)
        self._thread.start()
        return self

    def join(self, seconds: float) -> bool:
        assert self._thread is not None
        self._thread.join(seconds)
        return not self._thread.is_alive()

    @property
    def sent(self) -> int:
        return len(self.records)

    @property
    def accepted(self) -> list[Envelope]:
        return [r.envelope for r in self.records if r.envelope is not None]

    @property
    def accepted_ids(self) -> list[str]:
        return [e.id for e in self.accepted]

    @property
    def spooled(self) -> int:
        return sum(r.spooled for r in self.records)

    @property
    def errors(self) -> list[BaseException]:
        return [r.error for r in self.records if r.error is not None]


class Stage:
    """Broker, ledger, a bus in this process and the workers of one scenario."""

    def __init__(self, workdir: Path, broker: RedisServer, ledger: Ledger, reclaim: float) -> None:
        self.workdir = workdir
        self.broker = broker
        self.ledger = ledger
        self.reclaim_seconds = reclaim
        self.workers: list[Worker] = []
        self.proxies: list[SilentProxy] = []
        self.buses: list[Bus] = []
        self.bus = self.bus_at(broker.url)

    def bus_at(self, url: str) -> Bus:
        """A connected bus of this host (same home, so the same outbox file) on
        ``url``: the broker itself, or a proxy to it."""
        bus = Bus(Settings(broker_url=url, home=self.workdir / "home")).connect()
        self.buses.append(bus)
        return bus

    def proxy(self) -> SilentProxy:
        """A loopback proxy to the broker; closed after the workers and buses."""
        proxy = SilentProxy(self.broker.port)
        self.proxies.append(proxy)
        return proxy

    def env(self, sleep: float = 0.0, broker_url: str | None = None) -> dict[str, str]:
        """The environment of every process the scenario starts: same broker
        (or a proxy to it), same host home (so the same outbox), fast retries,
        short reclaim."""
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        return {
            **os.environ,
            "PYTHONPATH": path,
            "RAPTORBUS_BROKER_URL": broker_url or self.broker.url,
            "RAPTORBUS_HOME": str(self.workdir / "home"),
            "RAPTORBUS_HANDLERS": HANDLERS_MODULE,
            "RAPTORBUS_RETRY_BASE_SECONDS": "0.05",
            "RAPTORBUS_RECLAIM_SECONDS": str(self.reclaim_seconds),
            # Exact counts: no bus.health events of the workers' own.
            "RAPTORBUS_HEALTH_EVENT_SECONDS": "0",
            LEDGER_URL_ENV: self.ledger.url,
            SLEEP_ENV: str(sleep),
        }

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``raptorbus ...`` as an operator runs it on this host."""
        return subprocess.run(
            [sys.executable, "-m", "raptorflow_bus.cli", *args],
            cwd=ROOT,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=120,
        )

    def worker(
        self,
        name: str,
        *,
        pool: str = "prefork",
        concurrency: int = 2,
        sleep: float = 0.0,
        broker_url: str | None = None,
    ) -> Worker:
        env = self.env(sleep, broker_url)
        worker = Worker(self.workdir, env, name, pool, concurrency).start()
        self.workers.append(worker)
        return worker

    def ready(self, worker: Worker) -> Worker:
        """Wait for the worker to answer a ping; a worker that never does is a
        broken setup, not a scenario result."""

        def pong() -> bool:
            replies = self.bus.app.control.ping(destination=[worker.hostname], timeout=0.5)
            return any(worker.hostname in reply for reply in replies or [])

        if wait_for(lambda: pong() or not worker.alive, READY_SECONDS) is None or not worker.alive:
            raise RuntimeError(f"worker {worker.hostname} did not start:\n{worker.tail()}")
        return worker

    def idle(self) -> bool:
        return is_idle(self.bus, [GUILD])

    def settle(self, ids: list[str], seconds: float = SETTLE_SECONDS) -> float | None:
        """Seconds until every id's handler finished and nothing is queued or
        unacked for the guild; None if that did not happen in time."""
        return wait_for(lambda: self.settled(ids), seconds)

    def settled(self, ids: list[str]) -> bool:
        return all(self.ledger.done(ids).values()) and self.idle()

    def locate(self, ids: list[str]) -> dict[str, int]:
        """Where events that never completed are: still queued, held unacked,
        or nowhere in Redis (then only the outbox, counted in its depth, can
        still hold them). Tells a stalled recovery from a loss."""
        topo = self.bus.topology
        lists = [
            priority_list(q, step)
            for q in (topo.event_queue(GUILD), topo.handler_queue(GUILD))
            for step in PRIORITY_STEPS
        ]
        queued = b"".join(m for key in lists for m in self.bus.redis.lrange(key, 0, -1))
        unacked = b"".join(self.bus.redis.hvals(UNACKED_KEY))
        found = {"queued": 0, "unacked": 0, "elsewhere": 0}
        for event_id in ids:
            raw = event_id.encode()
            place = "queued" if raw in queued else "unacked" if raw in unacked else "elsewhere"
            found[place] += 1
        return {**found, "outbox_depth": int(self.bus.outbox_stats()["depth"])}

    def dead_letter_ids(self) -> set[str]:
        return {d.envelope.id for d in self.bus.dlq.list() if d.envelope is not None}

    def row(
        self,
        scenario: str,
        sent: int,
        accepted: list[str],
        spooled: int,
        recover_s: float | None,
        dead: int | None = None,
        **facts: Any,
    ) -> Row:
        done = self.ledger.done(accepted)
        dead_ids = self.dead_letter_ids()
        missing = [i for i, n in done.items() if n == 0 and i not in dead_ids]
        if missing:
            facts = {**facts, "lost_in": self.locate(missing)}
        doubled = [i for i, n in done.items() if n >= 2]
        if doubled:
            facts = {**facts, "twice_runs": self.ledger.trace(doubled[:5])}
        return Row(
            scenario=scenario,
            sent=sent,
            accepted=len(accepted),
            spooled=spooled,
            once=sum(n == 1 for n in done.values()),
            twice=sum(n >= 2 for n in done.values()),
            lost=len(missing),
            dead=len(dead_ids) if dead is None else dead,
            recover_s=recover_s,
            facts=facts,
        )

    def close(self) -> None:
        for worker in reversed(self.workers):
            worker.stop()
        for bus in reversed(self.buses):
            bus.close()
        for proxy in self.proxies:
            proxy.close()


@contextlib.contextmanager
def stage(workdir: Path, *, reclaim: float = 3.0) -> Iterator[Stage]:
    with contextlib.ExitStack() as stack:
        broker = stack.enter_context(RedisServer(workdir / "broker"))
        ledger_server = stack.enter_context(RedisServer(workdir / "ledger"))
        ledger = Ledger(ledger_server.url)
        stack.callback(ledger.close)
        scene = Stage(workdir, broker, ledger, reclaim)
        stack.callback(scene.close)
        yield scene
