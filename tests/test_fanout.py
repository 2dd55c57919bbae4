"""The exchange's binding table is the truth (issue 10): a queue that anyone binds
to ``raptorflow.events`` with stock Kombu gets what its patterns match from
``bus.emit``, and an envelope a stock Kombu producer publishes into the
exchange is handled by the guild workers as if the bus had emitted it.

Every Kombu client here is a default one: ``Connection(redis_url)``, Kombu's own
Redis transport, default options, default consumer settings."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection, Exchange, Message, Queue

import routing
from raptorflow_bus import Backpressure, Bus, Channel, Topology, keys
from raptorflow_bus.bindings import BindingTable
from raptorflow_bus.envelope import Envelope
from raptorflow_bus.publisher import RedisPublisher
from raptorflow_bus.quarantine import DISPATCH
from raptorflow_bus.queues import UNACKED_KEY, is_idle, queue_state
from tests.harness import RedisBackend, guild_worker, wait_until
from tests.payloads import VALID
from tests.test_bindings import KEYS, PATTERNS

pytestmark = [pytest.mark.broker, pytest.mark.timeout(120)]

EXCHANGE = Exchange("raptorflow.events", type="topic")
TABLE = keys.binding_table("raptorflow.events")
AGENT, SIGNAL = "agent.task_started", "signal.detected"


def depth(bus: Bus, queue: str) -> int:
    return queue_state(bus, queue).depth


def bind(redis_url: str, queue: str, pattern: str) -> Queue:
    """A third party's queue, declared by a default Kombu client."""
    declared = Queue(queue, EXCHANGE, routing_key=pattern)
    with Connection(redis_url) as conn:
        declared(conn.default_channel).declare()
    return declared


def emit(bus: Bus, event_type: str, n: int = 1) -> None:
    for _ in range(n):
        bus.emit(event_type, VALID[event_type], workspace_id="ws-1")


def drain(redis_url: str, queue: Queue) -> list[Message]:
    """Everything in ``queue``, read by a default Kombu consumer."""
    got: list[Message] = []

    def on_message(body: Any, message: Message) -> None:
        got.append(message)
        message.ack()

    with Connection(redis_url) as conn, conn.Consumer([queue], callbacks=[on_message]):
        while True:
            try:
                conn.drain_events(timeout=1)
            except TimeoutError:
                return got


def stock_publish(redis_url: str, body: Any, routing_key: str) -> None:
    """What a stock Kombu producer does: publish into the topic exchange."""
    with Connection(redis_url) as conn, conn.Producer() as producer:
        producer.publish(body, exchange=EXCHANGE, routing_key=routing_key, declare=[EXCHANGE])


# What publish.lua calls inside Redis (INFO commandstats counts those too).
IN_SCRIPT = {"get", "scard", "smembers", "exists", "llen", "lpush", "ltrim", "hincrby", "set"}


def command_calls(bus: Bus) -> Counter[str]:
    """Calls per command since CONFIG RESETSTAT, the test's own left out."""
    stats: dict[str, dict[str, int]] = bus.redis.info("commandstats")
    calls = Counter({k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()})
    # Redis 7 counts subcommands apart ("config|resetstat"); 6.2 does not.
    for own in [c for c in calls if c.split("|")[0] in ("info", "config")]:
        calls.pop(own)
    assert set(calls) - IN_SCRIPT <= {"evalsha"}, calls
    return calls


def test_third_party_queues_receive_exactly_the_events_their_patterns_match(
    bus: Bus, redis_url: str
) -> None:
    audit = bind(redis_url, "external.audit", "raptorflow.events.#")
    agents = bind(redis_url, "external.agents", "raptorflow.events.agent.*")
    emit(bus, AGENT, 10)
    emit(bus, SIGNAL, 10)

    assert {q: depth(bus, q) for q in ("research", "matrix", "council")} == {
        "research": 10,
        "matrix": 10,
        "council": 20,
    }
    audited, agent_events = drain(redis_url, audit), drain(redis_url, agents)
    assert Counter(m.payload["type"] for m in audited) == {AGENT: 10, SIGNAL: 10}
    assert Counter(m.payload["type"] for m in agent_events) == {AGENT: 10}
    for message in audited + agent_events:
        assert message.content_type == "application/json"
        assert message.decode() == message.payload
        Envelope.model_validate(message.payload)
    assert depth(bus, "external.audit") == depth(bus, "external.agents") == 0


