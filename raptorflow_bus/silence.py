"""A connection that goes silent (a NAT or load balancer forgot the flow, no
FIN, no RST) shows only as a read timeout, and the process's other connections
went silent with it: found one by one, each would cost a socket timeout of its
own, in a row, in the worker's event loop (the fault suite's scenario 11 took
over 30 s to recover that way). So the first read timeout in a process
condemns every connection open at that moment, and each is dialled again at
its next use; a healthy broker only pays one reconnect per connection.

Process state on purpose: what went silent is the process's path to Redis."""

from __future__ import annotations

import itertools
import os
import threading
from typing import Any

import redis
from redis.sentinel import SentinelManagedConnection, SentinelManagedSSLConnection

_lock = threading.Lock()
_epochs: dict[int, int] = {}
_counter = itertools.count(1)


def current_epoch() -> int:
    return _epochs.get(os.getpid(), 0)


def condemn_open_connections() -> None:
    with _lock:
        _epochs[os.getpid()] = next(_counter)


class SilenceGuard:
    """Mixin for a redis-py connection class."""

    _sock: Any
    _born = 0

    def connect_check_health(self, *args: Any, **kwargs: Any) -> None:
        if not self._sock:
            self._born = current_epoch()
        super().connect_check_health(*args, **kwargs)  # type: ignore[misc]

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if self._sock is not None and self._born < current_epoch():
            self.disconnect()  # type: ignore[attr-defined]
        super().send_packed_command(command, check_health)  # type: ignore[misc]

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)  # type: ignore[misc]
        except redis.TimeoutError:
            if self._born >= current_epoch():
                condemn_open_connections()
            raise


class GuardedConnection(SilenceGuard, redis.Connection):
    pass


class GuardedSSLConnection(SilenceGuard, redis.SSLConnection):
    pass


class GuardedSentinelManagedConnection(SilenceGuard, SentinelManagedConnection):
    pass


class GuardedSentinelManagedSSLConnection(SilenceGuard, SentinelManagedSSLConnection):
    pass


GUARDED: dict[type[Any], type[Any]] = {
    redis.Connection: GuardedConnection,
    redis.SSLConnection: GuardedSSLConnection,
    SentinelManagedConnection: GuardedSentinelManagedConnection,
    SentinelManagedSSLConnection: GuardedSentinelManagedSSLConnection,
}


def guarded(connection_class: type[Any]) -> type[Any]:
    """The guarded twin of a redis-py connection class (itself if it has none)."""
    return GUARDED.get(connection_class, connection_class)
