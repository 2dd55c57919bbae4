"""A real guild worker process against a real plain Celery worker, same broker,
same run: drain rate, emit -> handler start latency, Redis commands per event
and an idle worker's commands per second. Prints figures; asserts nothing.

    python bench/worker_drain.py [--events 3000] [--probes 200] [--idle 10] [--rounds 3]

- bus: ``python -m raptorflow_bus.cli worker research --pool=solo`` with the
  no-op handler of ``bench/drain_noop_handlers.py`` (``RAPTORBUS_HANDLERS``).
- celery: ``celery -A bench.drain_plain_app worker -E --pool=solo`` on stock Kombu,
  the bus's Celery settings, one no-op task taking the same envelope.
- celery+bus transport: the same on ``raptorflow_bus.transport``.

Drain: N events (tasks) are queued before the worker starts; the clock runs
from the first one taken to every queue and the unacked hash being empty.
Commands are ``INFO commandstats`` deltas (Lua-internal commands included),
less this script's own polling. CPU is the worker process's and redis-server's
(user + system) over the drain, per event: on a shared machine it moves less
than the rates do. Rounds interleave the runs (bus, celery, ..., bus, celery)
and the ratios are medians of each round's ratio."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.drain_noop_handlers import LATENCY_KEY  # noqa: E402
from bench.workers import process_cpu, redis_cpu  # noqa: E402
from raptorflow_bus import Bus, Settings  # noqa: E402
from raptorflow_bus.embedded import EmbeddedRedis  # noqa: E402
from raptorflow_bus.topology import PRIORITY_STEPS, priority_list  # noqa: E402

SIGNAL = {"signal_id": "s-1", "source": "news", "topic": "ai", "strength": 0.9}
PROBE = {**SIGNAL, "topic": "latency"}
PLAIN_QUEUE = "plain"


def command_calls(client: redis.Redis[bytes]) -> dict[str, int]:
    """Calls per command so far, less this script's INFO calls."""
    stats: dict[str, Any] = client.info("commandstats")
    calls = {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}
    calls.pop("info", None)
    return calls


def commands(client: redis.Redis[bytes]) -> int:
    return sum(command_calls(client).values())


def top(before: dict[str, int], after: dict[str, int], per: float, own: dict[str, int]) -> str:
    """The commands that grew most between two snapshots, per ``per``, less ``own``."""
    grown = {k: n - before.get(k, 0) - own.get(k, 0) for k, n in after.items()}
    grown = {k: n for k, n in grown.items() if n > 0}
    ranked = sorted(grown.items(), key=lambda kv: -kv[1])[:8]
    return " ".join(f"{k}={n / per:.1f}" for k, n in ranked)


class Poller:
    """Watches the queues of one run; counts its own commands to subtract them."""

    def __init__(self, client: redis.Redis[bytes], queues: list[str]) -> None:
        self.client = client
        self.lists = [priority_list(q, s) for q in queues for s in PRIORITY_STEPS]
        self.sent = 0
        self.by_command: dict[str, int] = {}

    def pending(self) -> int:
        pipe = self.client.pipeline(transaction=False)
        for name in self.lists:
            pipe.llen(name)
        pipe.hlen("unacked")
        self.sent += len(self.lists) + 1
        self.by_command["llen"] = self.by_command.get("llen", 0) + len(self.lists)
        self.by_command["hlen"] = self.by_command.get("hlen", 0) + 1
        return sum(int(n) for n in pipe.execute())

    def info(self) -> int:
        return commands(self.client)


def worker_env(url: str, home: Path, transport: str | None) -> dict[str, str]:
    env = {
        **os.environ,
        "RAPTORBUS_BROKER_URL": url,
        "RAPTORBUS_HANDLERS": "bench.drain_noop_handlers",
        "RAPTORBUS_HOME": str(home),
        "PYTHONPATH": str(ROOT),
    }
    env.pop("PLAIN_TRANSPORT", None)
    if transport:
        env["PLAIN_TRANSPORT"] = transport
    return env


