"""Putting validated envelopes onto consumer queues.

The Redis publisher does what Kombu's topic exchange emulation does (one copy
per bound queue, in Kombu's message format so a Kombu consumer reads it) but in
one Lua script: every copy lands or none does (trap 2), full queues refuse the
whole event (``Backpressure``), and the binding table is not re-read per publish.
Copies carry the anonymous exchange and their own queue as routing key, so a
visibility-timeout restore goes back to that queue only (trap 3), and each
written queue gets the wake token its consumers block on (``transport``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import redis

from raptorflow_bus import scripts
from raptorflow_bus.envelope import Envelope
from raptorflow_bus.errors import Backpressure, BrokerOutOfMemory, BrokerUnavailable
from raptorflow_bus.metrics import WORKSPACE_SCOPE
from raptorflow_bus.redis_store import METRICS_KEY, metric_field
from raptorflow_bus.replica_acks import ReplicaAcks
from raptorflow_bus.topology import PRIORITY_STEPS, PRIORITY_VALUES, Topology, priority_list
from raptorflow_bus.transport import kombu_message, wake_key

if TYPE_CHECKING:
    from raptorflow_bus.bus import Bus

Prepared = tuple[Envelope, str]


class Publisher(Protocol):
    def publish(self, prepared: Sequence[Prepared]) -> None: ...


class RedisPublisher:
    def __init__(
        self,
        client: redis.Redis[bytes],
        topology: Topology,
        replica_acks: ReplicaAcks | None = None,
        *,
        per_workspace: bool = False,
    ) -> None:
        self._client = client
        self._per_workspace = per_workspace
        self._topology = topology
        self._script = scripts.register(client, "publish")
        self._acks = replica_acks or ReplicaAcks()

    def publish(self, prepared: Sequence[Prepared]) -> None:
        topo = self._topology
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
            for consumer in topo.consumers_for(envelope.routing_key):
                qi = index.setdefault(consumer, len(index) + 1)
                pushes += (qi, step, kombu_message(body, topo.event_queue(consumer), priority))
        consumers = list(index)
        keys = [METRICS_KEY] + [
            priority_list(topo.event_queue(c), s) for c in consumers for s in PRIORITY_STEPS
        ]
        keys += [wake_key(topo.event_queue(c)) for c in consumers]
        args: list[Any] = [len(consumers), len(PRIORITY_STEPS)]
        args += [topo.max_length(c) for c in consumers]
        args += [topo.event_queue(c) for c in consumers]
        args += [len(pushes) // 3, *pushes, len(published)]
        for scope, n in published.items():
            args += (metric_field(scope, "published"), n)
        try:
            result = self._acks.run_script(self._client, self._script, keys, args)
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
        if int(result[0]) == 0:
            queue = result[1].decode() if isinstance(result[1], bytes) else str(result[1])
            raise Backpressure(queue, int(result[2]), int(result[3]))


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
