"""``raptorbus up``: the broker, one worker process per guild and Flower, kept
running. A worker that dies is restarted with backoff; Ctrl-C is a warm
shutdown (workers finish or requeue their tasks) and the embedded Redis stops
last, after every process that uses it."""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType

from raptorflow_bus.bus import Bus
from raptorflow_bus.embedded import EmbeddedRedis
from raptorflow_bus.errors import ConfigurationError
from raptorflow_bus.settings import Settings, mask_url

logger = logging.getLogger("bus")
MAX_RESTART_DELAY = 30.0


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    restart_at: float | None = None
    log: list[str] = field(default_factory=list)

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, env=self.env, stdin=subprocess.DEVNULL)
        self.restart_at = None

    def check(self, now: float) -> None:
        """Restart a dead child after an exponential delay."""
        if self.proc is None:
            return
        code = self.proc.poll()
        if code is None:
            return
        if self.restart_at is None:
            delay = min(MAX_RESTART_DELAY, 0.5 * 2**self.restarts)
            self.restart_at = now + delay
            print(
                f"[up] {self.name} exited with code {code}; restarting in {delay:.1f}s",
                flush=True,
            )
        elif now >= self.restart_at:
            self.restarts += 1
            self.start()
            print(f"[up] {self.name} restarted (restart #{self.restarts})", flush=True)

    def stop(self, timeout: float) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            print(f"[up] {self.name} did not stop in {timeout}s; killing", flush=True)
            self.proc.kill()
            self.proc.wait()


class Stop(Exception):
    pass


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise Stop


def wait_for_workers(
    bus: Bus, names: list[str], children: list[Child], timeout: float = 90.0
) -> bool:
    """Until every guild answers a ping; gives up early on a crash loop."""
    deadline = time.monotonic() + timeout
    wanted = {f"{n}@" for n in names}
    while time.monotonic() < deadline:
        for child in children:
            child.check(time.monotonic())
            if child.restarts > 3:
                print(f"[up] {child.name} keeps crashing; giving up", flush=True)
                return False
        replies = bus.app.control.ping(timeout=1.0) or []
        seen = {host.split("@")[0] + "@" for reply in replies for host in reply}
        if wanted <= seen:
            return True
    return False


API_TOKENS_ENV = "RAPTORFLOW_API_TOKENS"


def api_app_dir() -> Path:
    """Where ``examples/api.py`` is: the current directory, else the checkout
    this package runs from (an editable install)."""
    for root in (Path.cwd(), Path(__file__).resolve().parent.parent):
        if (root / "examples" / "api.py").is_file():
            return root
    raise ConfigurationError("raptorbus up --api needs examples/api.py: run it from the repository")


def api_child(args: argparse.Namespace, env: dict[str, str]) -> Child:
    """The example API under uvicorn, with an operator token if none is set
    (printed once, as Flower's generated login is)."""
    api_env = dict(env)
    if not api_env.get(API_TOKENS_ENV):
        token = secrets.token_urlsafe(24)
        api_env[API_TOKENS_ENV] = f"{token}=*"
        print(f"[up] API operator token (generated, shown once): {token}", flush=True)
    argv = [
        *(sys.executable, "-m", "uvicorn", "examples.api:create_app", "--factory"),
        *("--app-dir", str(api_app_dir()), "--host", args.api_host, "--port", str(args.api_port)),
    ]
    return Child("api", argv, api_env)


def run_up(args: argparse.Namespace) -> int:
    from raptorflow_bus.cli import flower_auth

    settings = Settings.from_env()
    embedded = None
    url = settings.broker_url
    if url is None:
        embedded = EmbeddedRedis(settings.home, settings.appendfsync)
        url = embedded.acquire()
        where = f"{mask_url(url)} (data in {settings.home})"
        print(f"[up] embedded redis-server at {where}", flush=True)
    env = {**os.environ, "RAPTORBUS_BROKER_URL": url}
    if args.demo and "RAPTORBUS_RETRY_BASE_SECONDS" not in env:
        env["RAPTORBUS_RETRY_BASE_SECONDS"] = "0.25"
    bus = Bus(replace(settings, broker_url=url)).connect()
    children: list[Child] = []
    guilds = list(bus.topology.consumers)
    for guild in guilds:
        argv = [
            sys.executable,
            "-m",
            "raptorflow_bus.cli",
            "worker",
            guild,
            f"--pool={args.pool}",
            f"--concurrency={args.concurrency}",
            "--loglevel=WARNING",
            f"--hostname={guild}@%h",
        ]
        children.append(Child(f"worker {guild}", argv, env))
    if not args.no_flower:
        flower_env = {**env, "FLOWER_BASIC_AUTH": flower_auth()}
        argv = [sys.executable, "-m", "raptorflow_bus.cli", "flower", f"--port={args.flower_port}"]
        children.append(Child("flower", argv, flower_env))
    if getattr(args, "api", False):
        children.append(api_child(args, env))
        print(f"[up] API at http://{args.api_host}:{args.api_port}", flush=True)
    previous = {s: signal.signal(s, _raise_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    code = 0
    try:
        for child in children:
            child.start()
        if not wait_for_workers(bus, guilds, children):
            print("[up] workers did not answer a ping within 90s", flush=True)
            code = 1
        elif args.demo:
            from raptorflow_bus.demo import run_demo

            code = run_demo(bus, args.demo_seconds)
        else:
            print(f"[up] running {len(guilds)} guild workers; Ctrl-C stops", flush=True)
            while True:
                now = time.monotonic()
                for child in children:
                    child.check(now)
                time.sleep(0.5)
    except Stop:
        print("[up] warm shutdown: waiting for running handlers", flush=True)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for child in children:
            child.stop(timeout=60)
        bus.close()
        if embedded is not None:
            embedded.release()
            print("[up] embedded redis-server released", flush=True)
    return code
