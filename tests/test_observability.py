"""What an operator reads: exact counters in ``get_metrics()`` and on a scraped
``/metrics``, queue depth and age, workers alive per guild, the ``bus.health``
events, and proof that counting costs ``emit`` no round trip."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from raptorflow_bus import Bus, Settings
from raptorflow_bus.dispatch import dispatch
from raptorflow_bus.embedded import free_port
from raptorflow_bus.envelope import utcnow
from raptorflow_bus.prometheus import serve
from tests.harness import Recorder, RedisBackend, guild_worker, spawn_worker, wait_until
from tests.payloads import VALID

pytestmark = [pytest.mark.broker, pytest.mark.timeout(120)]
SIGNAL = VALID["signal.detected"]
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@pytest.fixture
def exporter(redis_url: str) -> Iterator[tuple[Bus, int]]:
    """A second bus, as a separate exporter process would hold, serving /metrics."""
    bus = Bus(Settings(broker_url=redis_url)).connect()
    port = free_port()
    server, _ = serve(bus, port)
    yield bus, port
    server.shutdown()
    bus.close()


def test_after_a_known_workload_every_counter_is_exact_in_get_metrics_and_on_metrics(
    redis_backend: RedisBackend, exporter: tuple[Bus, int]
) -> None:
    """6 signals heard by one handler that succeeds and one that always fails
    (4 attempts each), then one signal dispatched a second time, one expired."""
    calls = Recorder()
    per_workspace = Settings(metrics_per_workspace=True)
    with redis_backend.bus(settings=per_workspace) as bus:
        bus.subscribe("signal.detected", calls.handler("ok"), guild="research")
        bus.subscribe("signal.detected", calls.handler("bad", fail_times=-1), guild="research")
        sent = [
            bus.emit("signal.detected", SIGNAL, workspace_id="ws-a" if i < 4 else "ws-b")
            for i in range(6)
        ]
        bus.emit_many([("insight.generated", VALID["insight.generated"])] * 2, workspace_id="ws-b")
        bus.emit("signal.detected", SIGNAL, workspace_id="ws-b", expires_at=utcnow() - timedelta(1))
        with redis_backend.running(bus, consumers=["research"]):
            redis_backend.settle(bus, lambda: bus.dlq.count() == 6)
            dispatch(bus, sent[0], "research")
            redis_backend.settle(bus, lambda: calls.count("bad") == 28)

        got = bus.get_metrics()
        assert got["events"]["signal.detected"]["published"] == 7
        assert got["events"]["insight.generated"]["published"] == 2
        ok = {"delivered": 6, "succeeded": 6, "failed": 0, "retried": 0, "dead_lettered": 0}
        ok |= {"expired": 1, "duplicates": 1}
        bad = {"delivered": 7, "succeeded": 0, "failed": 28, "retried": 21, "dead_lettered": 7}
        bad |= {"expired": 1, "duplicates": 0}
        assert got["handlers"]["research.ok"] == ok
        assert got["handlers"]["research.bad"] == bad
        assert got["dlq"] == {"depth": 6, "evicted": 0}
        assert got["latency"]["research"]["count"] == 13
        assert got["durations"]["research.ok"]["count"] == 6
        assert got["durations"]["research.bad"]["count"] == 28
        assert got["workspaces"]["ws-a"]["published"] == 4
        assert got["workspaces"]["ws-b"]["published"] == 5
        assert got["workspaces"]["ws-a"]["succeeded"] == 4

    _, port = exporter
    samples = scrape(port)
    assert sample(samples, "raptorbus_up") == 1
    published = "raptorbus_events_published_total"
    assert sample(samples, published, event_type="signal.detected") == 7
    assert sample(samples, published, event_type="insight.generated") == 2
    runs = "raptorbus_handler_runs_total"
    for handler, expected in (("ok", ok), ("bad", bad)):
        for counter, outcome in [
            *((c, c) for c in ("succeeded", "failed", "retried", "dead_lettered", "expired")),
            ("duplicates", "duplicate"),
        ]:
            value = sample(samples, runs, guild="research", handler=handler, outcome=outcome)
            assert value == expected[counter], (handler, outcome)
    assert sample(samples, "raptorbus_dlq_depth") == 6
    assert sample(samples, "raptorbus_dlq_evicted_total") == 0
    latency = "raptorbus_delivery_latency_seconds_count"
    assert sample(samples, latency, guild="research") == 13
    duration = "raptorbus_handler_duration_seconds_count"
    assert sample(samples, duration, guild="research", handler="bad") == 28
    inf = sample(
        samples,
        "raptorbus_handler_duration_seconds_bucket",
        guild="research",
        handler="ok",
        le="+Inf",
    )
    assert inf == 6
    ws = "raptorbus_workspace_events_published_total"
    assert sample(samples, ws, workspace="ws-a") == 4


def test_queue_depth_and_oldest_age_rise_while_workers_are_stopped_and_fall_to_zero(
    redis_backend: RedisBackend, exporter: tuple[Bus, int]
) -> None:
    _, port = exporter
    calls = Recorder()
    with redis_backend.bus() as bus:
        bus.subscribe("signal.detected", calls.handler("ok"), guild="research")
        bus.emit_many([("signal.detected", SIGNAL)] * 5, workspace_id="ws-a")
        before = scrape(port)
        assert sample(before, "raptorbus_queue_depth", guild="research", queue="research") == 5
        first_age = sample(
            before, "raptorbus_queue_oldest_age_seconds", guild="research", queue="research"
        )
        assert first_age > 0
        wait_until(
            lambda: (
                sample(
                    scrape(port),
                    "raptorbus_queue_oldest_age_seconds",
                    guild="research",
                    queue="research",
                )
                > first_age
            ),
            timeout=10,
            what="the oldest message to age",
        )
        with redis_backend.running(bus, consumers=["research"]):
            redis_backend.settle(bus, lambda: calls.count("ok") == 5)
        after = scrape(port)
        for queue in ("research", "research.handlers"):
            assert sample(after, "raptorbus_queue_depth", guild="research", queue=queue) == 0
            age = sample(after, "raptorbus_queue_oldest_age_seconds", guild="research", queue=queue)
            assert age == 0


def commands_from(client: redis.Redis[bytes], bus: Bus, action: Any) -> list[str]:
    """Every top-level command ``bus`` sends to Redis while ``action`` runs, on
    its client's pooled connection or its publisher's own (``wire``), as
    MONITOR shows them (script-internal commands are the script's work)."""
    source = bus.redis
    connection = source.connection_pool.get_connection()
    own = {connection._sock.getsockname()[:2]}  # type: ignore[union-attr]
    source.connection_pool.release(connection)
    publisher = bus.redis_publisher
    assert publisher is not None
    wire = publisher.wire._conn
    if wire is not None and wire._sock is not None:
        own.add(wire._sock.getsockname()[:2])
    addresses = {(host, str(port)) for host, port in own}
    seen: list[dict[str, Any]] = []
    stop = "raptorbus-monitor-stop"
    ready = threading.Event()

    def watch() -> None:
        with client.monitor() as monitor:
            ready.set()
            for command in monitor.listen():
                if stop in command["command"]:
                    return
                seen.append(command)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    ready.wait(10)
    time.sleep(0.2)
    action()
    client.echo(stop)
    thread.join(10)
    return [
        c["command"].split()[0].upper()
        for c in seen
        if (c.get("client_address"), c.get("client_port")) in addresses
    ]


def test_counting_costs_emit_no_round_trip(redis_url: str) -> None:
    settings = Settings(broker_url=redis_url, metrics_per_workspace=True)
    with Bus(settings).connect() as bus:
        bus.declare_topology()
        bus.emit("signal.detected", SIGNAL, workspace_id="ws-a")
        watcher = redis.Redis.from_url(redis_url)
        try:
            sent = commands_from(
                watcher,
                bus,
                lambda: [
                    bus.emit("signal.detected", SIGNAL, workspace_id="ws-a") for _ in range(20)
                ],
            )
        finally:
            watcher.close()
    assert sent == ["EVALSHA"] * 20


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "raptorflow_bus.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def test_a_killed_guild_worker_shows_as_dead_and_its_backlog_as_stalled(
    redis_url: str, bus: Bus, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "RAPTORBUS_BROKER_URL": redis_url,
        "RAPTORBUS_RECLAIM_SECONDS": "2",
        "RAPTORBUS_HEALTH_EVENT_SECONDS": "0",
    }
    watcher = Bus(replace(bus.settings, reclaim_seconds=2)).connect()
    worker = spawn_worker(redis_url, tmp_path / "worker.log", **env)
    try:
        wait_until(
            lambda: watcher.health()["guilds"]["research"]["workers_alive"] == 1,
            timeout=60,
            what="the research worker's heartbeat",
        )
        alive = cli(env, "stats", "--json")
        assert alive.returncode == 0, alive.stderr
        assert json.loads(alive.stdout)["guilds"]["research"]["status"] == "ok"

        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=30)
        wait_until(
            lambda: watcher.health()["guilds"]["research"]["workers_alive"] == 0,
            timeout=30,
            what="the killed worker's heartbeat to lapse",
        )
        bus.emit("signal.detected", SIGNAL, workspace_id="ws-a")
        health = watcher.health()
        assert health["guilds"]["research"]["status"] == "stalled"
        assert health["status"] == "degraded"
        stalled = cli(env, "stats", "--json")
        assert stalled.returncode == 1
        assert json.loads(stalled.stdout)["guilds"]["research"]["status"] == "stalled"
        assert json.loads(stalled.stdout)["guilds"]["muse"]["status"] == "no_worker"
        shown = cli(env, "stats")
        assert "stalled" in shown.stdout and shown.returncode == 1
    finally:
        if worker.poll() is None:
            worker.kill()
        worker.wait(timeout=30)
        watcher.close()


