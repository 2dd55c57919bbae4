"""The dead-letter queue as people use it: look, filter, replay, purge, by
letter or by failure group (``dlq_groups``), and fix a payload before a replay.

A replay sends the same handler task (same deterministic id, so a replay that
races a late original still runs once) with the original envelope and a fresh
retry budget; the letter leaves the queue only when the handler succeeds.

Every read here is bounded: pages walk the store's indexes a batch at a time,
so a queue at its 50,000-letter capacity is never loaded whole (``list`` is
the exception, kept for small queues and scripts)."""

from __future__ import annotations

import base64
import binascii
import builtins
import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from raptorflow_bus.deadletter import DeadLetter, Edit
from raptorflow_bus.dlq_groups import GroupSummary
from raptorflow_bus.envelope import utcnow
from raptorflow_bus.errors import (
    BusError,
    DeadLetterNotFound,
    HandlerError,
    InvalidCursor,
    PayloadTooLarge,
)
from raptorflow_bus.store import Position
from raptorflow_bus.topology import PRIORITY_VALUES

if TYPE_CHECKING:
    from raptorflow_bus.bus import Bus


def _matches(
    letter: DeadLetter,
    workspace_id: str | None,
    event_type: str | None,
    handler: str | None,
    guild: str | None,
    older_than: timedelta | None,
) -> bool:
    if workspace_id is not None and letter.workspace_id != workspace_id:
        return False
    if event_type is not None and letter.event_type != event_type:
        return False
    if handler is not None and handler not in (letter.handler, letter.handler.split(".", 1)[-1]):
        return False
    if guild is not None and letter.guild != guild:
        return False
    return older_than is None or letter.last_failed_at <= utcnow() - older_than


# A filtered page reads the store in batches of SCAN_BATCH and gives up after
# SCAN_BUDGET letters, handing back a cursor to go on from: a filter that
# matches little costs bounded work per call, never the whole queue at once.
SCAN_BATCH = 500
SCAN_BUDGET = 5_000
# A letter's position is the time it was stored, a little after its
# last_failed_at; ``older_than`` stops the walk only this far past its cutoff.
INDEX_SLACK_SECONDS = 60.0
# Groups are few next to letters; a filtered groups page reads this many at most.
GROUP_SCAN_BATCH = 100
GROUP_SCAN_BUDGET = 2_000

Reader = Callable[[Position | None, int], list[tuple[Position, DeadLetter]]]
T = TypeVar("T")


def _scan(
    read: Callable[[Position | None, int], Sequence[tuple[Position, T]]],
    keep: Callable[[T], bool],
    cursor: str | None,
    limit: int,
    batch: int,
    budget: int,
    stop: float | None = None,
) -> tuple[builtins.list[T], str | None]:
    """Up to ``limit`` kept items after ``cursor``, reading ``batch`` at a time
    and at most about ``budget`` in all, and not past index score ``stop``; with
    the cursor to go on from (None at the end). Letters and groups page alike."""
    if limit < 1:
        raise BusError(f"limit must be at least 1, got {limit}")
    after = None if cursor is None else decode_cursor(cursor)
    found: list[T] = []
    scanned = 0
    while scanned < budget:
        rows = read(after, batch)
        if not rows:
            return found, None
        for position, item in rows:
            if stop is not None and position[0] > stop:
                return found, None
            after = position
            if keep(item):
                found.append(item)
                if len(found) == limit:
                    return found, encode_cursor(position)
        scanned += len(rows)
    assert after is not None
    return found, encode_cursor(after)


@dataclass(frozen=True)
class LetterFilter:
    workspace_id: str | None = None
    event_type: str | None = None
    handler: str | None = None
    guild: str | None = None
    older_than: timedelta | None = None

    @property
    def narrows(self) -> bool:
        return any(
            v is not None
            for v in (self.workspace_id, self.event_type, self.handler, self.guild, self.older_than)
        )

    def matches(self, letter: DeadLetter) -> bool:
        return _matches(
            letter, self.workspace_id, self.event_type, self.handler, self.guild, self.older_than
        )

    def matches_group(self, group: GroupSummary) -> bool:
        """Whether the group may hold matching letters (its workspace scope is
        the store's: ``dlq_groups`` reads one workspace's share)."""
        key = group.key
        if self.handler is not None and self.handler not in (
            key.handler,
            key.handler.split(".", 1)[-1],
        ):
            return False
        if self.guild is not None and key.guild != self.guild:
            return False
        if self.event_type is not None and self.event_type not in dict(group.event_types):
            return False
        return self.older_than is None or group.first_seen <= utcnow() - self.older_than


def _unscoped(where: LetterFilter) -> LetterFilter:
    """``where`` less its workspace, for a walk whose reader already reads one
    workspace's letters only (a group's per-workspace index)."""
    return replace(where, workspace_id=None)


