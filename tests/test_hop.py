"""The guild worker's event hop on a real Redis: a batch is two script calls,
every event in it is checked on its own, and whatever cuts the hop between its
pop and its commit (a SIGKILL, a restore that raced it, a lost reply) brings the
events back to run once, under the task ids they had."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from raptorflow_bus import Bus, keys
from raptorflow_bus.dispatch import handler_task_id
from raptorflow_bus.heartbeat import new_worker_id
from raptorflow_bus.holders import sweep
from raptorflow_bus.hop import EventHop
from raptorflow_bus.kombu_messages import kombu_message, wake
from raptorflow_bus.reaper import Reaper
from raptorflow_bus.topology import PRIORITY_SEP, PRIORITY_STEPS, priority_list
from tests.harness import guild_worker, wait_until
from tests.payloads import VALID

pytestmark = pytest.mark.broker

SIGNAL = "signal.detected"
HANDLERS = priority_list("research.handlers", 6)
RECLAIM = 1.5


def noop(payload: Any) -> None:
    """A handler; these tests read its task messages, they never run it."""


def emit(bus: Bus, count: int) -> list[str]:
    return [
        bus.emit(SIGNAL, {**VALID[SIGNAL], "signal_id": f"s-{n}"}, workspace_id="ws-1").id
        for n in range(count)
    ]


def queued_task_ids(bus: Bus) -> list[str]:
    return [json.loads(m)["headers"]["id"] for m in bus.redis.lrange(HANDLERS, 0, -1)]


def evalsha_calls(bus: Bus) -> int:
    stats: dict[str, Any] = bus.redis.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


@pytest.fixture
def hop(bus: Bus) -> Iterator[EventHop]:
    bus.subscribe(SIGNAL, noop, guild="research")
    hop = EventHop(bus, ["research"], new_worker_id(["research"]))
    yield hop
    hop.stop()


def test_a_batch_of_events_is_two_script_calls_and_one_task_each(bus: Bus, hop: EventHop) -> None:
    emit(bus, 1)
    hop.step()  # the server learns both scripts
    bus.redis.delete(HANDLERS)
    ids = emit(bus, 30)
    before = evalsha_calls(bus)
    assert hop.step() is False
    assert evalsha_calls(bus) - before == 2
    expected = [handler_task_id(i, "research.noop") for i in ids]
    assert sorted(queued_task_ids(bus)) == sorted(expected)
    assert bus.redis.hlen(keys.UNACKED) == 0
    assert not bus.redis.exists(keys.owned(str(hop.owner)))
    assert bus.redis.llen(priority_list("research", 6)) == 0


def test_after_a_server_forgot_the_scripts_the_hop_loads_them_and_hops_each_event_once(
    bus: Bus, hop: EventHop
) -> None:
    ids = emit(bus, 1)
    assert hop.step() is False
    bus.redis.script_flush()  # what a restarted or promoted server knows
    ids += emit(bus, 3)
    assert hop.step() is False
    assert sorted(queued_task_ids(bus)) == sorted(handler_task_id(i, "research.noop") for i in ids)
    assert bus.redis.hlen(keys.UNACKED) == 0


def test_a_backlog_goes_in_batches_and_the_pop_says_more_is_queued(bus: Bus, hop: EventHop) -> None:
    emit(bus, hop.batch + 5)
    assert hop.step() is True
    assert len(queued_task_ids(bus)) == hop.batch
    assert hop.step() is False
    assert len(queued_task_ids(bus)) == hop.batch + 5


def test_one_bad_event_in_a_batch_is_dead_lettered_and_the_others_dispatched(
    bus: Bus, hop: EventHop
) -> None:
    ids = emit(bus, 2)
    bad = kombu_message(json.dumps({"hello": "world"}), "research", 6)
    pipe = bus.redis.pipeline(transaction=False)
    pipe.lpush(priority_list("research", 6), bad)
    wake(pipe, "research")
    pipe.execute()
    ids += emit(bus, 2)
    assert hop.step() is False
    assert sorted(queued_task_ids(bus)) == sorted(handler_task_id(i, "research.noop") for i in ids)
    letters = bus.dlq.list(guild="research")
    assert [letter.exception_type for letter in letters] == ["ValidationError"]
    assert bus.redis.hlen(keys.UNACKED) == 0


def test_an_event_restored_while_held_gets_its_tasks_from_its_redelivery_only(
    bus: Bus, hop: EventHop
) -> None:
    """A reaper that took the worker for dead restores what it holds; the commit
    then writes nothing for those events, and their redelivery writes them once."""
    ids = emit(bus, 3)
    popped, _ = hop.pop()
    from raptorflow_bus.hop_batch import plan_batch

    plan = plan_batch(bus, popped)
    reaper = Reaper(bus.redis, RECLAIM, PRIORITY_STEPS, PRIORITY_SEP)
    assert reaper.restore(str(hop.owner), [popped[0].tag]) == 1
    hop.commit(plan)
    assert len(queued_task_ids(bus)) == 2
    assert hop.step() is False
    assert sorted(queued_task_ids(bus)) == sorted(handler_task_id(i, "research.noop") for i in ids)
    assert bus.redis.hlen(keys.UNACKED) == 0


def test_events_whose_pop_reply_was_lost_are_swept_back_and_hopped_once(
    bus: Bus, hop: EventHop
) -> None:
    ids = emit(bus, 4)
    hop.pop()
    hop._mark_for_sweep()  # the reply never arrived: this process holds nothing
    assert sweep(bus.redis, str(hop.owner), PRIORITY_STEPS, PRIORITY_SEP) == 4
    assert bus.redis.llen(priority_list("research", 6)) == 4
    assert hop.step() is False
    assert sorted(queued_task_ids(bus)) == sorted(handler_task_id(i, "research.noop") for i in ids)


def test_a_sweep_leaves_the_batch_the_hop_holds(bus: Bus, hop: EventHop) -> None:
    emit(bus, 3)
    hop.pop()
    assert sweep(bus.redis, str(hop.owner), PRIORITY_STEPS, PRIORITY_SEP) == 0
    assert bus.redis.hlen(keys.owned(str(hop.owner))) == 3


@contextmanager
def holder(url: str) -> Iterator[tuple[subprocess.Popen[str], str, int]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.hop_holder", url, "research", str(RECLAIM)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        assert line[0] == "holding", line
        yield proc, line[-1], int(line[1])
    finally:
        proc.kill()
        proc.wait(timeout=10)


@pytest.mark.timeout(120)
def test_a_worker_killed_between_pop_and_dispatch_loses_nothing_and_runs_each_once(
    bus: Bus, redis_url: str, tmp_path: Path
) -> None:
    """SIGKILL after the pop script and before the dispatch script: the events are
    in no queue, only recorded against the dead worker; the next worker's reaper
    restores them and each handler runs once."""
    emit(bus, 5)
    with holder(redis_url) as (proc, worker_id, held):
        proc.kill()
        proc.wait(timeout=10)
    assert held == 5
    assert bus.redis.llen(priority_list("research", 6)) == 0
    assert bus.redis.hlen(keys.owned(worker_id)) == 5
    with guild_worker(redis_url, tmp_path / "worker.log", RAPTORBUS_RECLAIM_SECONDS=str(RECLAIM)):

        def handled() -> dict[str, int]:
            counts: dict[str, int] = bus.get_metrics()["handlers"].get("research.score_signal", {})
            return counts

        wait_until(
            lambda: handled().get("succeeded", 0) == 5,
            timeout=60,
            what="the five restored events to be handled",
        )
        wait_until(lambda: bus.redis.hlen(keys.UNACKED) == 0, timeout=30, what="acks")
    assert handled().get("duplicates", 0) == 0
    assert not bus.redis.exists(keys.owned(worker_id))
