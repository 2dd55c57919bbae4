"""What a principal may see and touch: its own workspace's events and
letters, or every workspace for an operator. Shared by the JSON routes and the
console, so both refuse the same things the same way (another workspace's
letter is "not found", so its existence does not leak)."""

from __future__ import annotations

from raptorflow_bus.bus import Bus
from raptorflow_bus.deadletter import DeadLetter
from raptorflow_bus.errors import DeadLetterNotFound
from raptorflow_bus.fastapi.errors import Forbidden
from raptorflow_bus.fastapi.models import Principal


def scoped_workspace(principal: Principal, requested: str | None) -> str | None:
    """The workspace a call may act on: the principal's, or what was asked
    when the principal is an operator; another workspace is refused."""
    if principal.workspace is None:
        return requested
    if requested is not None and requested != principal.workspace:
        raise Forbidden(
            f"this caller is bound to workspace {principal.workspace!r}, not {requested!r}"
        )
    return principal.workspace


def letter_for(bus: Bus, principal: Principal, letter_id: str) -> DeadLetter:
    letter = bus.dlq.get(letter_id)
    if principal.workspace is not None and letter.workspace_id != principal.workspace:
        raise DeadLetterNotFound(f"no dead letter with id {letter_id!r}")
    return letter
