"""``await bus.publish``: native asyncio, and concurrent publishes share calls.

Each event loop gets one committer: a task that owns an asyncio connection
(``wire.AsyncWire``) and sends whatever publishes are waiting, all in one
publish script call in mode 'each' (``fanout_job``). A publish validates its
event in its own task, queues it and wakes the committer, which runs on the
next tick: every publish made in the same tick goes in one call, and the ones
made while a call is in flight go in the next. At concurrency 1 that is one
call per publish with no thread hop; at concurrency 100, a call carries about
100 events. The call checks and accepts or refuses each event on its own, in
order, counting the events accepted before it against the queue limits: each
caller gets its own envelope, or its own ``Backpressure``, whatever its
neighbours got.

The outbox rules are ``send_policy``'s, the same object the sync emit uses:
a publish while the broker is unreachable spools (its SQLite write runs on a
thread, off the loop) or raises ``BrokerUnavailable`` in strict mode, in each
caller; spooled events of this bus go first; an open breaker keeps the group
off the broker. A round trip is bounded like an emit (``wire.AsyncWire``).

A publish cancelled before its call was sent is dropped from the call; one
cancelled after may or may not be published (as a cancelled ``to_thread``
emit may be). The committer stops after ``IDLE_SECONDS`` without a publish,
or when the bus closes, and closes its connection."""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from typing import TYPE_CHECKING, Any, TypeVar

from raptorflow_bus.aio_wire import AsyncWire
from raptorflow_bus.errors import Backpressure, BrokerUnavailable, BusError
from raptorflow_bus.fanout_job import FanoutJob, Outcome
from raptorflow_bus.publisher import RedisPublisher
from raptorflow_bus.send_policy import log_published
from raptorflow_bus.sent import Sent
from raptorflow_bus.wire import WireFailure

if TYPE_CHECKING:
    from raptorflow_bus.bus import Bus
    from raptorflow_bus.publisher import Prepared

IDLE_SECONDS = 5.0
Entry = tuple["Prepared", "asyncio.Future[Sent]"]
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
        self._wakeup: asyncio.Future[bool] | None = None
        self._task: asyncio.Task[None] | None = None
        self._wire: AsyncWire | None = None
        self._closing = False
        self._idle: asyncio.TimerHandle | None = None
        self._busy = False  # a publish came since the idle timer was armed

    def submit(self, prepared: Prepared) -> asyncio.Future[Sent]:
        """Queue ``prepared`` for the next call; the future holds its ``Sent``."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Sent] = loop.create_future()
        self._pending.append((prepared, future))
        self._busy = True
        if self._task is None:
            self._task = loop.create_task(self._run(), name="raptorbus-group-commit")
        elif self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(True)
        return future

    def close(self) -> None:
        """Finish the call in flight, fail the waiting publishes, close the
        connection (from any thread; a loop that no longer runs has nothing to do)."""
        loop = self._loop()
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(self._close_soon)

    def _idle_check(self) -> None:
        """Stop if nothing was published for ``IDLE_SECONDS`` (one timer for
        the whole interval, not one per publish)."""
        self._idle = None
        loop = self._loop()
        if self._busy and loop is not None:
            self._busy = False
            self._idle = loop.call_later(IDLE_SECONDS, self._idle_check)
        elif self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(False)

    def _close_soon(self) -> None:
        self._closing = True
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(False)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while not self._closing:
                if not self._pending:
                    self._wakeup = wakeup = loop.create_future()
                    if self._idle is None:
                        self._busy = False
                        self._idle = loop.call_later(IDLE_SECONDS, self._idle_check)
                    woken = await wakeup
                    self._wakeup = None
                    if not woken:
                        break
                group, self._pending = self._pending, []
                group = [entry for entry in group if not entry[1].done()]
                if group:
                    await self._commit(group)
        finally:
            self._task = None
            if self._idle is not None:
                self._idle.cancel()
                self._idle = None
            pending, self._pending = self._pending, []
            for _, future in pending:
                if not future.done():
                    future.set_exception(BusError("the bus closed before this event was sent"))
            wire, self._wire = self._wire, None
            if wire is not None:
                await wire.close()

    async def _commit(self, group: list[Entry]) -> None:
        prepared = [p for p, _ in group]
        outcomes: list[Outcome | bool]
        try:
            outcomes = await self._publish(prepared)
        except Exception as exc:  # an unexpected reply or a bug: every caller hears it
            outcomes = [exc] * len(group)
        except BaseException:  # cancelled with the loop: the callers were too
            for _, future in group:
                future.cancel()
            raise
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
        log_published(done)

    async def _publish(self, prepared: list[Prepared]) -> list[Outcome | bool]:
        """Each event's outcome: None published, True spooled, else its error."""
        bus = self._bus
        policy = bus.policy
        if policy.may_spool_first() and await asyncio.to_thread(policy.spool_first, prepared):
            return [True] * len(prepared)
        publisher = bus.redis_publisher
        if publisher is None:
            try:
                publisher = await asyncio.to_thread(bus.connected_redis_publisher)
            except BrokerUnavailable as exc:
                return await self._unreachable(prepared, list(range(len(prepared))), exc)
        if self._wire is None:
            self._wire = bus.async_wire()
        outcomes: list[Outcome | bool] = list(await self._drive(publisher, prepared))
        failed = [i for i, o in enumerate(outcomes) if isinstance(o, BrokerUnavailable)]
        if len(failed) < len(prepared):
            policy.answered()
        if failed:
            first = outcomes[failed[0]]
            assert isinstance(first, BrokerUnavailable)
            spooled = await self._unreachable(prepared, failed, first)
            for i, outcome in zip(failed, spooled, strict=True):
                outcomes[i] = outcome
        return outcomes

    async def _drive(self, publisher: RedisPublisher, prepared: list[Prepared]) -> list[Outcome]:
        # One event alone is all or nothing either way: the emit's mode, whose
        # call is the lighter one.
        job = FanoutJob(publisher, prepared, each=len(prepared) > 1)
        wire = self._wire
        assert wire is not None
        try:
            while (commands := job.next_round()) is not None:
                try:
                    replies = await wire.roundtrip(commands)
                except WireFailure as failure:
                    job.feed(failure.replies, failure.cause)
                else:
                    job.feed(replies)
        except (Backpressure, BrokerUnavailable) as refused:
            return [refused]
        return job.outcomes

    async def _unreachable(
        self, prepared: list[Prepared], failed: list[int], exc: BrokerUnavailable
    ) -> list[Outcome | bool]:
        """Spool the ``failed`` events (True each), or in strict mode give each its error."""
        policy = self._bus.policy
        if policy.strict:
            return [own(exc) for _ in failed]
        await asyncio.to_thread(policy.unreachable, [prepared[i] for i in failed], exc)
        return [True] * len(failed)


class Committers:
    """One ``GroupCommit`` per event loop that publishes on the bus."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self._by_loop: weakref.WeakKeyDictionary[Any, GroupCommit] = weakref.WeakKeyDictionary()

    def for_running_loop(self) -> GroupCommit:
        loop = asyncio.get_running_loop()
        committer = self._by_loop.get(loop)
        if committer is None:
            committer = self._by_loop[loop] = GroupCommit(self._bus, loop)
        return committer

    def close(self) -> None:
        for committer in list(self._by_loop.values()):
            committer.close()
        self._by_loop.clear()
