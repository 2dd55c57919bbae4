"""The shapes the router answers with and accepts, declared so that the
OpenAPI schema documents them and a response never leaks a field by accident
(a letter's summary omits the traceback and the payload; ``GET
/bus/dlq/{id}`` returns the whole letter)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field

from raptorflow_bus.deadletter import DeadLetter
from raptorflow_bus.dlq import LetterFilter


@dataclass(frozen=True)
class Principal:
    """Who calls, as the app's auth dependency decides. ``workspace`` None is
    an operator who may act on every workspace; otherwise every DLQ read,
    replay and purge, and every emit, is confined to that workspace. ``name``
    is who the console's audit trail records (a payload edit's author)."""

    workspace: str | None = None
    name: str | None = None


class Accepted(BaseModel):
    id: str
    event_type: str
    correlation_id: str
    workspace_id: str | None
    spooled: bool = Field(
        description="True: the broker was unreachable and the event waits in the local "
        "outbox, to be delivered when it answers"
    )


class LetterSummary(BaseModel):
    id: str
    handler: str
    guild: str
    event_type: str | None
    workspace_id: str | None
    correlation_id: str | None
    exception_type: str
    message: str
    attempts: int
    replays: int
    first_failed_at: datetime
    last_failed_at: datetime

    @classmethod
    def of(cls, letter: DeadLetter) -> LetterSummary:
        return cls(
            id=letter.id,
            handler=letter.handler,
            guild=letter.guild,
            event_type=letter.event_type,
            workspace_id=letter.workspace_id,
            correlation_id=letter.correlation_id,
            exception_type=letter.exception_type,
            message=letter.message,
            attempts=letter.attempts,
            replays=letter.replays,
            first_failed_at=letter.first_failed_at,
            last_failed_at=letter.last_failed_at,
        )


class LetterPage(BaseModel):
    letters: list[LetterSummary]
    next_cursor: str | None = Field(
        description="Pass as ?cursor= for the next page; null at the end. A page may be "
        "short, even empty, with a cursor: the scan stops after a bounded number of letters"
    )


class ReplayFilter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    workspace_id: str | None = None
    event_type: str | None = None
    handler: str | None = None
    guild: str | None = None
    older_than_seconds: float | None = Field(default=None, ge=0)
    all: bool = Field(default=False, description="replay every letter (of your workspace)")

    def letter_filter(self, workspace: str | None) -> LetterFilter:
        older = self.older_than_seconds
        return LetterFilter(
            workspace_id=workspace,
            event_type=self.event_type,
            handler=self.handler,
            guild=self.guild,
            older_than=None if older is None else timedelta(seconds=older),
        )


class Replayed(BaseModel):
    replayed: list[str]


class Purged(BaseModel):
    purged: int


class ErrorBody(BaseModel):
    error: str = Field(description="the error's class, e.g. InvalidPayload")
    detail: str
