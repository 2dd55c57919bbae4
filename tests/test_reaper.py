"""Prompt reclaim: a dead worker's deliveries go back to their queue within the
reclaim interval, a live worker's never do, whatever their age, and two reapers
racing restore each delivery once."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from kombu import Connection, Queue

import celeryconfig
from raptorflow_bus import Bus, keys
from raptorflow_bus.reaper import Reaper
from raptorflow_bus.topology import PRIORITY_SEP, PRIORITY_STEPS
from tests.harness import wait_until

pytestmark = pytest.mark.broker

QUEUE = "reaper-test"
RECLAIM = 1.5


def publish(url: str, count: int) -> None:
    with (
        Connection(
            url,
            transport="raptorflow_bus.transport:Transport",
            transport_options=celeryconfig.broker_transport_options,
        ) as conn,
        conn.Producer(serializer="json") as producer,
    ):
        for n in range(count):
            producer.publish({"n": n}, routing_key=QUEUE, declare=[Queue(QUEUE)])


@contextmanager
def holder(url: str, count: int) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """A real process holding ``count`` deliveries unacked, beating until killed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.delivery_holder", url, QUEUE, str(count), str(RECLAIM)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        assert line[:2] == ["holding", str(count)], line
        yield proc, line[-1]
    finally:
        proc.kill()
        proc.wait(timeout=10)


def reaper(bus: Bus) -> Reaper:
    return Reaper(bus.redis, RECLAIM * 3 / 5, PRIORITY_STEPS, PRIORITY_SEP)


def waiting(bus: Bus) -> int:
    return int(bus.redis.llen(QUEUE))


@pytest.mark.timeout(60)
def test_a_live_worker_keeps_its_deliveries_however_old(bus: Bus, redis_url: str) -> None:
    publish(redis_url, 3)
    with holder(redis_url, 3) as (_, worker):
        rounds = 0
        deadline = time.monotonic() + 4 * RECLAIM
        while time.monotonic() < deadline:
            rounds += 1
            assert reaper(bus).reap() == 0
            time.sleep(0.1)
        assert rounds > 10
        assert bus.redis.hlen(keys.owned(worker)) == 3
        assert bus.redis.hlen(keys.UNACKED) == 3
        assert waiting(bus) == 0


@pytest.mark.timeout(60)
def test_a_killed_workers_deliveries_go_back_once(bus: Bus, redis_url: str) -> None:
    publish(redis_url, 5)
    with holder(redis_url, 5) as (proc, worker):
        proc.kill()
        proc.wait(timeout=10)
    restored: list[int] = []
    wait_until(
        lambda: bool(restored.append(reaper(bus).reap()) or sum(restored)),
        timeout=RECLAIM * 5,
        what="the dead worker's deliveries to be reaped",
    )
    assert sum(restored) == 5
    assert waiting(bus) == 5
    assert bus.redis.hlen(keys.UNACKED) == 0
    assert not bus.redis.exists(keys.owned(worker))
    assert bus.redis.zscore(keys.HEARTBEATS, worker) is None


@pytest.mark.timeout(60)
def test_two_reapers_racing_restore_each_delivery_once(bus: Bus, redis_url: str) -> None:
    publish(redis_url, 20)
    with holder(redis_url, 20) as (proc, _):
        proc.kill()
        proc.wait(timeout=10)
    time.sleep(RECLAIM)  # the heartbeat lapses; no assertion depends on this time
    counts: list[int] = []
    start = threading.Barrier(2)

    def race() -> None:
        mine = reaper(bus)
        start.wait()
        counts.append(mine.reap())

    threads = [threading.Thread(target=race) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sum(counts) == 20
    assert waiting(bus) == 20
    assert bus.redis.hlen(keys.UNACKED) == 0


@pytest.mark.timeout(60)
def test_a_delivery_acked_before_the_reaper_runs_is_not_restored(bus: Bus, redis_url: str) -> None:
    publish(redis_url, 2)
    with holder(redis_url, 2) as (proc, worker):
        proc.kill()
        proc.wait(timeout=10)
    acked = next(iter(bus.redis.hkeys(keys.owned(worker)))).decode()
    bus.redis.hdel(keys.UNACKED, acked)
    time.sleep(RECLAIM)  # the heartbeat lapses; no assertion depends on this time
    assert reaper(bus).reap() == 1
    assert waiting(bus) == 1
