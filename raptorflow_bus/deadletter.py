"""What a dead letter records: enough to understand the failure without the
worker's logs, and to run the same handler again with the same envelope."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

from raptorflow_bus.envelope import Envelope


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

    @property
    def event_type(self) -> str | None:
        return self.envelope.type if self.envelope else None

    @property
    def workspace_id(self) -> str | None:
        return self.envelope.workspace_id if self.envelope else None

    @property
    def correlation_id(self) -> str | None:
        return self.envelope.correlation_id if self.envelope else None
