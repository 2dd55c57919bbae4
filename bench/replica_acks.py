"""What ``RAPTORBUS_MIN_REPLICA_ACKS=1`` costs on emit, against 0, in the same
run: one local master with one replica (loopback, AOF ``--appendfsync``), the
same events, single emits and ``emit_many`` batches, the two settings taking
turns for ``--rounds`` rounds (the best round of each is kept). Prints rates,
per-emit latency and the ratio; asserts nothing.

    python bench/replica_acks.py [--events 2000] [--batch 100] [--appendfsync everysec]

On loopback a replica confirms in well under a millisecond, so this is the
floor of the cost: over a network every confirmed emit also waits one round
trip to the replica.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raptorflow_bus import Bus, Settings
from tests.sentinel_topology import DataServer

SIGNAL = {"signal_id": "s-1", "source": "news", "topic": "ai", "strength": 0.9}


class Server(DataServer):
    def __init__(self, home: Path, appendfsync: str, replica_of: int | None = None) -> None:
        super().__init__(home, replica_of)
        self.appendfsync = appendfsync

    def command(self) -> list[str]:
        cmd = super().command()
        cmd[cmd.index("--appendfsync") + 1] = self.appendfsync
        return cmd


@contextmanager
def master_and_replica(appendfsync: str) -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="raptorbus-acks-") as home:
        master = Server(Path(home) / "master", appendfsync)
        replica = Server(Path(home) / "replica", appendfsync, replica_of=master.port)
        master.start()
        try:
            replica.start()
            deadline = time.monotonic() + 30
            while not replica.follows(master):
                if time.monotonic() > deadline:
                    raise RuntimeError("the replica did not sync")
                time.sleep(0.05)
            yield master.url
        finally:
            replica.stop()
            master.stop()


def measure(url: str, acks: int, events: int, batch: int, home: Path) -> dict[str, float]:
    """Events per second, and the median and 99th percentile of one call, in ms."""
    settings = Settings(broker_url=url, min_replica_acks=acks, home=home)
    with Bus(settings) as bus:
        bus.redis.flushdb()
        bus.declare_topology()
        calls = []
        start = time.perf_counter()
        for _ in range(events // batch):
            began = time.perf_counter()
            if batch == 1:
                sent = bus.send("signal.detected", SIGNAL, workspace_id="ws-1").spooled
            else:
                items = [("signal.detected", SIGNAL)] * batch
                sent = bus.send_many(items, workspace_id="ws-1").spooled
            calls.append(time.perf_counter() - began)
            if sent:
                raise RuntimeError("an emit spooled: the replica is not confirming")
        elapsed = time.perf_counter() - start
    calls.sort()
    return {
        "rate": events / elapsed,
        "p50_ms": statistics.median(calls) * 1000,
        "p99_ms": calls[int(len(calls) * 0.99) - 1] * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--appendfsync", choices=("everysec", "always"), default="everysec")
    args = parser.parse_args()
    best: dict[tuple[int, int], dict[str, float]] = {}
    with master_and_replica(args.appendfsync) as url, tempfile.TemporaryDirectory() as home:
        for _ in range(args.rounds):
            for batch in (1, args.batch):
                for acks in (0, 1):
                    result = measure(url, acks, args.events, batch, Path(home))
                    if result["rate"] > best.get((batch, acks), {"rate": 0.0})["rate"]:
                        best[(batch, acks)] = result
    print(f"master + 1 replica on loopback, appendfsync {args.appendfsync}, {args.events} events")
    header = f"{'emit':<16}{'acks 0 /s':>11}{'acks 1 /s':>11}{'ratio':>7}"
    print(header + f"{'p50 ms 0 / 1':>16}{'p99 ms 0 / 1':>16}")
    for batch in (1, args.batch):
        off, on = best[(batch, 0)], best[(batch, 1)]
        label = "single emit" if batch == 1 else f"emit_many({batch})"
        ratio = on["rate"] / off["rate"]
        p50 = f"{off['p50_ms']:.2f} / {on['p50_ms']:.2f}"
        p99 = f"{off['p99_ms']:.2f} / {on['p99_ms']:.2f}"
        print(
            f"{label:<16}{off['rate']:>11,.0f}{on['rate']:>11,.0f}{ratio:>7.2f}{p50:>16}{p99:>16}"
        )


if __name__ == "__main__":
    main()
