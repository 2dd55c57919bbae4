from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from raptorflow_bus import Bus, Settings
from raptorflow_bus.embedded import EmbeddedRedis
from raptorflow_bus.memory_store import MemoryStore
from raptorflow_bus.redis_store import RedisStore
from raptorflow_bus.store import Store
from tests.harness import EagerBackend, RedisBackend


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server (the embedded broker) private to this test session."""
    server = EmbeddedRedis(Path(tmp_path_factory.mktemp("raptorbus-home")))
    url = server.acquire()
    yield url
    server.release()


@pytest.fixture(
    params=["eager", pytest.param("redis", marks=pytest.mark.broker)],
)
def backend(request: pytest.FixtureRequest) -> Any:
    if request.param == "eager":
        return EagerBackend()
    return RedisBackend(request.getfixturevalue("redis_url"))


@pytest.fixture
def bus(redis_url: str) -> Iterator[Bus]:
    """A connected bus on the session's Redis, emptied, topology declared."""
    bus = Bus(Settings(broker_url=redis_url)).connect()
    bus.redis.flushdb()
    bus.declare_topology()
    yield bus
    bus.close()


@pytest.fixture
def redis_backend(redis_url: str) -> RedisBackend:
    return RedisBackend(redis_url)


@pytest.fixture(autouse=True)
def _bus_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bus")


# The dead-letter store in memory and on a real Redis: the paging and group
# tests run the same assertions on both.
@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.broker)])
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    if request.param == "memory":
        yield MemoryStore()
        return
    client: redis.Redis[bytes] = redis.Redis.from_url(request.getfixturevalue("redis_url"))
    client.flushdb()
    yield RedisStore(client)
    client.close()
