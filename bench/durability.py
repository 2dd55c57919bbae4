"""What ``appendfsync always`` costs on emit, against ``everysec``, in the same
run: one embedded Redis of each, the same events, single emits and batches.
Prints rates and the ratio; asserts nothing.

    python bench/durability.py [--events 2000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from raptorflow_bus import Bus, Settings
from raptorflow_bus.embedded import EmbeddedRedis

SIGNAL = {"signal_id": "s-1", "source": "news", "topic": "ai", "strength": 0.9}


def emit_rate(url: str, events: int, batch: int) -> float:
    with Bus(Settings(broker_url=url)) as bus:
        bus.redis.flushdb()
        bus.declare_topology()
        start = time.perf_counter()
        if batch == 1:
            for _ in range(events):
                bus.emit("signal.detected", SIGNAL, workspace_id="ws-1")
        else:
            for _ in range(events // batch):
                bus.emit_many([("signal.detected", SIGNAL)] * batch, workspace_id="ws-1")
        return events / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000)
    args = parser.parse_args()
    rows = []
    for batch in (1, 100):
        rates = {}
        for mode in ("everysec", "always"):
            with tempfile.TemporaryDirectory() as home:
                server = EmbeddedRedis(Path(home), appendfsync=mode)
                url = server.acquire()
                try:
                    rates[mode] = emit_rate(url, args.events, batch)
                finally:
                    server.release()
        rows.append((batch, rates["everysec"], rates["always"]))
    print(f"{'emit':<16}{'everysec /s':>14}{'always /s':>14}{'always/everysec':>18}")
    for batch, every, always in rows:
        label = "single emit" if batch == 1 else f"emit_many({batch})"
        print(f"{label:<16}{every:>14,.0f}{always:>14,.0f}{always / every:>18.2f}")


if __name__ == "__main__":
    main()
