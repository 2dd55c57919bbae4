"""Latency and duration histograms kept as counters in the bus's metrics hash.

Every worker process and host adds to the same Redis fields, in the round
trips a handler run already makes (claim, finish, retry, dead letter), so one
scrape anywhere sees the whole deployment. A bucket is counted on its own (not
cumulatively), so one observation is its bucket's increment and the sum, and
the count is the buckets' total: no field of its own, which would be one more
HINCRBY in each of those scripts per run (older data's ``count`` field equals
that total, and is ignored). The exporter makes the buckets cumulative, as
Prometheus wants them."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

# Prometheus's default buckets: handler runs and deliveries both span a few
# milliseconds (a no-op on a warm worker) to seconds (an LLM call, a backlog).
BOUNDS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SUM_MICROS = "sum_us"
DURATION_SCOPE = "hist:duration:"
LATENCY_SCOPE = "hist:latency:"


def bucket_field(index: int) -> str:
    return f"b{index}"


def observe(scope: str, seconds: float) -> dict[tuple[str, str], int]:
    """The counter increments recording one observation of ``seconds``."""
    seconds = max(seconds, 0.0)
    index = next((i for i, bound in enumerate(BOUNDS) if seconds <= bound), len(BOUNDS))
    return {
        (scope, bucket_field(index)): 1,
        (scope, SUM_MICROS): round(seconds * 1_000_000),
    }


class Histogram:
    """One histogram read back from its counters."""

    def __init__(self, counters: Mapping[str, int]) -> None:
        self.buckets = [int(counters.get(bucket_field(i), 0)) for i in range(len(BOUNDS) + 1)]
        self.count = sum(self.buckets)
        self.sum_seconds = int(counters.get(SUM_MICROS, 0)) / 1_000_000

    def cumulative(self) -> list[tuple[str, float]]:
        """(le, cumulative count) pairs, ``+Inf`` last, as prometheus_client takes them."""
        total = 0
        out: list[tuple[str, float]] = []
        for i, n in enumerate(self.buckets):
            total += n
            out.append((repr(BOUNDS[i]) if i < len(BOUNDS) else "+Inf", float(total)))
        return out

    def quantile(self, q: float) -> float | None:
        """Estimated like PromQL's ``histogram_quantile``: linear within the
        bucket the rank falls in; the top bucket reports its lower bound."""
        return estimate_quantile(self.buckets, q)


def estimate_quantile(buckets: Sequence[int], q: float) -> float | None:
    total = sum(buckets)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(buckets):
        if n and seen + n >= rank:
            if i == len(BOUNDS):
                return BOUNDS[-1]
            lower = BOUNDS[i - 1] if i > 0 else 0.0
            return lower + (BOUNDS[i] - lower) * max(rank - seen, 0) / n
        seen += n
    return math.nan
