"""The publish script's round trip for asyncio (``await bus.publish``).

redis.asyncio makes the connection: TCP or TLS, AUTH, SELECT, the Sentinels'
answer for the master, all with the bus's options (``Bus.async_wire``). Its
read path does not carry the calls, though: through its stream reader and
parser, one round trip cost 35 us of CPU on the 2-core VM, against 11 us for
redis-py's sync connection and 12 us for a plain asyncio protocol on the same
socket (``bench/throughput.py`` has the publish figures). So once connected,
the connection's transport is handed to ``Replies``, a protocol that reads
RESP2 replies as they arrive, and each call is one ``transport.write`` and one
future. The replies the publisher reads are integers, bulk strings, arrays of
them, and errors.

The policy is the sync wire's (``wire``): a connection error before any reply
is retried once on a fresh connection, a timeout never; a failure comes as
``WireFailure`` with the replies that did come. Each round trip has one
deadline, the read timeout (plus the connect timeout when it connects first),
as a sync emit has; a timeout condemns the process's connections as a sync one
does (``silence``). A READONLY reply means a failover demoted the server: the
connection is dropped, as redis-py's Sentinel connection drops it, and the
next one asks the Sentinels again."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import redis
import redis.asyncio
from redis.exceptions import NoScriptError, ReadOnlyError

from raptorflow_bus.silence import condemn_open_connections
from raptorflow_bus.wire import WireFailure

_INCOMPLETE = object()


def _error(message: str) -> Exception:
    if message.startswith("NOSCRIPT"):
        return NoScriptError(message)
    if message.startswith("READONLY"):
        return ReadOnlyError(message)
    return redis.ResponseError(message)


def parse(buf: bytearray, pos: int) -> tuple[Any, int]:
    """One RESP2 reply at ``pos``: (value, position after it), or
    (``_INCOMPLETE``, pos) when the buffer does not hold all of it yet."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        return _INCOMPLETE, pos
    kind, line = buf[pos], bytes(buf[pos + 1 : end])
    if kind == 0x3A:  # ':'
        return int(line), end + 2
    if kind == 0x24:  # '$'
        size = int(line)
        if size < 0:
            return None, end + 2
        stop = end + 2 + size
        if len(buf) < stop + 2:
            return _INCOMPLETE, pos
        return bytes(buf[end + 2 : stop]), stop + 2
    if kind == 0x2A:  # '*'
        items, at = [], end + 2
        for _ in range(int(line)):
            item, at = parse(buf, at)
            if item is _INCOMPLETE:
                return _INCOMPLETE, pos
            items.append(item)
        return items, at
    if kind == 0x2B:  # '+'
        return line, end + 2
    if kind == 0x2D:  # '-'
        return _error(line.decode("utf-8", errors="replace")), end + 2
    raise redis.ConnectionError(f"unexpected reply from the broker: {bytes(buf[pos:end])!r}")


Done = Callable[[list[Any], "BaseException | None"], None]


