"""A process that takes deliveries and never acks them, as a worker does while
its handlers run: ``python -m tests.delivery_holder URL QUEUE COUNT RECLAIM``.
It beats a heartbeat (RECLAIM > 0) until it is killed, and prints "holding"
once it holds COUNT deliveries."""

from __future__ import annotations

import sys
import time
from typing import Any

from kombu import Connection, Queue

import celeryconfig
from raptorflow_bus.broker_address import BrokerAddress
from raptorflow_bus.heartbeat import Heartbeat, new_worker_id
from raptorflow_bus.topology import PRIORITY_SEP, PRIORITY_STEPS
from raptorflow_bus.transport import OWNER_OPTION


def main(url: str, queue: str, count: int, reclaim: float) -> None:
    worker_id = new_worker_id()
    address = BrokerAddress.parse(url)
    steps = list(PRIORITY_STEPS)
    heartbeat = Heartbeat.for_worker(address, worker_id, reclaim, steps, PRIORITY_SEP)
    heartbeat.start()
    held: list[Any] = []
    options = {**celeryconfig.broker_transport_options, OWNER_OPTION: worker_id}
    with Connection(
        url, transport="raptorflow_bus.transport:Transport", transport_options=options
    ) as conn:
        consumer = conn.Consumer(
            Queue(queue), callbacks=[lambda body, message: held.append(message)], accept=["json"]
        )
        consumer.qos(prefetch_count=count)
        with consumer:
            deadline = time.monotonic() + 30
            while len(held) < count and time.monotonic() < deadline:
                conn.drain_events(timeout=1)
            print(f"holding {len(held)} as {worker_id}", flush=True)
            while True:
                time.sleep(1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
