"""The in-process twin of ``lua/dlq_groups.lua``: failure groups kept in step
with ``MemoryStore``'s dead letters, with the same rules (per-workspace
cells, first and last seen as failures were seen, a group gone with its last
letter), so the contract tests hold for both stores."""

from __future__ import annotations

from dataclasses import dataclass, field

from raptorflow_bus.deadletter import DeadLetter
from raptorflow_bus.dlq_groups import (
    GroupKey,
    GroupPosition,
    GroupSummary,
    WorkspaceCell,
    group_of,
    positions_before,
    summarise,
    timestamp,
    workspace_token,
)
from raptorflow_bus.store import Position

SAMPLE_LIMIT = 1_000


@dataclass
class _Group:
    key: GroupKey
    cells: dict[str, WorkspaceCell] = field(default_factory=dict)
    last_seen: dict[str, float] = field(default_factory=dict)  # by workspace, never lowered
    members: dict[str, tuple[Position, str]] = field(default_factory=dict)  # id -> (pos, ws)


class MemoryGroups:
    """Not thread-safe on its own: ``MemoryStore`` calls it under its lock."""

    def __init__(self) -> None:
        self._groups: dict[str, _Group] = {}
        self._cell_of: dict[str, tuple[str, str, str]] = {}  # id -> (group, event type, ws)
        self._last: dict[str, float] = {}

    def add(self, letter: DeadLetter, position: Position) -> None:
        self.drop(letter.id)
        key = group_of(letter)
        ws, event_type = workspace_token(letter.workspace_id), letter.event_type or ""
        group = self._groups.get(key.id)
        if group is None:
            group = self._groups[key.id] = _Group(key)
            self._last.pop(key.id, None)
        self._cell_of[letter.id] = (key.id, event_type, ws)
        group.members[letter.id] = (position, ws)
        cell = group.cells.setdefault(ws, WorkspaceCell())
        cell.count += 1
        cell.event_types[event_type] = cell.event_types.get(event_type, 0) + 1
        cell.first = min(cell.first, timestamp(letter.first_failed_at))
        last = timestamp(letter.last_failed_at)
        if last >= cell.last:
            cell.last, cell.sample = last, letter.message[:SAMPLE_LIMIT]
        group.last_seen[ws] = max(group.last_seen.get(ws, last), last)
        self._last[key.id] = max(self._last.get(key.id, last), last)

    def drop(self, letter_id: str) -> None:
        found = self._cell_of.pop(letter_id, None)
        if found is None:
            return
        group_id, event_type, ws = found
        group = self._groups[group_id]
        del group.members[letter_id]
        cell = group.cells[ws]
        cell.count -= 1
        cell.event_types[event_type] -= 1
        if cell.event_types[event_type] <= 0:
            del cell.event_types[event_type]
        if cell.count <= 0:
            del group.cells[ws]
            del group.last_seen[ws]
        if not group.cells:
            del self._groups[group_id]
            del self._last[group_id]

    def page(
        self, workspace: str | None, after: GroupPosition | None, count: int
    ) -> list[tuple[GroupPosition, GroupSummary]]:
        only = None if workspace is None else workspace_token(workspace)
        rows = (
            (self._last[gid] if only is None else g.last_seen[only], gid)
            for gid, g in self._groups.items()
            if only is None or only in g.last_seen
        )
        found: list[tuple[GroupPosition, GroupSummary]] = []
        for position in positions_before(rows, after)[:count]:
            summary = self.summary(position[1], workspace)
            if summary is not None:
                found.append((position, summary))
        return found

    def summary(self, group_id: str, workspace: str | None) -> GroupSummary | None:
        group = self._groups.get(group_id)
        if group is None:
            return None
        only = None if workspace is None else workspace_token(workspace)
        return summarise(group.key, group.cells, only=only)

    def members_after(
        self, group_id: str, workspace: str | None, after: Position | None, count: int
    ) -> list[Position]:
        group = self._groups.get(group_id)
        if group is None:
            return []
        only = None if workspace is None else workspace_token(workspace)
        chosen = sorted(
            position
            for position, ws in group.members.values()
            if (only is None or ws == only) and (after is None or position > after)
        )
        return chosen[:count]

    def clear(self) -> None:
        self._groups.clear()
        self._cell_of.clear()
        self._last.clear()
