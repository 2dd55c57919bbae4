"""``emit_many`` near the pipe (issue 11): a batch over one call's bounds goes
as several script calls, sent together and run in order, and the README's
promise holds: the first call checks the whole batch's room (a full queue
refuses it whole), a broker failure between calls leaves a published prefix
that is reported exactly (spooled behind it, or ``BatchInterrupted`` in strict
mode), and sending the batch again after a lost connection writes nothing
twice."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis

from raptorflow_bus import Backpressure, Bus, Settings
from raptorflow_bus.errors import BatchInterrupted
from raptorflow_bus.publish_call import MAX_COPIES
from raptorflow_bus.publisher import RedisPublisher
from raptorflow_bus.wire import WireFailure
from tests.harness import RedisBackend, wait_until
from tests.payloads import VALID
from tests.test_group_commit import depth, evalsha_calls, signal, small_research, tags_in

pytestmark = [pytest.mark.broker, pytest.mark.timeout(180)]

SIGNAL = "signal.detected"
ALERT = VALID["alert.created"]


def publisher(bus: Bus) -> RedisPublisher:
    found = bus.redis_publisher
    assert found is not None
    return found


@pytest.fixture
def steady(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(RedisPublisher, "max_age_seconds", 3600.0)


def test_a_10000_event_batch_goes_as_several_calls_and_every_event_lands_once(
    redis_backend: RedisBackend, steady: None
) -> None:
    with redis_backend.bus() as bus:
        bus.emit(SIGNAL, signal("warm-up"), workspace_id="ws-1")
        bus.redis.config_resetstat()
        batch = [(SIGNAL, signal(f"s-{n}")) for n in range(10_000)]
        sent = bus.send_many(batch, workspace_id="ws-1")
        assert not sent.spooled and sent.published == 10_000
        # Two copies per event (research, council), at most MAX_COPIES per call.
        assert evalsha_calls(bus.redis) == -(-20_000 // MAX_COPIES) >= 5
        expected = Counter({f"s-{n}": 1 for n in range(10_000)} | {"warm-up": 1})
        assert tags_in(bus.redis, "research") == tags_in(bus.redis, "council") == expected
        assert bus.get_metrics()["events"][SIGNAL]["published"] == 10_001
        # In queue order too: consumers pop the tail first.
        raw = bus.redis.lrange("research\x06\x166", 0, -1)
        order = [json.loads(json.loads(m)["body"])["payload"]["signal_id"] for m in reversed(raw)]
        assert order == ["warm-up", *(f"s-{n}" for n in range(10_000))]


def test_a_split_batch_that_would_overfill_a_queue_is_refused_whole(
    redis_backend: RedisBackend, steady: None
) -> None:
    with redis_backend.bus(topology=small_research()) as bus:
        publisher(bus).builder.max_copies = 2  # one event per call
        bus.emit_many([(SIGNAL, signal(f"old-{n}")) for n in range(3)], workspace_id="ws-1")
        bus.redis.config_resetstat()
        with pytest.raises(Backpressure) as refused:
            bus.emit_many([(SIGNAL, signal(f"new-{n}")) for n in range(3)], workspace_id="ws-1")
        assert (refused.value.queue, refused.value.depth, refused.value.limit) == (
            "research",
            3,
            5,
        )
        assert (depth(bus, "research"), depth(bus, "council")) == (3, 3)
        assert bus.get_metrics()["events"][SIGNAL]["published"] == 3
        # Two events fit: three calls, each publishing one.
        bus.redis.config_resetstat()
        sent = bus.send_many([(SIGNAL, signal(f"fits-{n}")) for n in range(2)], workspace_id="ws-1")
        assert sent.published == 2 and evalsha_calls(bus.redis) == 2
        assert depth(bus, "research") == 5


def cut_after_first_call(bus: Bus, monkeypatch: pytest.MonkeyPatch) -> None:
    """The connection dies once the first call of a split batch ran: the rest
    never reaches Redis, and no reply comes for it."""
    wire = publisher(bus).wire
    real = wire.roundtrip
    cut = {"done": False}

    def roundtrip(commands: list[bytes]) -> list[Any]:
        if cut["done"] or len(commands) < 2:
            return real(commands)
        cut["done"] = True
        replies = real(commands[:1])
        raise WireFailure(redis.ConnectionError("connection cut"), replies)

    monkeypatch.setattr(wire, "roundtrip", roundtrip)


def test_in_strict_mode_a_batch_cut_between_calls_says_exactly_what_was_published(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, steady: None
) -> None:
    with Bus(Settings(broker_url=redis_url, home=tmp_path), outbox=False) as bus:
        bus.redis.flushdb()
        bus.declare_topology()
        bus.emit("alert.created", ALERT)  # the binding table read once
        publisher(bus).builder.max_copies = 8  # four events per call
        cut_after_first_call(bus, monkeypatch)
        with pytest.raises(BatchInterrupted) as interrupted:
            bus.emit_many([(SIGNAL, signal(f"s-{n}")) for n in range(10)], workspace_id="ws-1")
        error = interrupted.value
        assert (error.published, error.uncertain, error.total) == (4, 6, 10)
        assert [e.payload["signal_id"] for e in error.published_envelopes] == [
            f"s-{n}" for n in range(4)
        ]
        assert len(error.unpublished_envelopes) == 6
        assert tags_in(bus.redis, "research") == Counter(f"s-{n}" for n in range(4))
        assert bus.get_metrics()["events"][SIGNAL]["published"] == 4


def test_with_the_outbox_a_batch_cut_between_calls_spools_the_rest_and_lands_once(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, steady: None
) -> None:
    with Bus(Settings(broker_url=redis_url, home=tmp_path)) as bus:
        bus.redis.flushdb()
        bus.declare_topology()
        bus.emit("alert.created", ALERT)  # the binding table read once
        publisher(bus).builder.max_copies = 8
        cut_after_first_call(bus, monkeypatch)
        sent = bus.send_many([(SIGNAL, signal(f"s-{n}")) for n in range(10)], workspace_id="ws-1")
        assert sent.spooled and sent.published == 4 and len(sent.envelopes) == 10
        wait_until(lambda: not bus.spooling, what="the relay to drain")
        everything = Counter(f"s-{n}" for n in range(10))
        assert tags_in(bus.redis, "research") == everything
        assert tags_in(bus.redis, "council") == everything + Counter(["alert.created"])
        raw = bus.redis.lrange("research\x06\x166", 0, -1)
        order = [json.loads(json.loads(m)["body"])["payload"]["signal_id"] for m in reversed(raw)]
        assert order == [f"s-{n}" for n in range(10)]


class LosesFirstReply:
    """A connection whose first read fails after its commands went through,
    as when a connection breaks between a write and its answer."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self.lost = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        if not self.lost:
            self.lost = True
            self._conn.read_response(*args, **kwargs)
            raise redis.ConnectionError("connection reset after the write")
        return self._conn.read_response(*args, **kwargs)


