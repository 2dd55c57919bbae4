"""Handler-start marks: how both sides of a comparison report that a handler ran.

The bus's no-op handler and plain Celery's no-op task call the same ``record``,
so completion detection adds exactly the same Redis work to both sides: one
RPUSH per handler run, onto ``MARKS_KEY``, of ``"<sent> <started>"``. Both
stamps are ``time.monotonic_ns()``, which on Linux is CLOCK_MONOTONIC, one
clock for every process of the machine, so a stamp taken by the sender in the
benchmark process and one taken by a worker process can be subtracted.

The sent stamp travels in the event itself (the signal's ``signal_id``), so
neither side needs anything the other lacks."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import redis

MARKS_KEY = "bench:marks"
# Workers read the broker's address from here (the bus's own variable, so a bus
# worker and a plain Celery worker are given the same one).
URL_ENV = "RAPTORBUS_BROKER_URL"
SENT_PREFIX = "t"

_client: tuple[int, redis.Redis[bytes]] | None = None


def stamp_id(sent_ns: int) -> str:
    """A ``signal_id`` (``Id``: letters, digits, ``_.:-``) carrying the send time."""
    return f"{SENT_PREFIX}{sent_ns}"


def sent_of(signal_id: str) -> int:
    return int(signal_id[len(SENT_PREFIX) :]) if signal_id.startswith(SENT_PREFIX) else 0


def _redis() -> redis.Redis[bytes]:
    """One client per process; a prefork child makes its own rather than share
    the parent's socket."""
    global _client
    pid = os.getpid()
    if _client is None or _client[0] != pid:
        _client = (pid, redis.Redis.from_url(os.environ[URL_ENV]))
    return _client[1]


def record(signal_id: str) -> None:
    """Called first thing by each no-op handler: the start stamp is taken
    before the Redis round trip."""
    started = time.monotonic_ns()
    _redis().rpush(MARKS_KEY, f"{sent_of(signal_id)} {started}")


@dataclass(frozen=True)
class Mark:
    sent_ns: int
    started_ns: int

    @property
    def latency_ms(self) -> float:
        return (self.started_ns - self.sent_ns) / 1e6


def parse(raw: list[bytes]) -> list[Mark]:
    marks = []
    for item in raw:
        sent, started = item.split()
        marks.append(Mark(int(sent), int(started)))
    return marks
