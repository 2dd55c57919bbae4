"""Counters and histograms, kept in the bus's store so that the publisher and
every worker add to the same numbers and ``get_metrics()`` anywhere sees all.

Each scope is a prefix in one flat hash (``<scope>|<counter>``): an event type,
``handler:<guild>.<handler>``, ``hist:...`` (see ``histogram``), ``ws:<id>``
when per-workspace counting is on, and the global ``dlq`` and ``dispatch``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from raptorflow_bus import histogram
from raptorflow_bus.histogram import Histogram
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
WORKSPACE_SCOPE = "ws:"
HISTOGRAM_SCOPE = "hist:"


class Metrics:
    def __init__(self, store: Store, *, per_workspace: bool = False) -> None:
        """``per_workspace`` also counts per workspace id: off by default, as
        every workspace becomes a label value and a hash field."""
        self._store = store
        self.per_workspace = per_workspace

    def counts(
        self,
        event_type: str,
        *counters: str,
        handler: str | None = None,
        workspace: str | None = None,
    ) -> dict[tuple[str, str], int]:
        """One for each counter, per event type, per handler and per workspace."""
        counts = {(event_type, c): 1 for c in counters}
        if handler is not None:
            counts.update({(HANDLER_SCOPE + handler, c): 1 for c in counters})
        if workspace is not None and self.per_workspace:
            counts.update({(WORKSPACE_SCOPE + workspace, c): 1 for c in counters})
        return counts

    def incr(
        self,
        event_type: str,
        *counters: str,
        handler: str | None = None,
        workspace: str | None = None,
        extra: Counts | None = None,
    ) -> None:
        counts = self.counts(event_type, *counters, handler=handler, workspace=workspace)
        counts.update(extra or {})
        self._store.incr(counts)

    def snapshot(self) -> dict[str, Any]:
        raw = self._store.counters()
        events: dict[str, dict[str, int]] = {}
        extra: dict[str, dict[str, int]] = {}
        handlers: dict[str, dict[str, int]] = {}
        workspaces: dict[str, dict[str, int]] = {}
        hists: dict[str, dict[str, int]] = {}
        for (scope, counter), value in sorted(raw.items()):
            if scope.startswith(HANDLER_SCOPE):
                name = scope[len(HANDLER_SCOPE) :]
                handlers.setdefault(name, dict.fromkeys(COUNTERS[1:], 0))[counter] = value
            elif scope.startswith(HISTOGRAM_SCOPE):
                hists.setdefault(scope, {})[counter] = value
            elif scope.startswith(WORKSPACE_SCOPE):
                workspaces.setdefault(scope[len(WORKSPACE_SCOPE) :], {})[counter] = value
            elif scope in GLOBAL_SCOPES:
                extra.setdefault(scope, {})[counter] = value
            else:
                events.setdefault(scope, dict.fromkeys(COUNTERS, 0))[counter] = value
        totals = dict.fromkeys(COUNTERS, 0)
        for counts in events.values():
            for counter, value in counts.items():
                totals[counter] = totals.get(counter, 0) + value
        dlq = {"depth": self._store.dlq_count(), "evicted": extra.get("dlq", {}).get("evicted", 0)}
        rest = {k: v for k, v in extra.items() if k != "dlq"}
        return {
            "events": events,
            "handlers": handlers,
            "totals": totals,
            "dlq": dlq,
            "latency": _histograms(hists, histogram.LATENCY_SCOPE),
            "durations": _histograms(hists, histogram.DURATION_SCOPE),
            **({"workspaces": workspaces} if workspaces else {}),
            **rest,
        }


def _histograms(raw: dict[str, dict[str, int]], prefix: str) -> dict[str, dict[str, Any]]:
    """Per guild (latency) or per handler (durations): count, sum, p50 and p99."""
    out: dict[str, dict[str, Any]] = {}
    for scope, counters in raw.items():
        if not scope.startswith(prefix):
            continue
        hist = Histogram(counters)
        out[scope[len(prefix) :]] = {
            "count": hist.count,
            "sum_seconds": hist.sum_seconds,
            "p50_seconds": hist.quantile(0.5),
            "p99_seconds": hist.quantile(0.99),
            "buckets": hist.cumulative(),
        }
    return out
