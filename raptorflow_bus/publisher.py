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

from raptorflow_bus.envelope import Envelope
from raptorflow_bus.errors import Backpressure, BrokerUnavailable
from raptorflow_bus.redis_store import METRICS_KEY, metric_field
from raptorflow_bus.topology import PRIORITY_STEPS, PRIORITY_VALUES, Topology, priority_list
from raptorflow_bus.transport import kombu_message, wake_key

if TYPE_CHECKING:
    from raptorflow_bus.bus import Bus

Prepared = tuple[Envelope, str]

_PUBLISH = """
local nq = tonumber(ARGV[1])
local ns = tonumber(ARGV[2])
local p = 3
local limits, names, adds = {}, {}, {}
for i = 1, nq do limits[i] = tonumber(ARGV[p]); p = p + 1 end
for i = 1, nq do names[i] = ARGV[p]; p = p + 1 end
local npush = tonumber(ARGV[p]); p = p + 1
for j = 0, npush - 1 do
  local qi = tonumber(ARGV[p + 3 * j])
  adds[qi] = (adds[qi] or 0) + 1
end
for i = 1, nq do
  local len = 0
  for s = 1, ns do len = len + redis.call('LLEN', KEYS[1 + (i - 1) * ns + s]) end
  if len + (adds[i] or 0) > limits[i] then return {0, names[i], len, limits[i]} end
end
for j = 1, npush do
  redis.call('LPUSH', KEYS[1 + (tonumber(ARGV[p]) - 1) * ns + tonumber(ARGV[p + 1])], ARGV[p + 2])
  p = p + 3
end
for i = 1, nq do
  local wake = KEYS[1 + nq * ns + i]
  redis.call('LPUSH', wake, '1')
  redis.call('LTRIM', wake, 0, 0)
end
local nm = tonumber(ARGV[p]); p = p + 1
for j = 1, nm do
  redis.call('HINCRBY', KEYS[1], ARGV[p], tonumber(ARGV[p + 1]))
  p = p + 2
end
return {1}
"""


class Publisher(Protocol):
    def publish(self, prepared: Sequence[Prepared]) -> None: ...


class RedisPublisher:
    def __init__(self, client: redis.Redis[bytes], topology: Topology) -> None:
        self._topology = topology
        self._script = client.register_script(_PUBLISH)

    def publish(self, prepared: Sequence[Prepared]) -> None:
        topo = self._topology
        index: dict[str, int] = {}
        pushes: list[Any] = []
        published: dict[str, int] = {}
        for envelope, body in prepared:
            priority = PRIORITY_VALUES[envelope.priority]
            step = PRIORITY_STEPS.index(priority) + 1
            published[envelope.type] = published.get(envelope.type, 0) + 1
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
        for event_type, n in published.items():
            args += (metric_field(event_type, "published"), n)
        try:
            result = self._script(keys=keys, args=args)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise BrokerUnavailable(f"broker unreachable, event not published: {exc}") from exc
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
            bus.metrics.incr(envelope.type, "published")
        for envelope, body in prepared:
            data = json.loads(body)
            for consumer in bus.topology.consumers_for(envelope.routing_key):
                dispatch(bus, envelope, consumer, data)
