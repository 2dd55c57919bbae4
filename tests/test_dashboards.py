"""The Grafana dashboard asks only for metrics the exporter really serves:
every name in every panel's query is checked against a scrape of a real
exporter after a real workload (so the histograms have samples too)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from raptorflow_bus.prometheus import registry_for
from tests.harness import Recorder, RedisBackend
from tests.payloads import VALID

pytestmark = [pytest.mark.broker, pytest.mark.timeout(120)]
DASHBOARD = Path(__file__).parent.parent / "deploy/grafana/dashboards/raptorbus.json"
METRIC_NAME = re.compile(r"\braptorbus_[a-z_]+")


def panel_queries() -> list[tuple[str, str]]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [(p["title"], t["expr"]) for p in panels for t in p["targets"]]


def test_the_dashboard_covers_rates_latency_depth_age_dlq_and_workers() -> None:
    names = {n for _, expr in panel_queries() for n in METRIC_NAME.findall(expr)}
    for wanted in (
        "raptorbus_events_published_total",
        "raptorbus_handler_runs_total",
        "raptorbus_delivery_latency_seconds_bucket",
        "raptorbus_queue_depth",
        "raptorbus_queue_oldest_age_seconds",
        "raptorbus_dlq_depth",
        "raptorbus_workers_alive",
    ):
        assert wanted in names


def test_every_panel_queries_metrics_the_exporter_exports(redis_backend: RedisBackend) -> None:
    from prometheus_client import generate_latest

    calls = Recorder()
    with redis_backend.bus() as bus:
        bus.subscribe("signal.detected", calls.handler("flaky", fail_times=1), guild="research")
        bus.emit("signal.detected", VALID["signal.detected"], workspace_id="ws-a")
        with redis_backend.running(bus, consumers=["research"]):
            redis_backend.settle(bus, lambda: calls.count("flaky") == 2)
        text = generate_latest(registry_for(bus)).decode()
    exported = {s.name for family in text_string_to_metric_families(text) for s in family.samples}
    queries = panel_queries()
    assert queries
    for title, expr in queries:
        names = METRIC_NAME.findall(expr)
        assert names, f"panel {title!r} names no raptorbus metric: {expr}"
        for name in names:
            assert name in exported, f"panel {title!r} asks for {name}, not exported"
