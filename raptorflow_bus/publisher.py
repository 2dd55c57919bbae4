"""Putting validated envelopes onto the queues bound to the exchange.

The Redis publisher does what Kombu's topic exchange emulation does (one copy
per bound queue, in Kombu's message format so a stock Kombu consumer reads the
envelope) but in one Lua script: every copy lands or none does (trap 2), and a
full queue refuses the whole event (``Backpressure``).

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
from typing import TYPE_CHECKING, Any, Protocol

import redis

from raptorflow_bus import keys, scripts
from raptorflow_bus.bindings import BindingTable
from raptorflow_bus.envelope import Envelope
from raptorflow_bus.errors import Backpressure, BrokerOutOfMemory, BrokerUnavailable
from raptorflow_bus.logs import log
from raptorflow_bus.metrics import WORKSPACE_SCOPE
from raptorflow_bus.redis_store import METRICS_KEY, metric_field
from raptorflow_bus.replica_acks import ReplicaAcks
from raptorflow_bus.topology import PRIORITY_STEPS, PRIORITY_VALUES, Topology, priority_list
from raptorflow_bus.transport import kombu_message, wake_key

if TYPE_CHECKING:
    from raptorflow_bus.bus import Bus

Prepared = tuple[Envelope, str]

TABLE_MAX_AGE_SECONDS = 2.0
# A token the script never computes: makes it answer with the table.
RELOAD = "reload"
# The cached table, the table the script sent back, then that table again
# without the check (it is one round trip old, as fresh as Kombu's own read).
ATTEMPTS = 3
PUBLISHED, REFUSED, STALE = 1, 0, 2


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
        self._client = client
        self._per_workspace = per_workspace
        self._topology = topology
        self._script = scripts.register(client, "publish")
        self._acks = replica_acks or ReplicaAcks()
        self._on_missing = on_missing
        if max_age_seconds is not None:
            self.max_age_seconds = max_age_seconds
        self._table_keys = [
            keys.bindings_version(topology.exchange),
            keys.binding_table(topology.exchange),
        ]
        self._limits = {topology.event_queue(c): topology.max_length(c) for c in topology.consumers}
        self._reported: tuple[str, ...] = ()
        # (table, when it was read); replaced whole, so threads share it safely.
        self._cached: tuple[BindingTable, float] = (BindingTable(RELOAD, ()), -float("inf"))

    @property
    def table(self) -> BindingTable:
        """The binding table the last emit was fanned out with."""
        return self._cached[0]

    def publish(self, prepared: Sequence[Prepared]) -> None:
        table, read_at = self._cached
        token = table.token if time.monotonic() - read_at < self.max_age_seconds else RELOAD
        for attempt in range(ATTEMPTS):
            result = self._run(prepared, table, token if attempt < ATTEMPTS - 1 else "")
            if int(result[0]) != STALE:
                break
            table = self._load(_text(result[1]), result[2:])
            token = table.token
        if int(result[0]) == REFUSED:
            raise Backpressure(_text(result[1]), int(result[2]), int(result[3]))

    def queues_for(self, routing_key: str, table: BindingTable) -> tuple[str, ...]:
        """routing.py's consumers for ``routing_key``, then the other queues the
        table routes it to."""
        topo = self._topology
        own = tuple(topo.event_queue(c) for c in topo.consumers_for(routing_key))
        return own + tuple(q for q in table.queues_for(routing_key) if q not in own)

    def _load(self, token: str, members: Sequence[bytes]) -> BindingTable:
        table = BindingTable.parse(token, members)
        self._cached = (table, time.monotonic())
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

    def _run(self, prepared: Sequence[Prepared], table: BindingTable, token: str) -> Any:
        index: dict[str, int] = {}
        pushes: list[Any] = []
        published: dict[str, int] = {}
        for envelope, body in prepared:
            priority = PRIORITY_VALUES[envelope.priority]
            step = PRIORITY_STEPS.index(priority) + 1
            published[envelope.type] = published.get(envelope.type, 0) + 1
            if self._per_workspace and envelope.workspace_id is not None:
                scope = WORKSPACE_SCOPE + envelope.workspace_id
                published[scope] = published.get(scope, 0) + 1
            for queue in self.queues_for(envelope.routing_key, table):
                qi = index.setdefault(queue, len(index) + 1)
                pushes += (qi, step, kombu_message(body, queue, priority))
        queues = list(index)
        default_limit = self._topology.foreign_max_length
        script_keys = [METRICS_KEY, *self._table_keys]
        script_keys += [priority_list(q, s) for q in queues for s in PRIORITY_STEPS]
        script_keys += [wake_key(q) for q in queues]
        args: list[Any] = [token, len(queues), len(PRIORITY_STEPS)]
        args += [self._limits.get(q, default_limit) for q in queues]
        args += queues
        args += [len(pushes) // 3, *pushes, len(published)]
        for scope, n in published.items():
            args += (metric_field(scope, "published"), n)
        try:
            return self._acks.run_script(self._client, self._script, script_keys, args)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise BrokerUnavailable(f"broker unreachable, event not published: {exc}") from exc
        except redis.ResponseError as exc:
            # Before Redis 7 a script may write past maxmemory once it has
            # written; the first LPUSH is refused, so nothing is half-published.
            # Redis 6.2 reports it inside the script error, 7.x as OutOfMemoryError;
            # both say this.
            if "used memory > 'maxmemory'" in str(exc):
                raise BrokerOutOfMemory(
                    f"broker out of memory, event not published: {exc}"
                ) from exc
            raise


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


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
