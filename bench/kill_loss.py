"""Events lost when a guild worker is SIGKILLed and events arrive at that instant,
with stock Kombu's Redis transport against raptorflow_bus.transport, in the same
run on the same embedded Redis. Prints counts; asserts nothing.

    python bench/kill_loss.py [--rounds 10] [--events 3]

Each round starts `raptorbus worker research --pool=solo`, waits for it to
answer a ping, kills it with SIGKILL and at once emits `--events` signals. After
the last round a fresh worker drains the queues; then every event that was
emitted and never handled, is in no queue and not in the unacked hash, is lost.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from raptorflow_bus import Bus, Settings
from raptorflow_bus.embedded import EmbeddedRedis

SIGNAL = {"signal_id": "s-1", "source": "news", "topic": "ai", "strength": 0.9}
HANDLER = "research.score_signal"
STOCK_CONFIG = "from celeryconfig import *  # noqa: F403\nbroker_transport = None\n"


def worker(url: str, config_dir: Path, config: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "RAPTORBUS_BROKER_URL": url,
        "RAPTORBUS_CELERY_CONFIG": config,
        "PYTHONPATH": os.pathsep.join([str(config_dir), os.getcwd()]),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "raptorflow_bus.cli", "worker", "research", "--pool=solo"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait(predicate: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def run(url: str, config_dir: Path, config: str, rounds: int, events: int) -> dict[str, int]:
    bus = Bus(Settings(broker_url=url)).connect()
    bus.redis.flushdb()
    bus.declare_topology()

    def handled() -> int:
        return int(bus.get_metrics()["handlers"].get(HANDLER, {}).get("succeeded", 0))

    def one_alive() -> bool:
        return len(bus.app.control.ping(timeout=0.5) or []) == 1

    emitted = 0
    for _ in range(rounds):
        proc = worker(url, config_dir, config)
        if not wait(one_alive, 60):
            raise SystemExit("worker did not start")
        proc.kill()
        for _ in range(events):
            bus.emit("signal.detected", {**SIGNAL, "signal_id": f"s-{emitted}"}, workspace_id="w")
            emitted += 1
        proc.wait()
    proc = worker(url, config_dir, config)
    wait(lambda: handled() == emitted, 30)
    proc.terminate()
    proc.wait()
    unacked = int(bus.redis.hlen("unacked"))
    waiting = sum(int(bus.redis.llen(k)) for k in bus.redis.keys("research*"))
    result = {"emitted": emitted, "handled": handled(), "unacked": unacked, "queued": waiting}
    result["lost"] = emitted - result["handled"] - unacked - waiting
    bus.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--events", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        config_dir = Path(home) / "config"
        config_dir.mkdir()
        (config_dir / "stock_kombu_config.py").write_text(STOCK_CONFIG)
        server = EmbeddedRedis(Path(home))
        url = server.acquire()
        try:
            for name, config in (
                ("stock kombu redis transport", "stock_kombu_config"),
                ("raptorflow_bus.transport", "celeryconfig"),
            ):
                r = run(url, config_dir, config, args.rounds, args.events)
                print(
                    f"{name:30} emitted {r['emitted']:4}  handled {r['handled']:4}  "
                    f"queued {r['queued']:3}  unacked {r['unacked']:3}  lost {r['lost']:3}"
                )
        finally:
            server.release()


if __name__ == "__main__":
    main()
