"""AMQP topic matching: ``*`` is exactly one word, ``#`` zero or more.

Kombu's Redis transport matches with a regex that differs at the edges of ``#``
(its ``a.#`` does not match ``a``, nor ``a.#.c`` match ``a.c``). The
bus computes fan-out itself with these AMQP rules, which RabbitMQ also follows,
and routing.py is written so that both agree on every catalogued key (tested)."""

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
