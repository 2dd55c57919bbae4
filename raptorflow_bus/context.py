"""Request context that follows an event from the API call through every hop.

Context variables rather than arguments so that an agent deep in a call stack can
``emit()`` without threading ids through; explicit arguments still win."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from raptorflow_bus.bus import Bus
    from raptorflow_bus.envelope import Envelope

workspace_id_var: ContextVar[str | None] = ContextVar("raptorbus_workspace_id", default=None)
correlation_id_var: ContextVar[str | None] = ContextVar("raptorbus_correlation_id", default=None)
event_type_var: ContextVar[str | None] = ContextVar("raptorbus_event_type", default=None)
current_envelope_var: ContextVar[Envelope | None] = ContextVar(
    "raptorbus_current_envelope", default=None
)
current_bus_var: ContextVar[Bus | None] = ContextVar("raptorbus_current_bus", default=None)


@contextmanager
def bus_context(
    *, workspace_id: str | None = None, correlation_id: str | None = None
) -> Iterator[None]:
    """Set the workspace and correlation ids for every emit and log line inside."""
    tokens = []
    if workspace_id is not None:
        tokens.append((workspace_id_var, workspace_id_var.set(workspace_id)))
    if correlation_id is not None:
        tokens.append((correlation_id_var, correlation_id_var.set(correlation_id)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


@contextmanager
def handling(bus: Bus, envelope: Envelope) -> Iterator[None]:
    """The context a handler runs in: its event's ids, so what it emits is caused by it."""
    tokens = [
        (workspace_id_var, workspace_id_var.set(envelope.workspace_id)),
        (correlation_id_var, correlation_id_var.set(envelope.correlation_id)),
        (event_type_var, event_type_var.set(envelope.type)),
        (current_envelope_var, current_envelope_var.set(envelope)),
        (current_bus_var, current_bus_var.set(bus)),
    ]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)  # type: ignore[attr-defined]
