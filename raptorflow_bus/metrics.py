"""Per-event-type counters, kept in the bus's store so that the publisher and
every worker add to the same numbers and ``get_metrics()`` anywhere sees all."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from raptorflow_bus.store import Counts

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
HANDLER_SCOPE = "handler:"


class Metrics:
    def __init__(self, store: Store) -> None:
        self._store = store

    @staticmethod
    def counts(event_type: str, *counters: str, handler: str | None = None) -> Counts:
        """One for each counter, per event type and (if given) per handler."""
        counts = {(event_type, c): 1 for c in counters}
        if handler is not None:
            counts.update({(HANDLER_SCOPE + handler, c): 1 for c in counters})
        return counts

    def incr(self, event_type: str, *counters: str, handler: str | None = None) -> None:
        self._store.incr(self.counts(event_type, *counters, handler=handler))

    def snapshot(self) -> dict[str, Any]:
        raw = self._store.counters()
        events: dict[str, dict[str, int]] = {}
        extra: dict[str, dict[str, int]] = {}
        handlers: dict[str, dict[str, int]] = {}
        for (scope, counter), value in sorted(raw.items()):
            if scope.startswith(HANDLER_SCOPE):
                name = scope[len(HANDLER_SCOPE) :]
                handlers.setdefault(name, dict.fromkeys(COUNTERS[1:], 0))[counter] = value
                continue
            if scope in GLOBAL_SCOPES:
                extra.setdefault(scope, {})[counter] = value
                continue
            events.setdefault(scope, dict.fromkeys(COUNTERS, 0))[counter] = value
        totals = dict.fromkeys(COUNTERS, 0)
        for counts in events.values():
            for counter, value in counts.items():
                totals[counter] = totals.get(counter, 0) + value
        dlq = {"depth": self._store.dlq_count(), "evicted": extra.get("dlq", {}).get("evicted", 0)}
        rest = {k: v for k, v in extra.items() if k != "dlq"}
        return {"events": events, "handlers": handlers, "totals": totals, "dlq": dlq, **rest}
