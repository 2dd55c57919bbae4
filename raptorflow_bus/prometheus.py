"""The bus in Prometheus's terms, read from Redis at scrape time.

Counters and histograms live in the bus's metrics hash, written by every
process in round trips it makes anyway (the publish script, a run's claim and
finish), so the exporter needs no state of its own: any number of them, on
any host, report the same deployment-wide numbers. The outbox is per host, so
``raptorbus_outbox_depth`` is the exporter's own host's."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import redis
from prometheus_client import CollectorRegistry, make_asgi_app, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from raptorflow_bus.errors import BusError
from raptorflow_bus.health import STALLED, read_health

if TYPE_CHECKING:
    from raptorflow_bus.bus import Bus

# Our counter names -> the ``outcome`` label the issue names.
OUTCOMES = {
    "succeeded": "succeeded",
    "failed": "failed",
    "retried": "retried",
    "dead_lettered": "dead_lettered",
    "duplicates": "duplicate",
    "expired": "expired",
}


def split_task(task_name: str) -> tuple[str, str]:
    """``research.score_signal`` -> (guild, handler)."""
    guild, _, handler = task_name.partition(".")
    return guild, handler


class BusCollector(Collector):
    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    def collect(self) -> Iterator[Metric]:
        """A broker that does not answer gives ``raptorbus_up 0`` and the local
        outbox, not a failed scrape: the outage is what the dashboard must show."""
        up = GaugeMetricFamily("raptorbus_up", "1 if the broker answered this scrape")
        try:
            metrics = self.bus.metrics.snapshot()
        except (redis.RedisError, BusError):
            up.add_metric([], 0.0)
            yield up
            yield _outbox(self.bus.outbox_stats())
            return
        health = read_health(self.bus, metrics)
        up.add_metric([], 0.0 if health["status"] == "down" else 1.0)
        yield up
        yield from _counters(metrics)
        yield from _histograms(metrics)
        yield from _health(health)
        yield _outbox(health["outbox"])


def _counters(metrics: dict[str, Any]) -> Iterator[Metric]:
    published = CounterMetricFamily(
        "raptorbus_events_published", "Events accepted by the broker", labels=["event_type"]
    )
    for event_type, counts in metrics["events"].items():
        published.add_metric([event_type], counts.get("published", 0))
    yield published
    runs = CounterMetricFamily(
        "raptorbus_handler_runs",
        "Handler runs by outcome (a failed run is also retried or dead_lettered)",
        labels=["guild", "handler", "outcome"],
    )
    for task_name, counts in metrics["handlers"].items():
        guild, handler = split_task(task_name)
        for counter, outcome in OUTCOMES.items():
            runs.add_metric([guild, handler, outcome], counts.get(counter, 0))
    yield runs
    evicted = CounterMetricFamily(
        "raptorbus_dlq_evicted", "Dead letters dropped to stay within the DLQ's capacity"
    )
    evicted.add_metric([], metrics["dlq"]["evicted"])
    yield evicted
    workspaces = metrics.get("workspaces", {})
    if workspaces:
        ws_published = CounterMetricFamily(
            "raptorbus_workspace_events_published",
            "Events accepted, per workspace (RAPTORBUS_METRICS_PER_WORKSPACE=on)",
            labels=["workspace"],
        )
        ws_runs = CounterMetricFamily(
            "raptorbus_workspace_handler_runs",
            "Handler runs by outcome, per workspace (RAPTORBUS_METRICS_PER_WORKSPACE=on)",
            labels=["workspace", "outcome"],
        )
        for workspace, counts in workspaces.items():
            ws_published.add_metric([workspace], counts.get("published", 0))
            for counter, outcome in OUTCOMES.items():
                ws_runs.add_metric([workspace, outcome], counts.get(counter, 0))
        yield ws_published
        yield ws_runs


def _histograms(metrics: dict[str, Any]) -> Iterator[Metric]:
    durations = HistogramMetricFamily(
        "raptorbus_handler_duration_seconds",
        "Time inside the handler, every attempt",
        labels=["guild", "handler"],
    )
    for task_name, hist in metrics["durations"].items():
        durations.add_metric(list(split_task(task_name)), hist["buckets"], hist["sum_seconds"])
    yield durations
    latency = HistogramMetricFamily(
        "raptorbus_delivery_latency_seconds",
        "From the envelope's timestamp to the first attempt's start",
        labels=["guild"],
    )
    for guild, hist in metrics["latency"].items():
        latency.add_metric([guild], hist["buckets"], hist["sum_seconds"])
    yield latency


def _health(health: dict[str, Any]) -> Iterator[Metric]:
    if health["status"] == "down":
        return
    depth = GaugeMetricFamily(
        "raptorbus_queue_depth", "Messages waiting, all priorities", labels=["guild", "queue"]
    )
    age = GaugeMetricFamily(
        "raptorbus_queue_oldest_age_seconds",
        "Age of the oldest waiting message's event (0 when empty)",
        labels=["guild", "queue"],
    )
    for name, queue in health["queues"].items():
        guild = name.split(".", 1)[0]
        depth.add_metric([guild, name], queue["depth"])
        age.add_metric([guild, name], queue["oldest_age_seconds"] or 0.0)
    yield depth
    yield age
    alive = GaugeMetricFamily(
        "raptorbus_workers_alive", "Worker processes whose heartbeat is current", labels=["guild"]
    )
    stalled = GaugeMetricFamily(
        "raptorbus_guild_stalled", "1 when messages wait and no worker lives", labels=["guild"]
    )
    for guild, g in health["guilds"].items():
        alive.add_metric([guild], g["workers_alive"])
        stalled.add_metric([guild], 1.0 if g["status"] == STALLED else 0.0)
    yield alive
    yield stalled
    dlq = GaugeMetricFamily("raptorbus_dlq_depth", "Dead letters stored")
    dlq.add_metric([], health["dlq_depth"])
    yield dlq


def _outbox(stats: dict[str, Any]) -> Metric:
    outbox = GaugeMetricFamily(
        "raptorbus_outbox_depth", "Events spooled on this host, waiting for the broker"
    )
    outbox.add_metric([], stats["depth"])
    return outbox


def registry_for(bus: Bus) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BusCollector(bus))
    return registry


def asgi_app(bus: Bus) -> Any:
    """Mount it under any ASGI server or framework (``app.mount("/metrics", ...)``)."""
    return make_asgi_app(registry=registry_for(bus))


def serve(bus: Bus, port: int, addr: str = "127.0.0.1") -> Any:
    """Serve ``/metrics`` from a background thread; returns (server, thread)."""
    return start_http_server(port, addr=addr, registry=registry_for(bus))
