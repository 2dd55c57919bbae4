"""Real worker processes, started as users start them: ``raptorbus worker
research`` for the bus and ``celery -A bench.plain_app worker -E`` for plain
Celery, each in a session of its own so that stopping it stops its pool
children too (only the processes this module started are ever signalled)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import TracebackType
from typing import Any

import redis

from bench import marks, plain_app

ROOT = Path(__file__).resolve().parents[1]
BUS_HANDLERS = "bench.noop_handlers"
HANDLERS_ENV = "RAPTORBUS_HANDLERS"


def worker_env(url: str, home: Path, **extra: str) -> dict[str, str]:
    """The environment of every process the bench starts: the broker, a private
    home (outbox, embedded-Redis files), the no-op handlers, and the repository
    root on PYTHONPATH so ``bench.*`` imports."""
    path = os.environ.get("PYTHONPATH", "")
    return {
        **os.environ,
        marks.URL_ENV: url,
        "RAPTORBUS_HOME": str(home),
        HANDLERS_ENV: BUS_HANDLERS,
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), path) if p),
        **extra,
    }


def pool_args(pool: str, concurrency: int) -> list[str]:
    return [f"--pool={pool}"] + ([] if pool == "solo" else [f"--concurrency={concurrency}"])


def bus_worker_argv(pool: str, concurrency: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "raptorflow_bus.cli",
        "worker",
        "research",
        *pool_args(pool, concurrency),
        "--loglevel=WARNING",
        "--hostname=bench-bus@%h",
    ]


def celery_worker_argv(pool: str, concurrency: int, transport: str | None = None) -> list[str]:
    """Stock Kombu, or ``transport``, each on its own queue and node name."""
    node = "bench-celery" if transport is None else "bench-celery-bus-transport"
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "bench.plain_app",
        "worker",
        "-E",
        *pool_args(pool, concurrency),
        f"--queues={plain_app.queue_for(transport)}",
        "--loglevel=WARNING",
        f"--hostname={node}@%h",
    ]


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) of one process so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def redis_cpu(client: redis.Redis[bytes]) -> float:
    """CPU seconds of the Redis server so far (``INFO cpu``)."""
    stats: dict[str, Any] = client.info("cpu")
    return float(stats["used_cpu_user"]) + float(stats["used_cpu_sys"])


class Process:
    """One started process tree; a context manager that always stops it."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} was not started"
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM to the process group (a warm shutdown for Celery), then SIGKILL."""
        if self.proc is None or self.proc.poll() is not None:
            self._reap_group()
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self._reap_group()

    def _reap_group(self) -> None:
        """Pool children left behind by a leader that died first."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self) -> Process:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