def test_a_split_batch_sent_again_after_a_lost_reply_writes_nothing_twice(
    redis_backend: RedisBackend, steady: None
) -> None:
    with redis_backend.bus() as bus:
        bus.emit(SIGNAL, signal("warm-up"), workspace_id="ws-1")
        wire = publisher(bus).wire
        publisher(bus).builder.max_copies = 20  # ten events per call
        wire._conn = LosesFirstReply(wire._conn)
        bus.redis.config_resetstat()
        sent = bus.send_many([(SIGNAL, signal(f"s-{n}")) for n in range(50)], workspace_id="ws-1")
        assert wire._conn.lost and not sent.spooled and sent.published == 50
        # Five calls, then the same five again (Redis drops those it had not
        # read when the connection closed): a call that ran the first time
        # found its place in the batch's marker taken and wrote nothing.
        assert 5 < evalsha_calls(bus.redis) <= 10
        expected = Counter({f"s-{n}": 1 for n in range(50)} | {"warm-up": 1})
        assert tags_in(bus.redis, "research") == tags_in(bus.redis, "council") == expected
        assert bus.get_metrics()["events"][SIGNAL]["published"] == 51


def test_a_batch_met_with_an_aged_table_reads_it_first_with_an_empty_call(
    redis_backend: RedisBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cached table is too old, so the first call is known to come back with
    the table: it carries no event, and the batch goes to Redis once."""
    monkeypatch.setattr(RedisPublisher, "max_age_seconds", 0.0)
    with redis_backend.bus() as bus:
        bus.redis.config_resetstat()
        batch = [(SIGNAL, signal(f"s-{n}")) for n in range(5_000)]
        sent = bus.send_many(batch, workspace_id="ws-1")
        assert sent.published == 5_000
        assert evalsha_calls(bus.redis) == 1 + -(-10_000 // MAX_COPIES)
        assert tags_in(bus.redis, "research") == Counter(f"s-{n}" for n in range(5_000))
