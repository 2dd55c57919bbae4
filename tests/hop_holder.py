"""A guild worker's event hop cut between its two steps: it pops a batch (the
events now recorded as unacked and owned by it) and never commits it, as a
worker killed between the pop and the dispatch script would leave them:
``python -m tests.hop_holder URL GUILD RECLAIM``. It beats a heartbeat until
it is killed, and prints "holding N as WORKER" once it holds the batch."""

from __future__ import annotations

import sys
import time

from raptorflow_bus import Bus, Settings
from raptorflow_bus.heartbeat import Heartbeat, new_worker_id
from raptorflow_bus.hop import EventHop
from raptorflow_bus.topology import PRIORITY_SEP, PRIORITY_STEPS


def main(url: str, guild: str, reclaim: float) -> None:
    bus = Bus(Settings(broker_url=url), outbox=False).connect()
    worker_id = new_worker_id([guild])
    assert bus.address is not None
    heartbeat = Heartbeat.for_worker(
        bus.address, worker_id, reclaim, list(PRIORITY_STEPS), PRIORITY_SEP
    )
    heartbeat.start()
    hop = EventHop(bus, [guild], worker_id)
    popped, _ = hop.pop()
    print(f"holding {len(popped)} as {worker_id}", flush=True)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]))
