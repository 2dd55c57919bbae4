"""A Lua script called as packed RESP on a kept connection (``wire``).

The event hop makes three round trips per batch: the wake, the pop, the
commit. At a trickle every event is a batch of one, and each of those round
trips through redis-py's client layer (a pool checkout, per-argument encoding,
the ``Script`` wrapper, the response callbacks) cost 25 to 35 us more CPU
than the same call packed here, on the 2-core VM. ``raptorbus bench --only
latency`` reports what a worker spends per event. The emit path already goes
this way (``wire``).

Nothing is retried here: a call whose connection fails after it was sent may
have run, and only its caller knows what that leaves behind (the hop sweeps
back what a lost pop recorded). A server that has not seen the script (a
restart, a promoted replica) answers NOSCRIPT without running it, so that one
is loaded and sent again. With replica acks, WAIT goes in the same write."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import redis
from redis.exceptions import NoScriptError

from raptorflow_bus import scripts
from raptorflow_bus.replica_acks import ReplicaAcks
from raptorflow_bus.resp import command, load_command
from raptorflow_bus.wire import Wire, WireFailure


class PackedScript:
    """``lua/<name>.lua``, called on ``wire`` (set once its owner connects)."""

    def __init__(self, name: str, wire: Wire | None = None) -> None:
        self.wire = wire
        self.source = scripts.source(name)
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()

    def __call__(
        self,
        keys: Sequence[str | bytes],
        args: Sequence[str | bytes | int | float],
        replica_acks: ReplicaAcks | None = None,
    ) -> Any:
        """The script's reply; its error reply raised; ``NotReplicated`` (with
        the reply) when fewer replicas than required confirmed it; a broken or
        silent connection as redis-py's ConnectionError or TimeoutError."""
        call = command(b"EVALSHA", self.sha, len(keys), *keys, *map(_arg, args))
        commands = [call]
        if replica_acks is not None and replica_acks.replicas:
            commands.append(command(b"WAIT", replica_acks.replicas, replica_acks.timeout_ms))
        wire = self.wire
        assert wire is not None, "connect the wire first"
        replies = roundtrip(wire, commands)
        if isinstance(replies[0], NoScriptError):
            roundtrip(wire, [load_command(self.source)])
            replies = roundtrip(wire, commands)
        for reply in replies:
            if isinstance(reply, BaseException):
                raise reply
        if len(commands) > 1:
            assert replica_acks is not None
            return replica_acks.checked(replies)[0]
        return replies[0]


def roundtrip(wire: Wire, commands: list[bytes]) -> list[Any]:
    """``wire.roundtrip`` raising what broke it, as redis-py would."""
    try:
        return wire.roundtrip(commands)
    except WireFailure as failure:
        raise failure.cause from None


def call(wire: Wire, *args: str | bytes | int | float) -> Any:
    """One plain command; its error reply raised."""
    reply = roundtrip(wire, [command(*map(_arg, args))])[0]
    if isinstance(reply, redis.ResponseError):
        raise reply
    return reply


def _arg(value: str | bytes | int | float) -> str | bytes | int:
    return repr(value) if isinstance(value, float) else value
