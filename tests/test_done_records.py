"""A handler that succeeded while the broker was away (restarting, failing over)
still gets its done record once the broker is back, so its redelivery is a
duplicate rather than a second run."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from raptorflow_bus.broker_address import BrokerAddress
from raptorflow_bus.keys import DONE_PREFIX
from raptorflow_bus.redis_store import RedisStore
from tests.faults.processes import RedisServer

pytestmark = pytest.mark.broker


def test_the_done_record_waits_for_a_broker_that_comes_back(tmp_path: Path) -> None:
    with RedisServer(tmp_path / "broker") as server:
        client = BrokerAddress.parse(server.url).client(socket_timeout=1.0)
        store = RedisStore(client)
        server.kill()
        restart = threading.Timer(1.0, server.start)
        restart.start()
        try:
            store.finish("task-1", 60, {("system.metrics", "succeeded"): 1})
        finally:
            restart.join()
        assert client.exists(DONE_PREFIX + "task-1") == 1
        client.close()
