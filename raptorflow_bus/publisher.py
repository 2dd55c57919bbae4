"""Putting validated envelopes onto the queues bound to the exchange.

The Redis publisher does what Kombu's topic exchange emulation does (one copy
per bound queue, in Kombu's message format so a stock Kombu consumer reads the
envelope) but in one Lua script: every copy lands or none does (trap 2), and a
full queue refuses the whole event (``Backpressure``). How a call is built and
sent: ``publish_call`` (the bytes), ``fanout_job`` (the rules: a changed table,
a lost script, a batch too big for one call, per-event mode), ``wire`` (the
round trip, below redis-py's client layer); the async publish drives the same
job on its own connection (``group_commit``, ``aio_wire``).

Which queues: every one the exchange's binding table in Redis routes the key
to, matched exactly as Kombu matches (``bindings``), so a queue a third party
binds with stock Kombu gets its copy; united with the consumers routing.py
names, so the bus's own queues still get every event if someone deletes the
table. Kombu re-reads the table on every publish; here a parsed copy is kept
with the token it was read at, and the script checks that token before it
writes: the steady state stays one script call per emit, and a changed table
costs one more (the script returns the new members). A stock client that
unbinds one queue and binds another leaves the token unchanged (its changes
move the member count, not the version), so a copy older than
``TABLE_MAX_AGE_SECONDS`` is read again anyway: that is the longest a change
made that way goes unseen.

Copies carry the anonymous exchange and their own queue as routing key, so a
visibility-timeout restore goes back to that queue only (trap 3), and each
written queue gets the wake token its consumers block on (``transport``)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

import redis

from raptorflow_bus import scripts
from raptorflow_bus.bindings import BindingTable
from raptorflow_bus.envelope import Envelope
from raptorflow_bus.fanout_job import RELOAD, FanoutJob, Outcome
from raptorflow_bus.logs import log
from raptorflow_bus.publish_call import CallBuilder
from raptorflow_bus.replica_acks import ReplicaAcks
from raptorflow_bus.topology import Topology
from raptorflow_bus.wire import Wire, WireFailure

if TYPE_CHECKING:
    from raptorflow_bus.bus import Bus

Prepared = tuple[Envelope, str]

TABLE_MAX_AGE_SECONDS = 2.0


class Publisher(Protocol):
    def publish(self, prepared: Sequence[Prepared]) -> None: ...


class RedisPublisher:
    #: How long a cached binding table is trusted without being read again.
    max_age_seconds: float = TABLE_MAX_AGE_SECONDS

    def __init__(
        self,
        client: redis.Redis[bytes],
        topology: Topology,
        replica_acks: ReplicaAcks | None = None,
        *,
        per_workspace: bool = False,
        on_missing: Callable[[Sequence[tuple[str, str]]], None] | None = None,
        max_age_seconds: float | None = None,
    ) -> None:
        self._topology = topology
        script = scripts.register(client, "publish")
        self.script_source: str = script.script
        self.replica_acks = replica_acks or ReplicaAcks()
        self._on_missing = on_missing
        if max_age_seconds is not None:
            self.max_age_seconds = max_age_seconds
        limits = {topology.event_queue(c): topology.max_length(c) for c in topology.consumers}
        foreign = topology.foreign_max_length
        self.builder = CallBuilder(
            script.sha,
            lambda queue: limits.get(queue, foreign),
            per_workspace=per_workspace,
            exchange=topology.exchange,
        )
        self.wire = Wire(client)
        self._reported: tuple[str, ...] = ()
        # (table, when it was read, its routes); replaced whole, so threads share it safely.
        self._cached: tuple[BindingTable, float, dict[str, tuple[str, ...]]] = (
            BindingTable(RELOAD, ()),
            -float("inf"),
            {},
        )

    @property
    def table(self) -> BindingTable:
        """The binding table the last emit was fanned out with."""
        return self._cached[0]

    def table_and_token(self) -> tuple[BindingTable, str]:
        """The cached table, and the token to check it with (RELOAD once it aged)."""
        table, read_at, _ = self._cached
        fresh = time.monotonic() - read_at < self.max_age_seconds
        return table, table.token if fresh else RELOAD

    def publish(self, prepared: Sequence[Prepared]) -> None:
        """Every event to every queue it routes to, or raise (``fanout_job``:
        a batch over the call bounds is split, and may raise ``BatchInterrupted``)."""
        self._drive(FanoutJob(self, prepared, each=False))

    def publish_each(self, prepared: Sequence[Prepared]) -> list[Outcome]:
        """Each event on its own: None where it was published, else its error."""
        job = FanoutJob(self, prepared, each=True)
        self._drive(job)
        return job.outcomes

    def _drive(self, job: FanoutJob) -> None:
        while (commands := job.next_round()) is not None:
            try:
                replies = self.wire.roundtrip(commands)
            except WireFailure as failure:
                job.feed(failure.replies, failure.cause)
            else:
                job.feed(replies)

    def close(self) -> None:
        self.wire.close()

    def queues_for(self, routing_key: str, table: BindingTable) -> tuple[str, ...]:
        """routing.py's consumers for ``routing_key``, then the other queues the
        table routes it to."""
        topo = self._topology
        own = tuple(topo.event_queue(c) for c in topo.consumers_for(routing_key))
        return own + tuple(q for q in table.queues_for(routing_key) if q not in own)

    def routes(self, prepared: Sequence[Prepared], table: BindingTable) -> list[tuple[str, ...]]:
        """Each event's queues (``queues_for``), kept per event type with the
        table they were computed from; an event of one type is the same tuple."""
        cached = self._cached
        by_type = cached[2] if cached[0] is table else {}
        routes = []
        for envelope, _ in prepared:
            found = by_type.get(envelope.type)
            if found is None:
                found = self.queues_for(envelope.routing_key, table)
                if len(by_type) < 4096:
                    by_type[envelope.type] = found
            routes.append(found)
        return routes

    def reload(self, token: str, members: Sequence[bytes]) -> BindingTable:
        """Take the table the script sent back."""
        table = BindingTable.parse(token, members)
        self._cached = (table, time.monotonic(), {})
        if table.unusable and table.unusable != self._reported:
            self._reported = table.unusable
            log(
                logging.ERROR,
                f"ignoring {len(table.unusable)} binding(s) of {self._topology.exchange!r} "
                f"that Kombu could not route with either: {table.unusable[:3]!r}",
            )
        missing = table.missing(self._topology)
        if missing and self._on_missing is not None:
            self._on_missing(missing)
        return table


class EagerPublisher:
    """Runs the dispatch hop in-process, through the same code the worker uses."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus

    def publish(self, prepared: Sequence[Prepared]) -> None:
        from raptorflow_bus.dispatch import dispatch

        bus = self._bus
        for envelope, _ in prepared:
            bus.metrics.incr(envelope.type, "published", workspace=envelope.workspace_id)
        for envelope, body in prepared:
            data = json.loads(body)
            for consumer in bus.topology.consumers_for(envelope.routing_key):
                dispatch(bus, envelope, consumer, data)
