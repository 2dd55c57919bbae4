"""``raptorbus bench`` end to end with tiny sizes: it runs, prints its table and
writes JSON with every figure and ratio. No timing is asserted; the figures of
a --quick run mean nothing, only their presence does."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.report import Results, Target, to_json

PUBLISH_FIGURES = [
    "redis-py LPUSH, 1 round trip",
    "redis-py 2x LPUSH, 1 round trip",
    "redis-py pipelined batch",
    "kombu topic publish",
    "celery apply_async",
    *(f"{kind} c={c}" for kind in ("emit", "emit_many", "publish") for c in (1, 10, 100)),
]
PUBLISH_RATIOS = [
    "emit / redis-py LPUSH",
    "emit / kombu topic publish",
    "emit / celery apply_async",
    "publish c=1 / emit c=1",
    "emit_many c=1 / redis-py batch",
]


def bench(tmp_path: Path, *args: str, timeout: float = 150) -> subprocess.CompletedProcess[str]:
    """The CLI with no broker configured: it starts its own embedded Redis."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RAPTORBUS_BROKER_URL", "REDIS_URL", "UPSTASH_REDIS_URL")
    }
    return subprocess.run(
        [sys.executable, "-m", "raptorflow_bus.cli", "bench", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**env, "RAPTORBUS_HOME": str(tmp_path / "home")},
        cwd=tmp_path,
    )


@pytest.mark.broker
@pytest.mark.timeout(180)
def test_quick_publish_bench_writes_every_figure_and_ratio(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = bench(tmp_path, "--quick", "--only", "publish", "--json", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "== publish" in result.stdout
    assert "ratio emit / redis-py LPUSH" in result.stdout

    doc = json.loads(out.read_text())
    assert doc["errors"] == {}
    assert doc["command"][-4:] == ["--only", "publish", "--json", str(out)]
    assert doc["machine"]["cpus"] >= 1
    assert doc["machine"]["redis_version"]
    assert doc["machine"]["python"]
    assert doc["settings"]["sections"] == ["publish"]
    assert doc["settings"]["quick"] is True
    figures = doc["figures"]["publish"]
    for name in PUBLISH_FIGURES:
        value = figures[name]["value"]
        assert isinstance(value, float) and value > 0, (name, figures[name])
    assert figures["emit_many c=1"]["target"] == ">= 50000"
    assert figures["publish c=100"]["target"] == ">= 20000"
    ratios = doc["ratios"]["publish"]
    for name in PUBLISH_RATIOS:
        assert isinstance(ratios[name]["value"], float) and ratios[name]["value"] > 0, name
    assert ratios["emit / redis-py LPUSH"]["target"] == ">= 0.65"
    assert isinstance(ratios["emit / redis-py LPUSH"]["met"], bool)
    # Nothing else ran.
    assert set(doc["figures"]) == {"publish"}


def test_an_unknown_section_is_bad_input(tmp_path: Path) -> None:
    result = bench(tmp_path, "--only", "publish,nonsense", timeout=60)
    assert result.returncode == 2
    assert "unknown section(s) nonsense" in result.stderr


def test_a_ratio_whose_figure_is_missing_is_kept_without_a_value() -> None:
    results = Results()
    results.add("s", "ours", 3.0, "events/s")
    results.add("s", "theirs", 4.0, "events/s")
    results.ratio("s", "ours / theirs", "s/ours", "s/theirs", Target(">=", 0.65))
    results.ratio("s", "ours / missing", "s/ours", "s/missing", Target("<=", 1.2))
    results.resolve()
    ratios = to_json(results, {})["ratios"]["s"]
    assert math.isclose(ratios["ours / theirs"]["value"], 0.75)
    assert ratios["ours / theirs"]["met"] is True
    assert ratios["ours / missing"] == {
        "value": None,
        "numerator": "s/ours",
        "denominator": "s/missing",
        "target": "<= 1.2",
        "met": None,
    }


FLOOR_TIMES = [
    "sync round trip (PING)",
    "asyncio round trip (PING)",
    "redis-py LPUSH round trip",
    "LPUSH Redis time",
    "prepare",
    "emit",
    "emit script Redis time",
    "emit_many per event",
    "emit_many script Redis time per event",
    "prepare in a batch, per event",
    "publish c=1",
    "publish c=100 per event",
    "publish c=100 script Redis time per event",
    "emit floor",
]


@pytest.mark.broker
@pytest.mark.timeout(120)
def test_quick_floor_bench_times_every_part_and_bounds_the_targets(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = bench(tmp_path, "--quick", "--only", "floor", "--json", str(out), timeout=100)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ratio LPUSH / emit floor" in result.stdout

    doc = json.loads(out.read_text())
    assert doc["errors"] == {}
    figures = doc["figures"]["floor"]
    for name in FLOOR_TIMES:
        value = figures[name]["value"]
        assert isinstance(value, float) and value > 0, (name, figures[name])
        assert figures[name]["unit"] == "us"
    # Differences of two medians: present, of either sign.
    for name in ("emit, beyond its floor", "asyncio - sync round trip", "publish c=1 - emit"):
        assert isinstance(figures[name]["value"], float), name
    for name in ("emit_many ceiling", "publish c=100 ceiling"):
        assert figures[name]["value"] > 0 and figures[name]["unit"] == "events/s"
    assert doc["ratios"]["floor"]["LPUSH / emit floor"]["value"] > 0
    assert len(doc["details"]["floor"]["rounds"]["emit"]) == 1
    assert set(doc["figures"]) == {"floor"}
