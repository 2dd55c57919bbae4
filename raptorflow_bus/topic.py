"""AMQP topic matching: ``*`` is exactly one word, ``#`` zero or more.

This is routing.py's matcher: ``Topology.consumers_for`` (which guilds hear an
event type, eager mode, ``subscribe``'s check) follows these rules, which
RabbitMQ also follows, so the routing data means the same on a native broker.
On Redis the fan-out follows the exchange's binding table with Kombu's own
regexes instead (``raptorflow_bus.bindings``), which differ at the edges (its
``a.#`` does not match ``a``, nor ``a.#.c`` match ``a.c``, and its ``*`` needs
a non-empty word); the fan-out is the union of both. routing.py is written so
that both agree on every catalogued key (``tests/test_routing.py``), so for
the bus's own queues the union adds nothing."""

from __future__ import annotations

from functools import lru_cache


def _match(pattern: tuple[str, ...], words: tuple[str, ...]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_match(rest, words[i:]) for i in range(len(words) + 1))
    if not words:
        return False
    if head == "*" or head == words[0]:
        return _match(rest, words[1:])
    return False


@lru_cache(maxsize=4096)
def topic_matches(pattern: str, routing_key: str) -> bool:
    return _match(tuple(pattern.split(".")), tuple(routing_key.split(".")))
