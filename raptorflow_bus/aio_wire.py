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


class Replies(asyncio.Protocol):
    """Collects the replies to the commands written, in order."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._expected = 0
        self.replies: list[Any] = []
        self._done: asyncio.Future[list[Any]] | None = None
        self.lost: BaseException | None = None

    def expect(self, n: int, done: asyncio.Future[list[Any]]) -> None:
        self._expected, self.replies, self._done = n, [], done

    def data_received(self, data: bytes) -> None:
        self._buf += data
        pos = 0
        while len(self.replies) < self._expected:
            try:
                value, pos = parse(self._buf, pos)
            except (ValueError, redis.ConnectionError) as exc:
                self._fail(exc if isinstance(exc, redis.ConnectionError) else None)
                return
            if value is _INCOMPLETE:
                break
            self.replies.append(value)
        del self._buf[:pos]
        if self._done is not None and len(self.replies) >= self._expected:
            done, self._done = self._done, None
            if not done.done():
                done.set_result(self.replies)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(None, exc)

    def _fail(self, error: BaseException | None, cause: BaseException | None = None) -> None:
        self.lost = error or redis.ConnectionError(f"connection to the broker lost: {cause}")
        done, self._done = self._done, None
        if done is not None and not done.done():
            done.set_exception(self.lost)


class AsyncWire:
    """The round trip on one asyncio connection of one event loop."""

    def __init__(
        self, client: redis.asyncio.Redis[bytes], *, connect_timeout: float, read_timeout: float
    ) -> None:
        self._client: Any = client
        self._conn: Any = None
        self._transport: asyncio.Transport | None = None
        self._replies = Replies()
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout

    async def _connect(self) -> None:
        """Connect through redis.asyncio, then take its transport over."""
        self._conn = self._client.connection_pool.make_connection()
        await self._conn.connect()
        transport = self._conn._writer.transport
        self._replies = Replies()
        transport.set_protocol(self._replies)
        self._transport = transport

    async def roundtrip(self, commands: list[bytes]) -> list[Any]:
        """Send ``commands`` in one write; return one reply per command, an
        error reply as its exception instance."""
        loop = asyncio.get_running_loop()
        for attempt in (1, 2):
            replies = self._replies
            try:
                if self._transport is None or self._transport.is_closing() or replies.lost:
                    await self._drop()
                    async with asyncio.timeout(self._connect_timeout + self._read_timeout):
                        await self._connect()
                    replies = self._replies
                assert self._transport is not None
                done: asyncio.Future[list[Any]] = loop.create_future()
                replies.expect(len(commands), done)
                self._transport.write(b"".join(commands))
                deadline = loop.call_later(self._read_timeout, _expire, done, self._read_timeout)
                try:
                    got = await done
                finally:
                    deadline.cancel()
                if any(isinstance(r, ReadOnlyError) for r in got):
                    raise redis.ConnectionError("the broker is a replica now (failover)")
                return got
            except redis.ConnectionError as exc:
                partial = list(replies.replies)
                await self._drop()
                if attempt == 2 or partial:
                    raise WireFailure(exc, partial) from exc
            except (TimeoutError, redis.TimeoutError) as exc:
                partial = list(replies.replies)
                await self._drop()
                condemn_open_connections()
                cause = redis.TimeoutError(f"no reply from the broker: {exc}")
                raise WireFailure(cause, partial) from exc
            except OSError as exc:
                partial = list(replies.replies)
                await self._drop()
                raise WireFailure(redis.ConnectionError(str(exc)), partial) from exc
            except BaseException:
                await self._drop()
                raise
        raise AssertionError("unreachable")

    async def _drop(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.abort()
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.disconnect(nowait=True)

    async def close(self) -> None:
        await self._drop()
        await self._client.aclose()
        pool = self._client.connection_pool
        manager = getattr(pool, "sentinel_manager", None)
        for sentinel in getattr(manager, "sentinels", ()):
            await sentinel.aclose()


def _expire(done: asyncio.Future[list[Any]], after: float) -> None:
    if not done.done():
        done.set_exception(redis.TimeoutError(f"no reply within {after:.2f}s"))
