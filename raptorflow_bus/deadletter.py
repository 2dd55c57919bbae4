"""What a dead letter records: enough to understand the failure without the
worker's logs, and to run the same handler again with the same envelope.

``history`` and ``edits`` came later and default to empty, so letters stored
before them still read. ``history`` has one entry per time the letter was
dead-lettered (its first failure, then each failed replay); ``edits`` is the
audit trail of payload fixes made before a replay (who, when, old and new)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from raptorflow_bus.envelope import Envelope

# A letter replayed and failing again and again keeps only its latest rounds.
HISTORY_LIMIT = 20


class Failure(BaseModel):
    """One round that ended in the DLQ: ``attempts`` handler runs, the last error."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    at: datetime
    attempts: int
    exception_type: str
    message: str
    replay: bool = False


class Edit(BaseModel):
    """A payload fixed by a person before a replay; the envelope keeps its id
    and correlation id, only the payload changes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    at: datetime
    by: str
    old_payload: dict[str, Any]
    new_payload: dict[str, Any]


class DeadLetter(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    envelope: Envelope | None
    raw_body: str | None = None
    handler: str
    guild: str
    exception_type: str
    message: str
    traceback: str
    attempts: int
    first_failed_at: datetime
    last_failed_at: datetime
    replays: int = 0
    history: list[Failure] = Field(default_factory=list)
    edits: list[Edit] = Field(default_factory=list)

    @property
    def event_type(self) -> str | None:
        return self.envelope.type if self.envelope else None

    @property
    def workspace_id(self) -> str | None:
        return self.envelope.workspace_id if self.envelope else None

    @property
    def correlation_id(self) -> str | None:
        return self.envelope.correlation_id if self.envelope else None
