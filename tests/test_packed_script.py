"""Scripts called packed on a kept connection (``packed_script``), on a real
Redis: a server that forgot the script gets it and runs it once, an error
reply is raised, and a wire that must not retry reports a dead connection
instead of sending the call again."""

from __future__ import annotations

import pytest
import redis

from raptorflow_bus import Bus, keys
from raptorflow_bus.packed_script import PackedScript, call
from raptorflow_bus.wire import Wire

pytestmark = [pytest.mark.broker, pytest.mark.timeout(60)]

FIELD = "test|started"


def claim(wire: Wire, task_id: str) -> int:
    script = PackedScript("claim", wire)
    return int(script([keys.DONE_PREFIX + task_id, keys.METRICS], [0, FIELD, 1]))


def test_a_server_that_forgot_the_script_gets_it_and_the_call_runs_once(bus: Bus) -> None:
    wire = Wire(bus.redis)
    assert claim(wire, "t-1") == 1
    bus.redis.script_flush()
    assert claim(wire, "t-2") == 1
    assert int(bus.redis.hget(keys.METRICS, FIELD) or 0) == 2
    wire.close()


def test_an_error_reply_is_raised_with_its_message(bus: Bus) -> None:
    wire = Wire(bus.redis)
    bus.redis.set("not-a-list", "x")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        call(wire, "LPUSH", "not-a-list", "y")
    wire.close()


def kill_kept_connection(bus: Bus, wire: Wire) -> None:
    """The server drops the wire's connection: the next call finds it dead."""
    call(wire, "CLIENT", "SETNAME", "kept")
    clients = bus.redis.client_list()
    assert bus.redis.client_kill_filter(_id=next(c["id"] for c in clients if c["name"] == "kept"))


def test_a_wire_that_must_not_retry_reports_a_dead_connection_then_dials_again(
    bus: Bus,
) -> None:
    wire = Wire(bus.redis, retry=False)
    kill_kept_connection(bus, wire)
    with pytest.raises(redis.ConnectionError):
        call(wire, "INCR", "calls")
    assert call(wire, "INCR", "calls") == 1
    wire.close()


def test_the_default_wire_sends_a_call_again_on_a_fresh_connection(bus: Bus) -> None:
    wire = Wire(bus.redis)
    kill_kept_connection(bus, wire)
    assert call(wire, "INCR", "calls") == 1
    wire.close()
