"""One row per scenario, as the README's fault table shows it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Row:
    """One line of the fault table. ``facts`` holds what a scenario checks beyond
    the counts (a worker survived, the order held, where a reject went)."""

    scenario: str
    sent: int
    accepted: int
    spooled: int
    once: int
    twice: int
    lost: int
    dead: int
    recover_s: float | None
    facts: dict[str, Any] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        return {
            "sent": self.sent,
            "accepted": self.accepted,
            "spooled": self.spooled,
            "once": self.once,
            "twice": self.twice,
            "lost": self.lost,
            "dead": self.dead,
        }

    def view(self, *facts: str) -> dict[str, Any]:
        """The counts and the named facts, for one assertion that shows every
        mismatch at once."""
        return {**self.counts(), **{name: self.facts.get(name) for name in facts}}


COLUMNS = ("scenario", "sent", "accepted", "spooled", "once", "twice", "lost", "dead", "recover")


def format_table(rows: Iterable[Row]) -> str:
    lines = [[*COLUMNS]]
    notes = []
    for row in rows:
        recover = "-" if row.recover_s is None else f"{row.recover_s:.1f}s"
        lines.append([row.scenario, *map(str, row.counts().values()), recover])
        notes.append(
            f"{row.scenario.split()[0]} " + ", ".join(f"{k}={v}" for k, v in row.facts.items())
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS))]
    text = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in lines
    ]
    return "\n".join([*text, "", *notes])
