"""Per-event-type counters, kept in the bus's store so that the publisher and
every worker add to the same numbers and ``get_metrics()`` anywhere sees all."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from raptorflow_bus.store import Store

COUNTERS: tuple[str, ...] = (
    "published",
    "delivered",
    "succeeded",
    "failed",
    "retried",
    "dead_lettered",
    "expired",
    "duplicates",
)
GLOBAL_SCOPES = frozenset({"dlq", "dispatch"})


class Metrics:
    def __init__(self, store: Store) -> None:
        self._store = store

    def incr(self, event_type: str, *counters: str, n: int = 1) -> None:
        self._store.incr({(event_type, c): n for c in counters})

    def snapshot(self) -> dict[str, Any]:
        raw = self._store.counters()
        events: dict[str, dict[str, int]] = {}
        extra: dict[str, dict[str, int]] = {}
        for (scope, counter), value in sorted(raw.items()):
            if scope in GLOBAL_SCOPES:
                extra.setdefault(scope, {})[counter] = value
                continue
            events.setdefault(scope, dict.fromkeys(COUNTERS, 0))[counter] = value
        totals = dict.fromkeys(COUNTERS, 0)
        for counts in events.values():
            for counter, value in counts.items():
                totals[counter] = totals.get(counter, 0) + value
        dlq = {"depth": self._store.dlq_count(), "evicted": extra.get("dlq", {}).get("evicted", 0)}
        return {
            "events": events,
            "totals": totals,
            "dlq": dlq,
            **{k: v for k, v in extra.items() if k != "dlq"},
        }
