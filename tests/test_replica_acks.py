"""RAPTORBUS_MIN_REPLICA_ACKS against a real master and replica: an emit counts
only once WAIT says a replica holds it, and every write that must survive a
failover (emit, the event step's handler tasks, a dead letter) is refused as
``NotReplicated`` when too few replicas confirm it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from raptorflow_bus import Bus, NotReplicated, Settings, keys
from raptorflow_bus.deadletter import DeadLetter
from raptorflow_bus.dispatch import dispatch
from raptorflow_bus.envelope import utcnow
from raptorflow_bus.heartbeat import new_worker_id
from raptorflow_bus.hop import EventHop
from raptorflow_bus.topology import priority_list
from tests.payloads import VALID
from tests.sentinel_topology import DataServer

pytestmark = pytest.mark.broker

METRICS = VALID["system.metrics"]
COUNCIL = priority_list("council", 6)


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[DataServer, DataServer]]:
    master = DataServer(tmp_path / "master")
    replica = DataServer(tmp_path / "replica", replica_of=master.port)
    master.start()
    try:
        replica.start()
        if not _linked(replica, master):
            raise RuntimeError("the replica did not sync")
        yield master, replica
    finally:
        replica.stop()
        master.stop()


def _linked(replica: DataServer, master: DataServer) -> bool:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if replica.follows(master):
            return True
        time.sleep(0.05)
    return False


def _bus(url: str, home: Path, outbox: bool = True) -> Bus:
    settings = Settings(broker_url=url, home=home, min_replica_acks=1)
    return Bus(settings, outbox=outbox).connect()


def test_an_accepted_event_is_already_on_the_replica(
    servers: tuple[DataServer, DataServer], tmp_path: Path
) -> None:
    master, replica = servers
    with _bus(master.url, tmp_path) as bus:
        sent = bus.send_many([("system.metrics", METRICS)] * 3)
        with replica.client() as client:
            assert (sent.spooled, client.llen(COUNCIL)) == (False, 3)


def test_without_a_replica_emits_spool_and_strict_mode_raises_within_its_bound(
    servers: tuple[DataServer, DataServer], tmp_path: Path
) -> None:
    master, replica = servers
    replica.stop()
    with _bus(master.url, tmp_path / "spooling") as bus:
        assert bus.send("system.metrics", METRICS).spooled
        assert bus.send_many([("system.metrics", METRICS)] * 5).spooled
        assert bus.outbox_stats()["depth"] == 6
    with _bus(master.url, tmp_path / "strict", outbox=False) as strict:
        started = time.monotonic()
        with pytest.raises(NotReplicated, match="0 of 1 replicas"):
            strict.emit("system.metrics", METRICS)
        assert time.monotonic() - started < 1.0


def test_the_event_step_and_the_dlq_are_held_to_the_same_acks(
    servers: tuple[DataServer, DataServer], tmp_path: Path
) -> None:
    master, replica = servers
    with _bus(master.url, tmp_path) as bus:
        bus.load_handlers(["tests.faults.handlers"])
        envelope, _ = bus.prepare("system.metrics", METRICS)
        letter = DeadLetter(
            id="letter-1",
            envelope=envelope,
            handler="council.count_run",
            guild="council",
            exception_type="RuntimeError",
            message="failed",
            traceback="",
            attempts=4,
            first_failed_at=utcnow(),
            last_failed_at=utcnow(),
        )
        assert dispatch(bus, envelope, "council") == 1
        bus.store.dlq_put(letter, 100)
        replica.stop()
        with pytest.raises(NotReplicated):
            dispatch(bus, envelope, "council")
        with pytest.raises(NotReplicated):
            bus.store.dlq_put(letter, 100)


def test_a_server_that_forgot_the_publish_script_gets_it_again(
    servers: tuple[DataServer, DataServer], tmp_path: Path
) -> None:
    """What a promoted replica or a restarted master is: no script loaded."""
    master, _ = servers
    with _bus(master.url, tmp_path) as bus:
        bus.emit("system.metrics", METRICS)
        bus.redis.script_flush()
        assert not bus.send("system.metrics", METRICS).spooled
        assert bus.redis.llen(COUNCIL) == 2


def test_the_event_hop_waits_for_its_replicas_and_a_second_copy_writes_no_task(
    servers: tuple[DataServer, DataServer], tmp_path: Path
) -> None:
    """The commit script ran on the master (tasks written, events acked), but WAIT
    saw no replica: the hop holds on until a replica confirms the batch, and
    writes nothing twice. The same three events delivered again (what the relay
    does with an emit that spooled though its write had landed) write no second
    copy of their tasks, which two pool children could run at once: each copy
    is a counted duplicate."""
    master, replica = servers
    handler_list = priority_list("council.handlers", 6)
    with _bus(master.url, tmp_path) as bus:
        bus.load_handlers(["tests.faults.handlers"])
        for _ in range(3):
            bus.emit("system.metrics", METRICS)
        copies = bus.redis.lrange(COUNCIL, 0, -1)
        hop = EventHop(bus, ["council"], new_worker_id(["council"]))
        replica.stop()
        stepping = threading.Thread(target=hop.step, daemon=True)
        stepping.start()
        stepping.join(1.5)
        assert stepping.is_alive(), "the hop went on without a replica's confirmation"
        assert (bus.redis.llen(COUNCIL), bus.redis.llen(handler_list)) == (0, 3)
        replica.start()
        assert _linked(replica, master)
        stepping.join(30)
        assert not stepping.is_alive()
        bus.redis.lpush(COUNCIL, *reversed(copies))
        assert hop.step() is False
        assert (bus.redis.llen(COUNCIL), bus.redis.llen(handler_list)) == (0, 3)
        assert bus.redis.hlen(keys.UNACKED) == 0
        assert bus.get_metrics()["handlers"]["council.count_run"]["duplicates"] == 3
        hop.stop()


def test_a_done_record_is_written_until_a_replica_holds_it(
    servers: tuple[DataServer, DataServer], tmp_path: Path
) -> None:
    """The handler has run; a done record that only the master holds comes
    back missing after a failover, and the run's task with it: finishing waits
    for a replica, and the record is then on it."""
    master, replica = servers
    done = keys.DONE_PREFIX + "task-1"
    with _bus(master.url, tmp_path) as bus:
        replica.stop()
        finishing = threading.Thread(
            target=bus.store.finish, args=("task-1", 60, {("system.metrics", "succeeded"): 1})
        )
        finishing.start()
        finishing.join(1.5)
        assert finishing.is_alive(), "finish returned before any replica held the record"
        replica.start()
        assert _linked(replica, master)
        finishing.join(30)
        assert not finishing.is_alive()
        with replica.client() as client:
            assert client.exists(done) == 1
        assert bus.get_metrics()["events"]["system.metrics"]["succeeded"] == 1