def test_the_table_a_default_kombu_client_writes_routes_as_kombu_routes_it(
    bus: Bus, redis_url: str
) -> None:
    """tests/test_bindings.py's table, bound for real: what Redis holds is read
    by the bus and by Kombu's own channel, and both route every key alike."""
    with Connection(redis_url) as conn:
        channel: Any = conn.default_channel
        for i, pattern in enumerate(PATTERNS):
            Queue(f"t{i}", EXCHANGE, routing_key=pattern)(channel).declare()
        table = BindingTable.parse("-", bus.redis.smembers(TABLE))
        lookup = channel.typeof(EXCHANGE.name).lookup
        for key in KEYS:
            kombu = {q for q in lookup(channel.get_table(EXCHANGE.name), EXCHANGE.name, key, None)}
            own = {q for q in kombu if not q.startswith("t")}
            assert table.queues_for(key) == tuple(sorted(kombu)), key
            assert set(bus.topology.consumers_for(key)) >= own, key


def test_a_binding_a_stock_client_adds_or_removes_is_seen_by_the_next_emit(
    bus: Bus, redis_url: str
) -> None:
    """Stock Kombu removes a binding from Redis only when the connection that
    declared it deletes the queue (its queue_unbind forgets it locally)."""
    emit(bus, SIGNAL)  # the publisher now holds the table
    with Connection(redis_url) as conn:
        late = Queue("external.late", EXCHANGE, routing_key="raptorflow.events.signal.*")
        bound = late(conn.default_channel)
        bound.declare()
        emit(bus, SIGNAL)
        assert depth(bus, "external.late") == 1
        bound.delete()
    assert not any(m.endswith(b"external.late") for m in bus.redis.smembers(TABLE))
    emit(bus, SIGNAL)
    assert not bus.redis.exists("external.late")
    assert depth(bus, "research") == 3


def test_the_bus_transport_unbinds_in_redis_and_bumps_the_version(bus: Bus, redis_url: str) -> None:
    """Stock Kombu's queue_unbind leaves the member in Redis (producers keep
    routing to the queue); the bus's transport removes it."""
    version = keys.bindings_version("raptorflow.events")
    options = bus.app.conf.broker_transport_options
    queue = Queue("external.tmp", EXCHANGE, routing_key="raptorflow.events.signal.*")
    with Connection(
        redis_url, transport="raptorflow_bus.transport:Transport", transport_options=options
    ) as conn:
        channel = conn.default_channel
        before = int(bus.redis.get(version) or 0)
        bound = queue(channel)
        bound.declare()
        assert int(bus.redis.get(version) or 0) > before
        emit(bus, SIGNAL)
        assert depth(bus, "external.tmp") == 1

        before = int(bus.redis.get(version) or 0)
        bound.unbind_from(EXCHANGE, routing_key="raptorflow.events.signal.*")
        assert int(bus.redis.get(version) or 0) == before + 1
    assert not any(m.endswith(b"external.tmp") for m in bus.redis.smembers(TABLE))
    emit(bus, SIGNAL)
    assert depth(bus, "external.tmp") == 1

    with Connection(redis_url) as stock:
        bound = queue(stock.default_channel)
        bound.declare()
        bound.unbind_from(EXCHANGE, routing_key="raptorflow.events.signal.*")
    assert any(m.endswith(b"external.tmp") for m in bus.redis.smembers(TABLE))