@contextlib.contextmanager
def process(cmd: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def run(
    name: str,
    cmd: list[str],
    env: dict[str, str],
    client: redis.Redis[bytes],
    queues: list[str],
    fill: Callable[[], None],
    probe: Callable[[], None],
    args: argparse.Namespace,
    log: Path,
) -> dict[str, float]:
    client.flushdb()
    fill()
    poll = Poller(client, queues)
    total = poll.pending()
    before = poll.info()
    drain_from = command_calls(client)
    own = poll.sent
    with process(cmd, env, log) as proc:
        deadline = time.monotonic() + 120
        while poll.pending() >= total:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} worker did not start; see {log}")
            time.sleep(0.002)
        start = time.perf_counter()
        cpu_worker, cpu_redis = process_cpu(proc.pid), redis_cpu(client)
        while poll.pending():
            time.sleep(0.02)
        drained = args.events / (time.perf_counter() - start)
        cpu_worker = process_cpu(proc.pid) - cpu_worker
        cpu_redis = redis_cpu(client) - cpu_redis
        time.sleep(0.5)
        after = poll.info()
        drain_cmds = after - before - (poll.sent - own)
        if args.verbose:
            grown = top(drain_from, command_calls(client), args.events, poll.by_command)
            print(f"  {name} commands/event: {grown}")
        latencies = []
        for _ in range(args.probes):
            sent = time.time()
            probe()
            got = client.brpop([LATENCY_KEY], timeout=30)
            if got is None:
                raise RuntimeError(f"{name}: a latency probe was not handled; see {log}")
            latencies.append((float(got[1]) - sent) * 1000)
            time.sleep(0.005)
        time.sleep(3)
        own = poll.sent
        before = poll.info()
        idle_from = command_calls(client)
        time.sleep(args.idle)
        idle_to = command_calls(client)
        idle = (poll.info() - before - (poll.sent - own)) / args.idle
        if args.verbose:
            print(f"  {name} idle commands/s: {top(idle_from, idle_to, args.idle, {})}")
    return {
        "drain/s": drained,
        "p50 ms": statistics.median(latencies),
        "p95 ms": statistics.quantiles(latencies, n=20)[18],
        "cmds/event": drain_cmds / args.events,
        "worker cpu us/event": cpu_worker / args.events * 1e6,
        "redis cpu us/event": cpu_redis / args.events * 1e6,
        "idle cmds/s": idle,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--probes", type=int, default=200)
    parser.add_argument("--idle", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--verbose", action="store_true", help="the top commands of each run")
    parser.add_argument("--only", default="bus,celery,celery+bus", help="runs, comma-separated")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="raptorbus-drain-"))
    server = EmbeddedRedis(home / "redis")
    url = server.acquire()
    client = redis.Redis.from_url(url)
    bus = Bus(Settings(broker_url=url, home=home / "bus"), outbox=False).connect()
    from bench.drain_plain_app import make_app

    plain = make_app(url, None)
    on_bus_transport = make_app(url, "raptorflow_bus.transport:Transport")
    envelope = {"type": "signal.detected", "payload": SIGNAL}
    probe_envelope = {"type": "signal.detected", "payload": PROBE}

    def bus_fill() -> None:
        bus.declare_topology()
        for n in range(0, args.events, 500):
            batch = min(500, args.events - n)
            bus.emit_many([("signal.detected", SIGNAL)] * batch, workspace_id="ws-bench")

    def plain_fill(app: Any, noop: Any) -> None:
        with app.producer_or_acquire() as producer:
            for _ in range(args.events):
                noop.apply_async(
                    kwargs={"envelope": envelope}, queue=PLAIN_QUEUE, producer=producer
                )

    def plain_probe(noop: Any) -> None:
        noop.apply_async(kwargs={"envelope": probe_envelope}, queue=PLAIN_QUEUE)

    py = sys.executable
    quiet = ["--loglevel", "ERROR"]
    queue = ["-Q", PLAIN_QUEUE, *quiet]
    runs: dict[str, tuple[list[str], dict[str, str], list[str], Any, Any]] = {
        "bus": (
            [py, "-m", "raptorflow_bus.cli", "worker", "research", "--pool=solo", *quiet],
            worker_env(url, home / "bus", None),
            ["research", "research.handlers"],
            bus_fill,
            lambda: bus.emit("signal.detected", PROBE, workspace_id="ws-bench"),
        ),
        "celery": (
            [
                py,
                "-m",
                "celery",
                "-A",
                "bench.drain_plain_app",
                "worker",
                "-E",
                "--pool=solo",
                *queue,
            ],
            worker_env(url, home / "plain", None),
            [PLAIN_QUEUE],
            lambda: plain_fill(*plain),
            lambda: plain_probe(plain[1]),
        ),
    }
    runs["celery+bus"] = (
        runs["celery"][0],
        worker_env(url, home / "plain", "raptorflow_bus.transport:Transport"),
        [PLAIN_QUEUE],
        lambda: plain_fill(*on_bus_transport),
        lambda: plain_probe(on_bus_transport[1]),
    )
    results: dict[str, list[dict[str, float]]] = {}
    try:
        for round_ in range(args.rounds):
            for name in args.only.split(","):
                cmd, env, queues, fill, probe = runs[name]
                log = home / f"{name}.log"
                got = run(name, cmd, env, client, queues, fill, probe, args, log)
                results.setdefault(name, []).append(got)
                figures = "  ".join(f"{k} {v:7.2f}" for k, v in got.items())
                print(f"{round_} {name:10s} {figures}", flush=True)
    finally:
        bus.close()
        server.release()
    print(f"events: {args.events}, probes: {args.probes}, idle window: {args.idle} s")
    for name, rows in results.items():
        medians = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        print(f"median {name:10s} " + "  ".join(f"{k} {v:7.2f}" for k, v in medians.items()))
    if "bus" in results and "celery" in results:
        pairs = list(zip(results["bus"], results["celery"], strict=True))
        for key in ("drain/s", "p50 ms"):
            ratios = [b[key] / c[key] for b, c in pairs]
            each = ", ".join(f"{r:.2f}" for r in ratios)
            print(f"ratio bus/celery {key:8s} median {statistics.median(ratios):.2f} ({each})")


if __name__ == "__main__":
    main()
