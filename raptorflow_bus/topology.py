"""Channels, consumers and the queues they become, built from routing data.

A *channel* is a named set of routing-key patterns with a retention and a queue
limit (the seed's vocabulary); a *consumer* hears some channels. On the broker a
consumer is one durable queue bound to the topic exchange with every pattern of
its channels, plus a second queue ``<consumer>.handlers`` that holds one Celery
task per (event, handler) so retries never travel through the exchange again."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cached_property
from types import ModuleType

from kombu import Exchange, Queue, binding

from raptorflow_bus.envelope import ROUTING_KEY_PREFIX, Priority, routing_key_for
from raptorflow_bus.errors import ConfigurationError, UnknownConsumer
from raptorflow_bus.topic import topic_matches

# Redis lists are popped in step order, so the smallest number is served first.
PRIORITY_STEPS: tuple[int, ...] = (0, 3, 6, 9)
PRIORITY_VALUES: Mapping[Priority, int] = {
    Priority.CRITICAL: 0,
    Priority.HIGH: 3,
    Priority.NORMAL: 6,
    Priority.LOW: 9,
}
# Kombu's default separator, for priority lists and binding-table members: a
# stock Kombu or Celery client with default options reads and writes the same
# keys (with ``:`` they crashed on the binding table, and missed the lists).
PRIORITY_SEP = "\x06\x16"


def priority_list(queue: str, step: int) -> str:
    """The Redis list Kombu uses for ``queue`` at priority ``step``."""
    return queue if step == 0 else f"{queue}{PRIORITY_SEP}{step}"


@dataclass(frozen=True)
class Channel:
    name: str
    purpose: str
    patterns: tuple[str, ...]
    retention_hours: float
    max_queue_length: int


@dataclass(frozen=True)
class Consumer:
    name: str
    channels: tuple[str, ...]
    description: str = ""


@dataclass(frozen=True)
class Topology:
    exchange: str
    channels: Mapping[str, Channel]
    consumers: Mapping[str, Consumer]
    dlq_capacity: int
    _route_cache: dict[str, tuple[str, ...]] = field(
        default_factory=dict, compare=False, repr=False
    )
    # Read by every handler run (its expiry check): computed once per pair.
    _retention_cache: dict[tuple[str, str], timedelta] = field(
        default_factory=dict, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        if self.dlq_capacity <= 0:
            raise ConfigurationError(f"dlq capacity must be positive, got {self.dlq_capacity}")
        for ch in self.channels.values():
            if ch.retention_hours <= 0 or ch.max_queue_length <= 0:
                raise ConfigurationError(
                    f"channel {ch.name!r}: retention and queue length must be positive"
                )
            for pattern in ch.patterns:
                if not pattern.startswith(ROUTING_KEY_PREFIX):
                    raise ConfigurationError(
                        f"channel {ch.name!r}: pattern {pattern!r} must start with "
                        f"{ROUTING_KEY_PREFIX!r}"
                    )
        for consumer in self.consumers.values():
            for name in consumer.channels:
                if name not in self.channels:
                    raise ConfigurationError(
                        f"consumer {consumer.name!r} hears unknown channel {name!r}"
                    )

    @classmethod
    def build(
        cls,
        channels: Iterable[Channel],
        consumers: Iterable[Consumer],
        *,
        exchange: str = "raptorflow.events",
        dlq_capacity: int = 50_000,
    ) -> Topology:
        return cls(
            exchange=exchange,
            channels={c.name: c for c in channels},
            consumers={c.name: c for c in consumers},
            dlq_capacity=dlq_capacity,
        )

    @classmethod
    def from_module(cls, module: ModuleType) -> Topology:
        return cls.build(
            module.CHANNELS,
            module.CONSUMERS,
            exchange=module.EXCHANGE,
            dlq_capacity=module.DLQ_CAPACITY,
        )

    def consumer(self, name: str) -> Consumer:
        try:
            return self.consumers[name]
        except KeyError:
            known = ", ".join(sorted(self.consumers))
            raise UnknownConsumer(f"unknown guild/consumer {name!r}; known: {known}") from None

    def patterns(self, consumer: str) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for ch in self.consumer(consumer).channels:
            for pattern in self.channels[ch].patterns:
                seen[pattern] = None
        return tuple(seen)

    def consumers_for(self, routing_key: str) -> tuple[str, ...]:
        cached = self._route_cache.get(routing_key)
        if cached is None:
            cached = tuple(
                name
                for name in self.consumers
                if any(topic_matches(p, routing_key) for p in self.patterns(name))
            )
            self._route_cache[routing_key] = cached
        return cached

    def channels_for(self, event_type: str) -> tuple[str, ...]:
        key = routing_key_for(event_type)
        return tuple(
            ch.name
            for ch in self.channels.values()
            if any(topic_matches(p, key) for p in ch.patterns)
        )

    def retention(self, event_type: str, consumer: str) -> timedelta:
        """The longest retention among the channels through which ``consumer`` hears it."""
        cached = self._retention_cache.get((event_type, consumer))
        if cached is not None:
            return cached
        heard = set(self.consumer(consumer).channels)
        hours = [
            self.channels[ch].retention_hours for ch in self.channels_for(event_type) if ch in heard
        ]
        cached = timedelta(
            hours=max(hours, default=max(c.retention_hours for c in self.channels.values()))
        )
        self._retention_cache[(event_type, consumer)] = cached
        return cached

    def max_length(self, consumer: str) -> int:
        return max(self.channels[ch].max_queue_length for ch in self.consumer(consumer).channels)

    @property
    def foreign_max_length(self) -> int:
        """The limit of a queue routing.py does not know (bound to the exchange by
        someone else): the largest channel limit, so a third party's queue takes
        as much as the roomiest of ours before it refuses an emit."""
        return max((ch.max_queue_length for ch in self.channels.values()), default=50_000)

    @staticmethod
    def event_queue(consumer: str) -> str:
        return consumer

    @staticmethod
    def handler_queue(consumer: str) -> str:
        return f"{consumer}.handlers"

    def all_queue_names(self) -> tuple[str, ...]:
        return tuple(
            q for c in self.consumers for q in (self.event_queue(c), self.handler_queue(c))
        )

    def markdown(self) -> str:
        """The routing table as the README shows it (tested to stay in sync)."""
        lines = [
            "| channel | binding patterns (`raptorflow.events.` omitted) | retention | "
            "max queue | heard by |",
            "|---|---|---|---|---|",
        ]
        for ch in self.channels.values():
            heard = [c.name for c in self.consumers.values() if ch.name in c.channels]
            patterns = ", ".join(f"`{p.removeprefix(ROUTING_KEY_PREFIX)}`" for p in ch.patterns)
            lines.append(
                f"| {ch.name} | {patterns} | {ch.retention_hours:g} h | "
                f"{ch.max_queue_length:,} | {', '.join(heard)} |"
            )
        return "\n".join(lines)

    @cached_property
    def kombu_exchange(self) -> Exchange:
        return Exchange(self.exchange, type="topic", durable=True)

    def kombu_event_queue(self, consumer: str) -> Queue:
        return Queue(
            self.event_queue(consumer),
            bindings=[binding(self.kombu_exchange, routing_key=p) for p in self.patterns(consumer)],
            durable=True,
            max_priority=max(PRIORITY_STEPS),
        )

    def kombu_handler_queue(self, consumer: str) -> Queue:
        name = self.handler_queue(consumer)
        return Queue(
            name,
            Exchange(name, type="direct", durable=True),
            routing_key=name,
            durable=True,
            max_priority=max(PRIORITY_STEPS),
        )