class Replies(asyncio.Protocol):
    """Reads the replies to the commands written, in order, and hands them to
    the waiting call's callback (from the loop's I/O callback: no task wakes
    up for it)."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._expected = 0
        self.replies: list[Any] = []
        self._done: Done | None = None
        self.lost: BaseException | None = None

    def expect(self, n: int, done: Done) -> None:
        self._expected, self.replies, self._done = n, [], done

    def data_received(self, data: bytes) -> None:
        self._buf += data
        pos = 0
        while len(self.replies) < self._expected:
            try:
                value, pos = parse(self._buf, pos)
            except (ValueError, redis.ConnectionError) as exc:
                self.fail(exc if isinstance(exc, redis.ConnectionError) else None)
                return
            if value is _INCOMPLETE:
                break
            self.replies.append(value)
        del self._buf[:pos]
        if self._done is not None and len(self.replies) >= self._expected:
            done, self._done = self._done, None
            if any(isinstance(r, ReadOnlyError) for r in self.replies):
                self.lost = redis.ConnectionError("the broker is a replica now (failover)")
                done(self.replies, self.lost)
            else:
                done(self.replies, None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(None, exc)

    def fail(self, error: BaseException | None, cause: BaseException | None = None) -> None:
        """The connection is unusable: the waiting call gets ``error`` (a
        connection error by default) with the replies that did come."""
        if self.lost is None:
            self.lost = error or redis.ConnectionError(f"connection to the broker lost: {cause}")
        done, self._done = self._done, None
        if done is not None:
            done(self.replies, error or self.lost)


class AsyncWire:
    """One asyncio connection of one event loop. ``send`` writes a round's
    commands and returns at once; the replies (or the failure) reach its
    callback. Connecting is the one step that awaits (``connect``)."""

    def __init__(
        self, client: redis.asyncio.Redis[bytes], *, connect_timeout: float, read_timeout: float
    ) -> None:
        self._client: Any = client
        self._transport: asyncio.Transport | None = None
        self._replies = Replies()
        self._sent_at: float | None = None  # when the call in flight was written
        self._watchdog: asyncio.TimerHandle | None = None
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout

    @property
    def usable(self) -> bool:
        transport = self._transport
        return transport is not None and not transport.is_closing() and self._replies.lost is None

    async def connect(self) -> None:
        """Connect through redis.asyncio, then take its transport over; bounded
        by the connect and read timeouts. Raises ``WireFailure``. The
        Sentinels' connections are closed once they named the master: the
        connection is then the wire's only socket (``drop`` needs no await)."""
        self.drop()
        conn = self._client.connection_pool.make_connection()
        try:
            async with asyncio.timeout(self._connect_timeout + self._read_timeout):
                await conn.connect()
                for sentinel in self._sentinels():
                    await sentinel.aclose()
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await conn.disconnect(nowait=True)
            if isinstance(exc, (TimeoutError, redis.TimeoutError)):
                raise WireFailure(redis.TimeoutError(f"cannot connect: {exc}"), []) from exc
            if isinstance(exc, (redis.ConnectionError, OSError)):
                cause = (
                    exc if isinstance(exc, redis.ConnectionError) else redis.ConnectionError(exc)
                )
                raise WireFailure(cause, []) from exc
            raise
        transport = conn._writer.transport
        self._replies = Replies()
        transport.set_protocol(self._replies)
        self._transport = transport

    def _sentinels(self) -> list[Any]:
        manager = getattr(self._client.connection_pool, "sentinel_manager", None)
        return list(getattr(manager, "sentinels", ()))

    def send(self, commands: list[bytes], done: Done) -> None:
        """Write ``commands``; ``done(replies, error)`` runs once, with one reply
        per command (an error reply as its exception), or with the failure and
        the replies that came first. A timeout drops the connection."""
        transport, replies = self._transport, self._replies
        if transport is None or not self.usable:
            done([], redis.ConnectionError("not connected"))
            return
        loop = asyncio.get_running_loop()

        def finish(got: list[Any], error: BaseException | None) -> None:
            self._sent_at = None
            done(got, error)

        replies.expect(len(commands), finish)
        self._sent_at = loop.time()
        try:
            transport.write(b"".join(commands))
        except OSError as exc:
            replies.fail(redis.ConnectionError(str(exc)))
            return
        if self._watchdog is None and self._sent_at is not None:
            self._watchdog = loop.call_at(self._sent_at + self._read_timeout, self._watch)

    def _watch(self) -> None:
        """The read timeout of the call in flight. One timer serves many calls:
        it fires a read timeout after the call it was armed for, and moves on
        to the call in flight then (a call per timer would cost a timer each)."""
        self._watchdog = None
        sent_at, transport = self._sent_at, self._transport
        if sent_at is None or transport is None:
            return
        loop = asyncio.get_running_loop()
        if loop.time() - sent_at < self._read_timeout:
            self._watchdog = loop.call_at(sent_at + self._read_timeout, self._watch)
            return
        condemn_open_connections()
        self._replies.fail(redis.TimeoutError(f"no reply within {self._read_timeout:.2f}s"))
        transport.abort()

    def drop(self) -> None:
        """Close the connection (the next ``connect`` makes a new one)."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.abort()
