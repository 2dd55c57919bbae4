"""The publish script's round trip, below redis-py's client layer.

Measured on the 2-core VM, redis-py's ``client.evalsha`` of a trivial script
ran at 0.85x of its own LPUSH, and the same EVALSHA sent on a connection
directly, already packed, at 2.2x: the client layer (a pool checkout that
polls the socket, the retry wrapper, per-argument encoding, response
callbacks) costs more than the round trip. The publisher packs its calls itself
(``publish_call``), so here they go to the socket as they are, on a
connection made by the client's own pool: the same class, options, timeouts,
TLS, Sentinel lookup and silent-connection guard (``silence``) as every
other connection of the bus.

The policy is redis-py's, kept: a connection error before any reply is retried
once on a fresh connection (a pooled connection that died with a restart
fails at once), a timeout is never retried, and a failed connection is
dropped. With ``retry=False`` nothing is retried: for a caller to whom a call
that may have run matters (the event hop). A failure is raised as
``WireFailure`` with the replies that did come, so the caller knows exactly
which calls of a pipeline ran."""

from __future__ import annotations

import os
import threading
from typing import Any

import redis


class WireFailure(Exception):
    """The round trip failed after ``replies`` (a prefix of the replies) came."""

    def __init__(self, cause: BaseException, replies: list[Any]) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.replies = replies


def joined(commands: list[bytes]) -> list[bytes]:
    return [commands[0] if len(commands) == 1 else b"".join(commands)]


class Wire:
    """One connection kept for a hot path (the emit, the event hop, the handler
    runs' scripts). A thread that finds it busy (another thread is using it)
    takes a connection from the client's pool instead."""

    def __init__(self, client: redis.Redis[bytes], *, retry: bool = True) -> None:
        self._pool: Any = client.connection_pool
        self._attempts = 2 if retry else 1
        self._pid = 0
        self._reset()

    def _reset(self) -> None:
        """In a forked child (a worker's pool) the parent's socket is not ours,
        and the lock may have been held by a thread that is not there."""
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._conn: Any = None

    def roundtrip(self, commands: list[bytes]) -> list[Any]:
        """Send ``commands`` in one write; return one reply per command, an
        error reply as its exception instance."""
        if self._pid != os.getpid():
            self._reset()
        if self._lock.acquire(blocking=False):
            try:
                if self._conn is None:
                    self._conn = self._pool.make_connection()
                return _exchange(self._conn, commands, self._attempts)
            finally:
                self._lock.release()
        conn = self._pool.get_connection()
        try:
            return _exchange(conn, commands, self._attempts)
        finally:
            self._pool.release(conn)

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None and self._pid == os.getpid():
            conn.disconnect()


def _exchange(conn: Any, commands: list[bytes], attempts: int) -> list[Any]:
    for attempt in range(1, attempts + 1):
        replies: list[Any] = []
        try:
            if conn._sock is None:
                conn.connect()  # (not send's own connect: a Sentinel one asks for the master)
            conn.send_packed_command(joined(commands), check_health=True)
            for _ in commands:
                try:
                    replies.append(conn.read_response())
                except redis.ResponseError as exc:
                    replies.append(exc)
            return replies
        except redis.ConnectionError as exc:
            conn.disconnect()
            if attempt == attempts or replies:
                raise WireFailure(exc, replies) from exc
        except redis.TimeoutError as exc:
            conn.disconnect()
            raise WireFailure(exc, replies) from exc
        except BaseException:
            conn.disconnect()
            raise
    raise AssertionError("unreachable")
