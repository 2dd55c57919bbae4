"""Histograms kept as counters: one observation is one bucket and the sum (the
count is the buckets' total); read back they are cumulative and give
PromQL-style quantiles."""

from __future__ import annotations

from collections import Counter

import pytest

from raptorflow_bus.histogram import BOUNDS, Histogram, estimate_quantile, observe


def read(*seconds: float) -> Histogram:
    counts: Counter[str] = Counter()
    for s in seconds:
        for (_, field), n in observe("hist:latency:research", s).items():
            counts[field] += n
    return Histogram(counts)


def test_an_observation_counts_in_exactly_one_bucket_with_its_sum() -> None:
    assert observe("s", 0.003) == {("s", "b0"): 1, ("s", "sum_us"): 3000}
    assert observe("s", 0.005)[("s", "b0")] == 1
    assert ("s", "b1") in observe("s", 0.0051)
    assert (f"b{len(BOUNDS)}") in {f for _, f in observe("s", 60.0)}
    assert observe("s", -1.0)[("s", "sum_us")] == 0


def test_buckets_read_back_cumulative_ending_at_the_count() -> None:
    hist = read(0.001, 0.02, 0.02, 3.0, 99.0)
    cumulative = hist.cumulative()
    assert cumulative[0] == ("0.005", 1.0)
    assert cumulative[-1] == ("+Inf", 5.0)
    assert [n for _, n in cumulative] == sorted(n for _, n in cumulative)
    assert hist.count == 5 and hist.sum_seconds == pytest.approx(102.041)


def test_the_count_is_the_buckets_total_whatever_an_older_count_field_says() -> None:
    assert Histogram({"b0": 2, "b3": 1, "count": 7, "sum_us": 10}).count == 3


def test_quantiles_interpolate_within_the_bucket_like_histogram_quantile() -> None:
    hist = read(*[0.02] * 100)
    assert hist.quantile(0.5) == pytest.approx(0.0175)  # halfway through (0.01, 0.025]
    assert read(*[30.0] * 3).quantile(0.99) == BOUNDS[-1]
    assert read().quantile(0.5) is None
    assert estimate_quantile([0, 10, 0] + [0] * (len(BOUNDS) - 2), 1.0) == 0.01
