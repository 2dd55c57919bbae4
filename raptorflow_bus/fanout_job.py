"""One publish through ``lua/publish.lua``, as decisions without I/O.

A job says which commands to send next (``next_round``) and reads their
replies (``feed``); the sync publisher and the async group commit each drive
it with their own round trip, so the rules live once: a changed binding
table is read and the events routed again, a server that lost the script
gets it loaded, replica acks are checked, and a reply becomes ``Backpressure``
or a broker error.

Two modes. ``each=False`` is ``emit``/``emit_many``: the batch lands whole or
the call raises. A batch over the call bounds (``publish_call``) is split into
calls sent together, in order, chained in Redis so that call k runs only after
calls 1..k-1 did, and made idempotent so that sending the batch again after a
lost connection writes nothing twice. The first call checks the whole batch's
room and the table, so ``Backpressure`` and a changed table still refuse or
reroute the batch whole. What splitting gives up is one instant for the whole
batch: consumers may take the first calls' events before the last call runs,
and if the broker fails between calls, a prefix of the batch is in its queues
and the rest is not. That is reported exactly (``BatchInterrupted`` names how
many events, from the start, were published, and how many are uncertain);
the bus then spools the rest, or raises it in strict mode.

``each=True`` is the group commit: one call carries the events of many
callers, each checked against the queue limits on its own, in order, and
accepted or refused on its own; ``outcomes`` holds each event's result."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import redis

from raptorflow_bus.errors import (
    Backpressure,
    BatchInterrupted,
    BrokerOutOfMemory,
    BrokerUnavailable,
    NotReplicated,
)
from raptorflow_bus.ids import uuid4_string
from raptorflow_bus.publish_call import (
    ALL,
    EACH,
    PUBLISHED,
    REFUSED,
    STALE,
    Call,
    text,
)
from raptorflow_bus.resp import command, load_command

if TYPE_CHECKING:
    from raptorflow_bus.publisher import Prepared, RedisPublisher

# A token the script never computes: makes it answer with the table.
RELOAD = "reload"

# The cached table, the table the script sent back, then that table again
# without the check (it is one round trip old, as fresh as Kombu's own read).
ATTEMPTS = 3
LOADS = 2

Outcome = Exception | None


def unreachable(exc: BaseException) -> BrokerUnavailable:
    error = BrokerUnavailable(f"broker unreachable, event not published: {exc}")
    error.__cause__ = exc
    return error


def script_error(reply: redis.ResponseError) -> Exception:
    """Before Redis 7 a script may write past maxmemory once it has written;
    the first LPUSH is refused, so nothing is half-published. Redis 6.2
    reports it inside the script error, 7.x as OutOfMemoryError; both say this."""
    if "used memory > 'maxmemory'" in str(reply):
        error = BrokerOutOfMemory(f"broker out of memory, event not published: {reply}")
        error.__cause__ = reply
        return error
    return reply


def _code(reply: Any) -> int | None:
    return int(reply[0]) if isinstance(reply, list) and reply else None


class FanoutJob:
    def __init__(self, publisher: RedisPublisher, prepared: Sequence[Prepared], *, each: bool):
        self._pub = publisher
        self._prepared = prepared
        self.each = each
        self._table, self._token = publisher.table_and_token()
        self._attempt = 0
        self._loads = 0
        self._load = False
        self._calls: list[Call] = []
        self._todo = list(range(len(prepared)))
        self._batch = ""
        self._probing = False
        self.outcomes: list[Outcome] = [None] * len(prepared)
        self.done = not prepared

    # driving --------------------------------------------------------------

    def next_round(self) -> list[bytes] | None:
        """The commands to send next, in one write; None when the job is done."""
        if self.done:
            return None
        events = self._prepared
        if len(self._todo) < len(events):
            events = [events[i] for i in self._todo]
        token = self._token if self._attempt < ATTEMPTS - 1 else ""
        if token == RELOAD:  # the cached table is too old: read it first
            self._probing = True
            commands = [self._pub.builder.probe(token)]
            if self._load:
                commands.insert(0, load_command(self._pub.script_source))
            return commands
        routes = self._pub.routes(events, self._table)
        self._calls = self._pub.builder.build(
            events,
            routes,
            mode=EACH if self.each else ALL,
            token=token,
            split=True,
            marker=self._marker,
        )
        commands = [call.packed for call in self._calls]
        if self._load:
            commands.insert(0, load_command(self._pub.script_source))
        acks = self._pub.replica_acks
        if acks.replicas:
            commands.append(command(b"WAIT", acks.replicas, acks.timeout_ms))
        return commands

    def feed(self, replies: list[Any], error: BaseException | None = None) -> None:
        """The replies to the last round, in order (an error reply as its
        exception instance); with ``error``, the round trip failed after
        ``replies``. Raises what the caller of a mode 'all' job gets."""
        replies = list(replies)
        if self._load:
            self._load = False
            if replies:
                loaded = replies.pop(0)
                if isinstance(loaded, redis.ResponseError):
                    error = error or loaded
                    replies = []
            elif not self.each:
                return self._fail(error)
        if self._probing:
            self._probing = False
            reply = replies[0] if replies else error
            if isinstance(reply, redis.exceptions.NoScriptError):
                return self._reload_script(reply)
            if isinstance(reply, list) and _code(reply) == STALE:
                self._new_table(reply)
                return None
            failure = error or (reply if isinstance(reply, Exception) else None)
            if self.each:  # the broker failed: every event does
                self._calls = [Call(0, len(self._todo), 0, b"")]
                return self._feed_each([], failure, None)
            return self._fail(failure)
        acked = None
        if self._pub.replica_acks.replicas and len(replies) > len(self._calls):
            acked = int(replies.pop())
        if self.each:
            self._feed_each(replies, error, acked)
        else:
            self._feed_all(replies, error, acked)
        return None

    def _marker(self) -> str:
        """The split batch's id (the same in every round: a resend is then safe)."""
        if not self._batch:
            self._batch = uuid4_string()
        return self._batch

    # mode 'all' -----------------------------------------------------------

    def _feed_all(self, replies: list[Any], error: BaseException | None, acked: int | None) -> None:
        calls = self._calls
        if not replies:
            return self._fail(error)
        first = replies[0]
        if isinstance(first, redis.exceptions.NoScriptError):
            return self._reload_script(first)
        if isinstance(first, redis.ResponseError):
            raise script_error(first)
        code = _code(first)
        if code == STALE:
            self._new_table(first)
            return None
        if code == REFUSED:
            raise Backpressure(text(first[1]), int(first[2]), int(first[3]))
        ran = 1
        for reply in replies[1:]:
            if _code(reply) != PUBLISHED:
                break
            ran += 1
        if ran < len(calls):
            published = calls[ran - 1].stop
            if ran < len(replies):
                reply = replies[ran]
                cause: BaseException = (
                    script_error(reply)
                    if isinstance(reply, redis.ResponseError)
                    else BrokerUnavailable("a call of the batch did not run after the one before")
                )
                uncertain = 0
            else:
                cause = unreachable(error or BrokerUnavailable("no reply"))
                uncertain = len(self._prepared) - published
            raise BatchInterrupted(published, uncertain, len(self._prepared), cause)
        if error is not None and acked is None and self._pub.replica_acks.replicas:
            raise unreachable(error)
        self._check_acks(acked)
        self.done = True
        return None

    def _fail(self, error: BaseException | None) -> None:
        raise unreachable(error or BrokerUnavailable("no reply"))

    def _check_acks(self, acked: int | None) -> None:
        acks = self._pub.replica_acks
        if acks.replicas and (acked is None or acked < acks.replicas):
            raise NotReplicated(
                f"{acked or 0} of {acks.replicas} replicas confirmed the write within "
                f"{acks.timeout_ms} ms; a failover could lose it"
            )

    # mode 'each' ----------------------------------------------------------

    def _feed_each(
        self, replies: list[Any], error: BaseException | None, acked: int | None
    ) -> None:
        todo: list[int] = []
        published: list[int] = []
        stale = None
        for n, call in enumerate(self._calls):
            events = self._todo[call.start : call.stop]
            if n >= len(replies):
                failure = unreachable(error or BrokerUnavailable("no reply"))
                for i in events:
                    self.outcomes[i] = failure
                continue
            reply = replies[n]
            if isinstance(reply, redis.exceptions.NoScriptError):
                if self._loads >= LOADS:
                    raise reply
                self._load = True
                todo += events
            elif isinstance(reply, redis.ResponseError):
                failed = script_error(reply)
                for i in events:
                    self.outcomes[i] = failed
            elif _code(reply) == STALE:
                stale = reply
                todo += events
            else:
                refused = {int(reply[j]) for j in range(1, len(reply), 4)}
                for j in range(1, len(reply), 4):
                    self.outcomes[events[int(reply[j]) - 1]] = Backpressure(
                        text(reply[j + 1]), int(reply[j + 2]), int(reply[j + 3])
                    )
                published += [i for e, i in enumerate(events, 1) if e not in refused]
        acks = self._pub.replica_acks
        if acks.replicas and published and (acked is None or acked < acks.replicas):
            try:
                self._check_acks(acked)
            except NotReplicated as exc:
                for i in published:
                    self.outcomes[i] = exc
        if self._load:
            self._loads += 1
        if stale is not None:
            self._new_table(stale)
        self._todo = todo
        self.done = not todo

    # shared ---------------------------------------------------------------

    def _reload_script(self, reply: redis.ResponseError) -> None:
        if self._loads >= LOADS:
            raise reply
        self._loads += 1
        self._load = True

    def _new_table(self, reply: list[Any]) -> None:
        self._table = self._pub.reload(text(reply[1]), reply[2:])
        self._token = self._table.token
        self._attempt += 1
