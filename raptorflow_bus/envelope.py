"""The frozen message every event travels in. One shape for the wire, the logs
and the dead-letter queue, so an event can be replayed exactly as it was sent."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator

from raptorflow_bus.ids import uuid4_string


class Priority(StrEnum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    CRITICAL = "critical"


def utcnow() -> datetime:
    return datetime.now(UTC)


TRACE_CONTEXT_KEYS = frozenset({"traceparent", "tracestate"})
TRACE_VALUE_LIMIT = 512


def _absent(value: object) -> bool:
    return value is None


class Envelope(BaseModel):
    """An emitted event. ``request_id`` is the API doc's name for the correlation id;
    both are kept so consumers written against either name see the same value.

    ``trace_context`` is the W3C trace context of the emit (``tracing``). It is
    optional and left out of the JSON when absent, so an envelope from a bus
    without tracing is byte-for-byte what it was before the field existed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(default_factory=uuid4_string)
    type: str
    version: int = 1
    payload: dict[str, Any]
    priority: Priority = Priority.NORMAL
    workspace_id: str | None = None
    correlation_id: str
    causation_id: str | None = None
    request_id: str
    source_agent_id: str | None = None
    timestamp: datetime = Field(default_factory=utcnow)
    expires_at: datetime | None = None
    trace_context: dict[str, str] | None = Field(default=None, exclude_if=_absent)
    # "<key id>:<hex HMAC-SHA256>" when the deployment signs (raptorflow_bus.signing).
    signature: str | None = Field(default=None, exclude_if=_absent)

    @field_validator("timestamp", "expires_at")
    @classmethod
    def _require_utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware (UTC)")
        return value.astimezone(UTC)

    @field_validator("trace_context")
    @classmethod
    def _w3c_only(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return None
        if not set(value) <= TRACE_CONTEXT_KEYS:
            raise ValueError("trace_context holds only 'traceparent' and 'tracestate'")
        if any(len(v) > TRACE_VALUE_LIMIT for v in value.values()):
            raise ValueError(f"trace_context values are at most {TRACE_VALUE_LIMIT} characters")
        return value

    @field_serializer("timestamp", "expires_at")
    def _iso(self, value: datetime | None) -> str | None:
        return None if value is None else value.isoformat()

    @property
    def routing_key(self) -> str:
        return routing_key_for(self.type)

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, data: str | bytes) -> Envelope:
        return cls.model_validate_json(data)


ROUTING_KEY_PREFIX = "raptorflow.events."


def routing_key_for(event_type: str) -> str:
    return ROUTING_KEY_PREFIX + event_type