def test_a_worker_reports_bus_health_which_the_council_hears(
    redis_url: str, bus: Bus, tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    with guild_worker(redis_url, log, "council", RAPTORBUS_HEALTH_EVENT_SECONDS="1"):
        wait_until(
            lambda: (
                bus.get_metrics()["handlers"]
                .get("council.watch_bus_health", {})
                .get("succeeded", 0)
                >= 2
            ),
            timeout=60,
            what="two bus.health reports handled by the council",
        )
        assert bus.get_metrics()["events"]["bus.health"]["published"] >= 2


def test_raptorbus_metrics_serves_the_same_numbers(redis_url: str, bus: Bus) -> None:
    bus.emit_many([("signal.detected", SIGNAL)] * 3, workspace_id="ws-a")
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "raptorflow_bus.cli", "metrics", "--port", str(port)],
        env={**os.environ, "RAPTORBUS_BROKER_URL": redis_url},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert server.stdout is not None
        assert "/metrics" in server.stdout.readline()
        samples = scrape(port)
        published = "raptorbus_events_published_total"
        assert sample(samples, published, event_type="signal.detected") == 3
        assert sample(samples, "raptorbus_queue_depth", guild="research", queue="research") == 3
        assert sample(samples, "raptorbus_workers_alive", guild="research") == 0
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