@dataclass(frozen=True)
class Page:
    """``next_cursor`` is None once the walk reached the end; a page may hold
    fewer letters than asked (even none) and still have a cursor, when the
    scan budget ran out before the filter found enough."""

    letters: list[DeadLetter]
    next_cursor: str | None


@dataclass(frozen=True)
class GroupPage:
    """Failure groups, last seen first; ``next_cursor`` as for ``Page``."""

    groups: list[GroupSummary]
    next_cursor: str | None


def encode_cursor(position: Position) -> str:
    """Opaque to callers; ``repr`` keeps the float score exact."""
    text = f"{position[0]!r} {position[1]}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> Position:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        score, letter_id = text.split(" ", 1)
        return float(score), letter_id
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidCursor(f"cursor {cursor!r} is not one this bus handed out") from None


class DeadLetterQueue:
    def __init__(self, bus: Bus) -> None:
        self._bus = bus

    def list(
        self,
        *,
        workspace_id: str | None = None,
        event_type: str | None = None,
        handler: str | None = None,
        guild: str | None = None,
        older_than: timedelta | None = None,
        limit: int | None = None,
    ) -> list[DeadLetter]:
        """Oldest first, no further than ``limit`` (``each``)."""
        where = LetterFilter(workspace_id, event_type, handler, guild, older_than)
        return builtins.list(itertools.islice(self.each(where), limit))

    def each(self, where: LetterFilter) -> Iterator[DeadLetter]:
        """Every letter ``where`` matches, oldest first, read a bounded batch at
        a time. Unlike ``matching`` it checks every letter's own last failure
        against ``older_than`` instead of stopping where the index passes it,
        so a letter stored long after it failed (an import) is still found."""
        aged = LetterFilter(older_than=where.older_than)
        found = self.matching(replace(where, older_than=None))
        return (letter for letter in found if aged.matches(letter))

    def page(
        self, where: LetterFilter | None = None, *, cursor: str | None = None, limit: int = 50
    ) -> Page:
        """Oldest first, ``limit`` letters at most, resuming after ``cursor``."""
        return self._walk(self._bus.store.dlq_page, where, cursor, limit)

    def _walk(
        self, read: Reader, where: LetterFilter | None, cursor: str | None, limit: int
    ) -> Page:
        where = where or LetterFilter()
        stop = None
        if where.older_than is not None:
            stop = (utcnow() - where.older_than).timestamp() + INDEX_SLACK_SECONDS
        batch = SCAN_BATCH if where.narrows else limit
        found, next_cursor = _scan(read, where.matches, cursor, limit, batch, SCAN_BUDGET, stop)
        return Page(found, next_cursor)

    def matching(self, where: LetterFilter | None = None) -> Iterator[DeadLetter]:
        """Every matching letter, oldest first, read a bounded batch at a time."""
        return self._every(self._bus.store.dlq_page, where)

    def _every(self, read: Reader, where: LetterFilter | None) -> Iterator[DeadLetter]:
        cursor: str | None = None
        while True:
            page = self._walk(read, where, cursor, SCAN_BATCH)
            yield from page.letters
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def replay_matching(self, where: LetterFilter | None = None) -> builtins.list[str]:
        """Replay every matching letter once; returns their ids. A replay that
        fails again re-enters the queue behind the walk and is not replayed a
        second time; letters holding a malformed message are skipped."""
        return self._replay_each(self.matching(where))

    def _replay_each(self, letters: Iterable[DeadLetter]) -> builtins.list[str]:
        replayed: list[str] = []
        seen: set[str] = set()
        for letter in letters:
            if letter.id in seen or letter.envelope is None:
                continue
            seen.add(letter.id)
            replayed.append(self.replay(letter.id))
        return replayed

    def groups(
        self, where: LetterFilter | None = None, *, cursor: str | None = None, limit: int = 50
    ) -> GroupPage:
        """Failure groups, last seen first, summarised over ``where.workspace_id``
        (or every workspace); reads the groups' aggregates, never their letters."""
        where = where or LetterFilter()
        store = self._bus.store

        def read(after: Position | None, count: int) -> list[tuple[Position, GroupSummary]]:
            return store.dlq_groups(where.workspace_id, after, count)

        found, next_cursor = _scan(
            read, where.matches_group, cursor, limit, GROUP_SCAN_BATCH, GROUP_SCAN_BUDGET
        )
        return GroupPage(found, next_cursor)

    def group(self, group_id: str, workspace_id: str | None = None) -> GroupSummary:
        """One group, over every workspace or over ``workspace_id``'s letters only."""
        group = self._bus.store.dlq_group(group_id, workspace_id)
        if group is None:
            raise DeadLetterNotFound(f"no failure group with id {group_id!r}")
        return group

    def _group_reader(self, group_id: str, where: LetterFilter) -> Reader:
        store = self._bus.store

        def read(after: Position | None, count: int) -> list[tuple[Position, DeadLetter]]:
            return store.dlq_group_page(group_id, where.workspace_id, after, count)

        return read

    def group_page(
        self,
        group_id: str,
        where: LetterFilter | None = None,
        *,
        cursor: str | None = None,
        limit: int = 50,
    ) -> Page:
        """``page`` over one group's letters (its index, not the whole queue's)."""
        where = where or LetterFilter()
        return self._walk(self._group_reader(group_id, where), _unscoped(where), cursor, limit)

    def group_matching(
        self, group_id: str, where: LetterFilter | None = None
    ) -> Iterator[DeadLetter]:
        where = where or LetterFilter()
        return self._every(self._group_reader(group_id, where), _unscoped(where))

    def replay_group(self, group_id: str, where: LetterFilter | None = None) -> builtins.list[str]:
        """Replay each letter of the group that ``where`` matches, once, walking
        the group's own index a batch at a time; returns their ids."""
        self.group(group_id, (where or LetterFilter()).workspace_id)
        return self._replay_each(self.group_matching(group_id, where))

    def purge_group(self, group_id: str, where: LetterFilter | None = None) -> int:
        """Delete each letter of the group that ``where`` matches."""
        self.group(group_id, (where or LetterFilter()).workspace_id)
        return self._remove_each(self.group_matching(group_id, where))

    def _remove_each(self, letters: Iterable[DeadLetter]) -> int:
        removed = 0
        batch: list[str] = []
        for letter in letters:
            batch.append(letter.id)
            if len(batch) == SCAN_BATCH:
                removed += self._bus.store.dlq_remove(batch)
                batch = []
        return removed + self._bus.store.dlq_remove(batch)

    def edit(self, letter_id: str, payload: Any, *, by: str) -> DeadLetter:
        """Fix a letter's payload before replaying it. The new payload is
        validated as an emit validates it (the event's model, the size limit);
        the envelope keeps its id, correlation id and everything else, so the
        replay runs the same handler task for the same event. The edit (who,
        when, old and new payload) is kept on the letter."""
        letter = self.get(letter_id)
        if letter.envelope is None:
            raise BusError(f"dead letter {letter_id!r} holds a malformed message; nothing to edit")
        bus = self._bus
        old = letter.envelope
        wire = bus.catalogue.to_wire(old.type, payload)
        # Sealed again: the edit changes what a signature covers.
        envelope = bus.seal(old.model_copy(update={"payload": wire}))
        size = len(envelope.to_json().encode())
        if size > bus.settings.max_payload_bytes:
            raise PayloadTooLarge(
                f"edited event is {size} bytes, over the limit of "
                f"{bus.settings.max_payload_bytes} bytes"
            )
        edit = Edit(at=utcnow(), by=by, old_payload=old.payload, new_payload=wire)
        edited = letter.model_copy(update={"envelope": envelope, "edits": [*letter.edits, edit]})
        bus.store.dlq_put(edited, bus.topology.dlq_capacity)
        return edited

    def get(self, letter_id: str) -> DeadLetter:
        letter = self._bus.store.dlq_get(letter_id)
        if letter is None:
            raise DeadLetterNotFound(f"no dead letter with id {letter_id!r}")
        return letter

    def count(self) -> int:
        return self._bus.store.dlq_count()

    def replay(self, letter_id: str) -> str:
        """Queue the failed handler again; returns the task id (the letter's id)."""
        letter = self.get(letter_id)
        if letter.envelope is None:
            raise BusError(
                f"dead letter {letter_id!r} holds a malformed message; nothing to replay"
            )
        bus = self._bus
        kwargs = {"envelope": letter.envelope.model_dump(mode="json"), "replay": True}
        queue = bus.topology.handler_queue(letter.guild)
        priority = PRIORITY_VALUES[letter.envelope.priority]
        if bus.eager:
            task = bus.app.tasks.get(letter.handler)
            if task is None:
                raise HandlerError(f"handler {letter.handler!r} is not registered on this bus")
            task.apply_async(kwargs=kwargs, task_id=letter.id)
        else:
            bus.app.send_task(
                letter.handler, kwargs=kwargs, task_id=letter.id, queue=queue, priority=priority
            )
        return letter.id

    def purge(
        self,
        letter_ids: Iterable[str] | None = None,
        *,
        everything: bool = False,
        workspace_id: str | None = None,
        event_type: str | None = None,
        handler: str | None = None,
        guild: str | None = None,
        older_than: timedelta | None = None,
    ) -> int:
        """Delete letters by id, by filter, or all of them with ``everything=True``."""
        filtered = any(
            v is not None for v in (workspace_id, event_type, handler, guild, older_than)
        )
        if letter_ids is None and not filtered and not everything:
            raise BusError("purge needs letter ids, a filter, or everything=True")
        removed = self._bus.store.dlq_remove(set(letter_ids or ()))
        if filtered or everything:
            where = LetterFilter(workspace_id, event_type, handler, guild, older_than)
            removed += self._remove_each(self.matching(where))
        return removed
