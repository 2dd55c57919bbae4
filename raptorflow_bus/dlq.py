"""The dead-letter queue as people use it: look, filter, replay, purge.

A replay sends the same handler task (same deterministic id, so a replay that
races a late original still runs once) with the original envelope and a fresh
retry budget; the letter leaves the queue only when the handler succeeds."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import TYPE_CHECKING

from raptorflow_bus.deadletter import DeadLetter
from raptorflow_bus.envelope import utcnow
from raptorflow_bus.errors import BusError, DeadLetterNotFound, HandlerError
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
        """Oldest first."""
        found = [
            letter
            for letter in self._bus.store.dlq_all()
            if _matches(letter, workspace_id, event_type, handler, guild, older_than)
        ]
        return found if limit is None else found[:limit]

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
        ids = set(letter_ids or ())
        if filtered or everything:
            ids.update(
                letter.id
                for letter in self.list(
                    workspace_id=workspace_id,
                    event_type=event_type,
                    handler=handler,
                    guild=guild,
                    older_than=older_than,
                )
            )
        return self._bus.store.dlq_remove(ids)
