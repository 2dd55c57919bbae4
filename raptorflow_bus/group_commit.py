"""``await bus.publish``: native asyncio, and concurrent publishes share calls.

Each event loop gets one committer, with one connection (``aio_wire``). A
publish validates its event in its own task, queues it and waits on a future;
the committer sends whatever waits, all in one publish script call in mode
'each' (``fanout_job``), from a callback the loop runs on the next tick. So
every publish made in the same tick goes in one call, and the ones made while
a call is in flight go in the next. The call checks and accepts or refuses
each event on its own, in order, counting the events accepted before it
against the queue limits: each caller gets its own envelope, or its own
``Backpressure``, whatever its neighbours got.

The steady state runs on loop callbacks alone: the write happens in the flush
callback, and the replies are read, checked and handed to the callers'
futures in the connection's data callback. No task of the bus wakes up for a
publish, so concurrency 1 costs one future and the round trip, as near a sync
emit as asyncio goes. What must await (connecting, and every step that writes
the outbox, which runs on a thread) runs in a task started for it.

The outbox rules are ``send_policy``'s, the same object the sync emit uses:
a publish while the broker is unreachable spools, or raises
``BrokerUnavailable`` in strict mode, in each caller; spooled events of this
bus go first; an open breaker keeps the group off the broker. A round trip is
bounded like an emit (``aio_wire``); a connection error before any reply is
retried once on a fresh connection.

A publish cancelled before its call was sent is left out of the call; one
cancelled after may or may not be published (as a cancelled ``to_thread``
emit may be). The connection closes after ``IDLE_SECONDS`` without a publish
and when the bus closes; a loop closed before either leaves it to the garbage
collector (a ResourceWarning, hidden by default)."""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from typing import TYPE_CHECKING, Any, TypeVar

import redis

from raptorflow_bus.aio_wire import AsyncWire
from raptorflow_bus.errors import Backpressure, BrokerUnavailable, BusError
from raptorflow_bus.fanout_job import FanoutJob, Outcome, unreachable
from raptorflow_bus.send_policy import log_published
from raptorflow_bus.sent import Sent
from raptorflow_bus.wire import WireFailure

if TYPE_CHECKING:
    from raptorflow_bus.bus import Bus
    from raptorflow_bus.publisher import Prepared, RedisPublisher

IDLE_SECONDS = 5.0
Entry = tuple["Prepared", "asyncio.Future[Sent]"]
Result = Outcome | bool  # None published, True spooled, else the event's error
E = TypeVar("E", bound=BaseException)


def own(exc: E) -> E:
    """A copy of ``exc`` for one caller (one exception raised in many tasks
    would collect all their tracebacks)."""
    if isinstance(exc, Backpressure):
        return Backpressure(exc.queue, exc.depth, exc.limit)  # type: ignore[return-value]
    try:
        copy = type(exc)(*exc.args)
    except TypeError:
        return exc
    copy.__cause__ = exc.__cause__
    return copy