def test_a_swap_that_keeps_the_member_count_is_seen_once_the_cached_table_ages(
    bus: Bus, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The documented window: a stock client that unbinds one queue and binds
    another moves neither the version nor the count."""
    monkeypatch.setattr(RedisPublisher, "max_age_seconds", 3600.0)
    with Connection(redis_url) as conn:
        old = Queue("external.old", EXCHANGE, routing_key="raptorflow.events.signal.*")
        bound = old(conn.default_channel)
        bound.declare()
        emit(bus, SIGNAL)
        bound.delete()
    bind(redis_url, "external.new", "raptorflow.events.signal.*")

    emit(bus, SIGNAL)
    assert (depth(bus, "external.old"), depth(bus, "external.new")) == (1, 0)
    monkeypatch.setattr(RedisPublisher, "max_age_seconds", 0.0)
    emit(bus, SIGNAL)
    assert (depth(bus, "external.old"), depth(bus, "external.new")) == (1, 1)


def test_a_steady_state_emit_is_one_script_call_and_a_changed_table_one_more(
    bus: Bus, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(RedisPublisher, "max_age_seconds", 3600.0)
    bind(redis_url, "external.audit", "raptorflow.events.#")
    emit(bus, SIGNAL)
    bus.redis.config_resetstat()
    emit(bus, SIGNAL, 25)
    emit(bus, AGENT, 25)
    calls = command_calls(bus)
    # One script call per emit, one table check in each, no table read.
    assert (calls["evalsha"], calls["get"], calls["scard"], calls["smembers"]) == (50, 50, 50, 0)

    bind(redis_url, "external.agents", "raptorflow.events.agent.*")
    bus.redis.config_resetstat()
    emit(bus, AGENT)
    emit(bus, AGENT)
    calls = command_calls(bus)
    assert (calls["evalsha"], calls["smembers"]) == (3, 1)
    assert depth(bus, "external.agents") == 2


def test_a_full_foreign_queue_refuses_the_emit_whole(redis_url: str) -> None:
    base = Topology.from_module(routing)
    small = Topology.build(
        [Channel(**{**ch.__dict__, "max_queue_length": 5}) for ch in base.channels.values()],
        base.consumers.values(),
    )
    with RedisBackend(redis_url).bus(topology=small) as bus:
        assert bus.topology.foreign_max_length == 5
        audit = bind(redis_url, "external.audit", "raptorflow.events.#")
        emit(bus, SIGNAL, 4)
        with Connection(redis_url) as conn, conn.Producer() as producer:
            producer.publish({"from": "someone else"}, routing_key="external.audit")
        with pytest.raises(Backpressure) as refused:
            emit(bus, SIGNAL)
        assert refused.value.queue == "external.audit"
        assert {q: depth(bus, q) for q in ("external.audit", "research", "council")} == {
            "external.audit": 5,
            "research": 4,
            "council": 4,
        }
        assert bus.get_metrics()["totals"]["published"] == 4
        drain(redis_url, audit)
        emit(bus, SIGNAL)
        assert depth(bus, "external.audit") == 1


def test_the_bus_queues_get_every_event_when_the_table_is_deleted_and_it_comes_back(
    bus: Bus, redis_url: str
) -> None:
    own = sum(len(bus.topology.patterns(c)) for c in bus.topology.consumers)
    assert bus.redis.scard(TABLE) == own
    emit(bus, SIGNAL)
    bus.redis.delete(TABLE)
    emit(bus, SIGNAL)
    assert (depth(bus, "research"), depth(bus, "council")) == (2, 2)
    wait_until(lambda: bus.redis.scard(TABLE) == own, timeout=30, what="the bindings again")
    envelope = bus.prepare(SIGNAL, VALID[SIGNAL], workspace_id="ws-1")[0]
    stock_publish(redis_url, envelope.to_json(), envelope.routing_key)
    assert (depth(bus, "research"), depth(bus, "council")) == (3, 3)


def test_a_restored_stock_producer_message_goes_back_to_its_own_queue_only(
    bus: Bus, redis_url: str
) -> None:
    """It carries exchange raptorflow.events: restored by (exchange, routing
    key) it would be fanned out to every bound queue again (trap 3)."""
    envelope = bus.prepare(SIGNAL, VALID[SIGNAL], workspace_id="ws-1")[0]
    stock_publish(redis_url, envelope.to_json(), envelope.routing_key)
    assert (depth(bus, "research"), depth(bus, "council")) == (1, 1)
    records: list[list[Any]] = []

    def requeue(body: Any, message: Message) -> None:
        records.append(json.loads(bus.redis.hget(UNACKED_KEY, message.delivery_tag) or b"[]"))
        message.requeue()

    options = bus.app.conf.broker_transport_options
    with Connection(
        redis_url, transport="raptorflow_bus.transport:Transport", transport_options=options
    ) as conn:
        queue = bus.topology.kombu_event_queue("research")
        with conn.Consumer(queue, callbacks=[requeue], accept=["json", "text/plain"]):
            conn.drain_events(timeout=10)
    assert [r[1:] for r in records] == [["", "research"]]
    assert records[0][0]["properties"]["delivery_info"]["exchange"] == "raptorflow.events"
    assert (depth(bus, "research"), depth(bus, "council")) == (1, 1)
    assert bus.redis.hlen(UNACKED_KEY) == 0


def succeeded(bus: Bus, handler: str) -> int:
    return int(bus.get_metrics()["handlers"].get(handler, {}).get("succeeded", 0))


def test_a_stock_producer_envelope_is_handled_by_the_guild_once(
    bus: Bus, redis_url: str, tmp_path: Path
) -> None:
    envelope = bus.prepare(SIGNAL, VALID[SIGNAL], workspace_id="ws-1")[0]
    stock_publish(redis_url, envelope.to_json(), envelope.routing_key)
    with guild_worker(redis_url, tmp_path / "worker.log"):
        wait_until(
            lambda: succeeded(bus, "research.score_signal") == 1,
            timeout=60,
            what="the research handler",
        )
        wait_until(lambda: is_idle(bus, ["research"]), timeout=30, what="research to drain")
    handled = bus.get_metrics()["handlers"]["research.score_signal"]
    assert (handled["delivered"], handled["succeeded"], handled.get("duplicates", 0)) == (1, 1, 0)
    assert bus.dlq.count() == 0


def test_anything_else_a_stock_producer_sends_is_quarantined_with_its_reason(
    bus: Bus, redis_url: str, tmp_path: Path
) -> None:
    def envelope(**fields: Any) -> str:
        data = {"correlation_id": "c-1", "request_id": "c-1", "workspace_id": "ws-1"}
        return Envelope(**{"type": SIGNAL, "payload": VALID[SIGNAL], **data, **fields}).to_json()

    key = "raptorflow.events.signal.detected"
    sent = {
        "NotJSON": ("no json here", key),
        "ValidationError": ({"hello": "world"}, key),
        "UnknownEventType": (envelope(type="signal.unknown"), "raptorflow.events.signal.unknown"),
        "InvalidPayload": (envelope(payload={**VALID[SIGNAL], "strength": 7}), key),
        "MissingWorkspace": (envelope(workspace_id=None), key),
        "RoutingKeyMismatch": (envelope(), "raptorflow.events.model.detected"),
    }
    for body, routing_key in sent.values():
        stock_publish(redis_url, body, routing_key)
    assert depth(bus, "research") == len(sent)
    with guild_worker(redis_url, tmp_path / "worker.log"):
        wait_until(
            lambda: len(bus.dlq.list(guild="research")) == len(sent),
            timeout=60,
            what="every bad message in the quarantine",
        )
        wait_until(lambda: is_idle(bus, ["research"]), timeout=30, what="research to drain")
    letters = {letter.exception_type: letter for letter in bus.dlq.list(guild="research")}
    assert set(letters) == set(sent)
    assert all(letter.handler == DISPATCH and letter.message for letter in letters.values())
    assert "not JSON" in letters["NotJSON"].message
    assert "strength" in letters["InvalidPayload"].message
    assert "raptorflow.events.model.detected" in letters["RoutingKeyMismatch"].message
    assert succeeded(bus, "research.score_signal") == 0
