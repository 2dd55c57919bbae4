"""Failure groups: dead letters of one handler that failed the same way.

A group is (handler, exception type, normalised message). Normalising turns
the parts of a message that vary from one event to the next (numbers, ids,
hex, quoted values) into placeholders, so "timeout after 3.2s" and "timeout
after 4.1s" are one group, as Sidekiq's and ServicePulse's failure views
group them. People fix causes, not letters: a group is what they replay.

The store keeps each group's aggregates up to date as letters come and go
(count, first and last seen, workspaces, event types), so the console's
groups page reads a few groups, never the 50,000 letters behind them. They
are kept per workspace, so a caller bound to one workspace sees its own
counts, times and messages only.

"First seen" and "last seen" are when failures of the group were seen (since
the group was last empty), not the oldest and newest letter still held: a
letter that was purged or replayed still happened."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from raptorflow_bus.deadletter import DeadLetter

# A group's place in a listing: (last seen, unix seconds; its id), newest first.
GroupPosition = tuple[float, str]

PATTERN_LIMIT = 300
_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}"), "<uuid>"),
    (re.compile(r"'[^']*'|\"[^\"]*\""), "<str>"),
    (re.compile(r"\b0x[0-9a-fA-F]+\b"), "<hex>"),
    (re.compile(r"\b(?=[0-9a-fA-F]*[0-9])(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{6,}\b"), "<hex>"),
    (re.compile(r"\d+(?:\.\d+)?"), "<n>"),
    (re.compile(r"\s+"), " "),
)


def normalise(message: str) -> str:
    """The message with what varies per event replaced by placeholders."""
    text = message[: PATTERN_LIMIT * 4]
    for pattern, placeholder in _RULES:
        text = pattern.sub(placeholder, text)
    return text.strip()[:PATTERN_LIMIT]


@dataclass(frozen=True)
class GroupKey:
    handler: str
    guild: str
    exception_type: str
    pattern: str

    @property
    def id(self) -> str:
        """Stable across processes and versions (it names Redis keys)."""
        text = "\0".join((self.handler, self.exception_type, self.pattern))
        return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:20]


def group_of(letter: DeadLetter) -> GroupKey:
    return GroupKey(letter.handler, letter.guild, letter.exception_type, normalise(letter.message))


def workspace_token(workspace: str | None) -> str:
    """How a letter's workspace is spelled in the group records; "" for none."""
    return workspace or ""


def timestamp(moment: datetime) -> float:
    return moment.timestamp()


def moment(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


@dataclass(frozen=True)
class GroupSummary:
    """A group as one caller may see it: over every workspace, or over one."""

    key: GroupKey
    count: int
    first_seen: datetime
    last_seen: datetime
    sample: str
    workspaces: tuple[str, ...]
    event_types: tuple[tuple[str, int], ...]

    @property
    def id(self) -> str:
        return self.key.id


@dataclass
class WorkspaceCell:
    """One workspace's share of a group (the unit the store keeps)."""

    count: int = 0
    first: float = float("inf")
    last: float = float("-inf")
    sample: str = ""
    event_types: dict[str, int] = field(default_factory=dict)


def summarise(
    key: GroupKey, cells: Mapping[str, WorkspaceCell], only: str | None = None
) -> GroupSummary | None:
    """The summary over ``cells`` (workspace token -> cell), or over the one
    workspace ``only``; None when nothing is left there."""
    chosen = {w: c for w, c in cells.items() if c.count > 0 and (only is None or w == only)}
    if not chosen:
        return None
    types: dict[str, int] = {}
    for cell in chosen.values():
        for event_type, n in cell.event_types.items():
            if n > 0:
                types[event_type] = types.get(event_type, 0) + n
    latest = max(chosen.values(), key=lambda c: c.last)
    return GroupSummary(
        key=key,
        count=sum(c.count for c in chosen.values()),
        first_seen=moment(min(c.first for c in chosen.values())),
        last_seen=moment(latest.last),
        sample=latest.sample,
        workspaces=tuple(sorted(chosen)),
        event_types=tuple(sorted(types.items())),
    )


def cells_from_hash(raw: Mapping[str, str]) -> tuple[GroupKey, dict[str, WorkspaceCell]] | None:
    """Read a group's Redis hash (see ``lua/dlq_groups.lua`` for its fields)."""
    if "handler" not in raw:
        return None
    key = GroupKey(raw["handler"], raw["guild"], raw["exception_type"], raw["pattern"])
    cells: dict[str, WorkspaceCell] = {}
    for name, value in raw.items():
        kind, sep, rest = name.partition(":")
        if not sep or kind not in ("n", "f", "l", "s", "e"):
            continue
        if kind == "e":
            workspace, _, event_type = rest.rpartition("|")
            cell = cells.setdefault(workspace, WorkspaceCell())
            cell.event_types[event_type] = int(value)
            continue
        cell = cells.setdefault(rest, WorkspaceCell())
        if kind == "n":
            cell.count = int(value)
        elif kind == "f":
            cell.first = float(value)
        elif kind == "l":
            cell.last = float(value)
        else:
            cell.sample = value
    return key, cells


def positions_before(
    rows: Iterable[GroupPosition], cursor: GroupPosition | None
) -> list[GroupPosition]:
    """Newest first, strictly after ``cursor`` in that order."""
    ordered = sorted(rows, reverse=True)
    return [p for p in ordered if cursor is None or p < cursor]