class GroupCommit:
    def __init__(self, bus: Bus, loop: asyncio.AbstractEventLoop) -> None:
        self._bus = bus
        self._loop = weakref.ref(loop)
        self._pending: list[Entry] = []
        self._scheduled = False  # a flush is queued on the loop
        self._running = False  # a group is on its way (only one at a time)
        self._wire: AsyncWire | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._busy = False  # a publish came since the idle timer was armed
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False

    # the callers' side ------------------------------------------------------

    def submit(self, prepared: Prepared) -> asyncio.Future[Sent]:
        """Queue ``prepared`` for the next call; the future holds its ``Sent``."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Sent] = loop.create_future()
        if self._closing:
            future.set_exception(BusError("the bus is closed"))
            return future
        self._pending.append((prepared, future))
        self._busy = True
        if not self._running and not self._scheduled:
            if not getattr(loop, "_ready", True):
                # Nothing else runs before the loop polls again, so no other
                # publish can join this tick's group: flush now rather than
                # after one more turn of the loop. (asyncio's own loop keeps
                # that queue in ``_ready``; another loop gets the next turn.)
                self._flush()
            else:
                self._scheduled = True
                loop.call_soon(self._flush)
        return future

    def close(self) -> None:
        """Fail the waiting publishes and close the connection: a call in
        flight then ends as if the broker went away (its events spool, or fail
        in strict mode). From any thread; a loop that no longer runs has
        nothing to close."""
        loop = self._loop()
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(self._close_soon)

    # the steady state: loop callbacks ---------------------------------------

    def _flush(self) -> None:
        self._scheduled = False
        if self._running:
            return
        group = [entry for entry in self._pending if not entry[1].done()]
        self._pending = []
        if not group:
            return
        if self._closing:
            self._fail(group, BusError("the bus closed before this event was sent"))
            return
        self._running = True
        publisher = self._bus.redis_publisher
        wire = self._wire
        if (
            publisher is None
            or wire is None
            or not wire.usable
            or self._bus.policy.may_spool_first()
        ):
            self._spawn(self._slow_start(group), group)
            return
        self._round(FanoutJob(publisher, [p for p, _ in group], each=len(group) > 1), group)

    def _round(self, job: FanoutJob, group: list[Entry], retried: bool = False) -> None:
        """Send the job's next round, or finish the group."""
        try:
            commands = job.next_round()
        except Exception as exc:
            self._finish(group, [exc] * len(group))
            return
        if commands is None:
            self._finish(group, list(job.outcomes))
            return
        wire = self._wire
        assert wire is not None

        def replied(replies: list[Any], error: BaseException | None) -> None:
            try:
                self._replied(job, group, commands, replies, error, retried)
            except Exception as exc:  # never leave a caller waiting
                self._finish(group, [exc] * len(group))

        wire.send(commands, replied)

    def _replied(
        self,
        job: FanoutJob,
        group: list[Entry],
        commands: list[bytes],
        replies: list[Any],
        error: BaseException | None,
        retried: bool,
    ) -> None:
        if (
            isinstance(error, redis.ConnectionError)
            and not replies
            and not retried
            and not self._closing
        ):
            # A connection that died (a restart) fails at once: once more, on a new one.
            self._spawn(self._reconnect(job, group, commands), group)
            return
        try:
            job.feed(replies, error)
        except (Backpressure, BrokerUnavailable) as refused:  # a lone event, mode 'all'
            self._finish(group, [refused] * len(group))
            return
        except Exception as exc:
            self._finish(group, [exc] * len(group))
            return
        self._round(job, group, retried)

    def _finish(self, group: list[Entry], outcomes: list[Result]) -> None:
        """Hand each caller its outcome; the broker's failures first go through
        the outbox policy (on a thread, as they may spool)."""
        policy = self._bus.policy
        failed = [i for i, o in enumerate(outcomes) if isinstance(o, BrokerUnavailable)]
        if len(failed) < len(outcomes):
            policy.answered()
        if failed and not policy.strict:
            self._spawn(self._spool_then_resolve(group, outcomes, failed), group)
            return
        self._resolve(group, outcomes)

    def _resolve(self, group: list[Entry], outcomes: list[Result]) -> None:
        done: list[Prepared] = []
        for (item, future), outcome in zip(group, outcomes, strict=True):
            if future.done():
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(own(outcome))
                continue
            future.set_result(Sent(item[0], outcome is True))
            if outcome is None:
                done.append(item)
        self._running = False
        loop = self._loop()
        if loop is not None:
            if self._pending and not self._scheduled:
                self._scheduled = True
                loop.call_soon(self._flush)
            elif self._idle is None and self._wire is not None:
                self._busy = False
                self._idle = loop.call_later(IDLE_SECONDS, self._idle_check)
        log_published(done)

    def _fail(self, group: list[Entry], error: BaseException) -> None:
        for _, future in group:
            if not future.done():
                future.set_exception(own(error))

    # what awaits: tasks started for it --------------------------------------

    def _spawn(self, work: Any, group: list[Entry]) -> None:
        loop = self._loop()
        if loop is None or loop.is_closed():
            work.close()
            self._fail(group, BusError("the event loop stopped before this event was sent"))
            self._running = False
            return
        task: asyncio.Task[None] = loop.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _guarded(self, group: list[Entry], work: Any) -> None:
        try:
            await work
        except Exception as exc:  # never leave a caller waiting
            self._finish(group, [exc] * len(group))
        except BaseException:
            self._fail(group, BusError("cancelled before its outcome was known"))
            self._running = False
            raise

    async def _slow_start(self, group: list[Entry]) -> None:
        await self._guarded(group, self._start(group))

    async def _start(self, group: list[Entry]) -> None:
        """The first steps a group may have to await: spooling behind this
        bus's waiting events or past an open breaker, connecting."""
        bus, prepared = self._bus, [p for p, _ in group]
        policy = bus.policy
        if policy.may_spool_first() and await asyncio.to_thread(policy.spool_first, prepared):
            self._resolve(group, [True] * len(group))
            return
        publisher: RedisPublisher | None = bus.redis_publisher
        try:
            if publisher is None:
                publisher = await asyncio.to_thread(bus.connected_redis_publisher)
            if self._wire is None:
                self._wire = bus.async_wire()
            if not self._wire.usable:
                await self._connect_once()
        except BrokerUnavailable as exc:
            self._finish(group, [exc] * len(group))
            return
        self._round(FanoutJob(publisher, prepared, each=len(group) > 1), group)

    async def _connect_once(self) -> None:
        """Connect, once more on a connection error; ``BrokerUnavailable`` if not."""
        assert self._wire is not None
        for attempt in (1, 2):
            try:
                await self._wire.connect()
                return
            except WireFailure as failure:
                if attempt == 2 or not isinstance(failure.cause, redis.ConnectionError):
                    raise unreachable(failure.cause) from failure

    async def _reconnect(self, job: FanoutJob, group: list[Entry], commands: list[bytes]) -> None:
        async def again() -> None:
            wire = self._wire
            assert wire is not None
            try:
                await wire.connect()
            except WireFailure as failure:
                self._replied(job, group, commands, [], failure.cause, True)
                return

            def replied(replies: list[Any], error: BaseException | None) -> None:
                self._replied(job, group, commands, replies, error, True)

            wire.send(commands, replied)

        await self._guarded(group, again())

    async def _spool_then_resolve(
        self, group: list[Entry], outcomes: list[Result], failed: list[int]
    ) -> None:
        async def spool() -> None:
            first = outcomes[failed[0]]
            assert isinstance(first, BrokerUnavailable)
            spooled = [group[i][0] for i in failed]
            await asyncio.to_thread(self._bus.policy.unreachable, spooled, first)
            for i in failed:
                outcomes[i] = True
            self._resolve(group, outcomes)

        await self._guarded(group, spool())

    # the connection's lifetime ------------------------------------------------

    def _idle_check(self) -> None:
        """Close the connection after ``IDLE_SECONDS`` without a publish (one
        timer for the whole interval, not one per publish)."""
        self._idle = None
        loop = self._loop()
        if loop is None:
            return
        if self._busy or self._running or self._pending:
            self._busy = False
            self._idle = loop.call_later(IDLE_SECONDS, self._idle_check)
        elif self._wire is not None:
            self._wire.drop()

    def _close_soon(self) -> None:
        self._closing = True
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        pending, self._pending = self._pending, []
        self._fail(pending, BusError("the bus closed before this event was sent"))
        if self._wire is not None:
            self._wire.drop()  # a call in flight fails, and spools


class Committers:
    """One ``GroupCommit`` per event loop that publishes on the bus."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self._by_loop: weakref.WeakKeyDictionary[Any, GroupCommit] = weakref.WeakKeyDictionary()
        self._last: tuple[weakref.ref[Any], GroupCommit | None] = (weakref.ref(_Nothing()), None)

    def for_running_loop(self) -> GroupCommit:
        loop = asyncio.get_running_loop()
        last_loop, last = self._last
        if last_loop() is loop and last is not None:
            return last
        committer = self._by_loop.get(loop)
        if committer is None:
            committer = self._by_loop[loop] = GroupCommit(self._bus, loop)
        self._last = (weakref.ref(loop), committer)
        return committer

    def close(self) -> None:
        for committer in list(self._by_loop.values()):
            committer.close()
        self._by_loop.clear()
        self._last = (weakref.ref(_Nothing()), None)


class _Nothing:
    """A referent that is gone at once (the empty cache of ``Committers``)."""
