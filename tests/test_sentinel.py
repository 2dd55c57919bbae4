"""The bus on Redis Sentinel, without a failover (tests/faults/test_failover.py
has those): Sentinels with a password of their own, TLS, the emit path, Celery's
transport, the CLI and Flower's queue depths on the master they name."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from raptorflow_bus import BrokerUnavailable, Bus, Settings
from raptorflow_bus.health import stalled_guilds
from raptorflow_bus.topology import priority_list
from tests.flower_view import api_depths, emit_waiting, flower_depths, flower_process
from tests.payloads import VALID
from tests.sentinel_topology import SentinelTopology, make_tls, tls_binary

pytestmark = pytest.mark.broker

PASSWORD = "sentinel-s3cret"


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelTopology]:
    home = tmp_path_factory.mktemp("sentinel")
    with SentinelTopology(home, password=PASSWORD) as topology:
        yield topology


def test_a_bus_reaches_the_master_through_sentinels_that_want_a_password(
    topology: SentinelTopology, tmp_path: Path
) -> None:
    settings = Settings(
        broker_url=topology.url,
        sentinel_master=topology.master_name,
        sentinel_password=PASSWORD,
        home=tmp_path,
    )
    with Bus(settings, outbox=False) as bus:
        with topology.master.client() as master:
            before = master.llen(priority_list("council", 6))
        bus.emit("system.metrics", VALID["system.metrics"])
        # The async publish's own connection finds the master through the Sentinels too.
        asyncio.run(bus.publish("system.metrics", VALID["system.metrics"]))
        assert bus.current_master() == topology.master.address
        with topology.master.client() as master:
            assert master.llen(priority_list("council", 6)) == before + 2


def test_without_the_sentinel_password_the_bus_says_the_broker_is_unreachable(
    topology: SentinelTopology, tmp_path: Path
) -> None:
    settings = Settings(
        broker_url=topology.url, sentinel_master=topology.master_name, home=tmp_path
    )
    with pytest.raises(BrokerUnavailable, match="cannot reach broker"):
        Bus(settings, outbox=False).connect()


def test_stats_names_the_current_master(topology: SentinelTopology, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "RAPTORBUS_BROKER_URL": topology.url,
        "RAPTORBUS_SENTINEL_MASTER": topology.master_name,
        "RAPTORBUS_SENTINEL_PASSWORD": PASSWORD,
        "RAPTORBUS_HOME": str(tmp_path),
    }
    stats = subprocess.run(
        [sys.executable, "-m", "raptorflow_bus.cli", "stats", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    data = json.loads(stats.stdout)
    assert stats.returncode == (1 if stalled_guilds(data) else 0), stats.stderr
    assert data["master"] == topology.master.address
    table = subprocess.run(
        [sys.executable, "-m", "raptorflow_bus.cli", "stats"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    # The title wraps on a narrow terminal.
    assert f"master {topology.master.address}" in " ".join(table.stdout.split())


def test_flower_shows_queue_depths_through_the_sentinels(
    topology: SentinelTopology, tmp_path: Path
) -> None:
    """``raptorbus flower`` on a sentinel:// URL: Flower asks the Sentinels (with
    their password) for the master and counts every priority list there. No
    worker runs, so it lists the queues of its settings (and Celery's default)."""
    settings = Settings(
        broker_url=topology.url,
        sentinel_master=topology.master_name,
        sentinel_password=PASSWORD,
        home=tmp_path,
    )
    with Bus(settings, outbox=False) as bus:
        bus.redis.flushdb()
        bus.declare_topology()
        expected = emit_waiting(bus)
    env = {
        "RAPTORBUS_BROKER_URL": topology.url,
        "RAPTORBUS_SENTINEL_MASTER": topology.master_name,
        "RAPTORBUS_SENTINEL_PASSWORD": PASSWORD,
        "RAPTORBUS_HOME": str(tmp_path),
    }
    with flower_process(env, tmp_path / "flower.log") as base:
        assert api_depths(base) == {"celery": 0, **expected}


def test_over_tls_the_bus_and_celerys_transport_reach_the_master(tmp_path: Path) -> None:
    binary = tls_binary()
    if binary is None or shutil.which("openssl") is None:
        pytest.skip("needs a redis-server built with TLS (Debian's) and openssl")
    tls = make_tls(tmp_path / "tls", binary)
    with SentinelTopology(tmp_path / "sentinel", tls=tls) as topology:
        assert "ssl_ca_certs" in topology.url
        settings = Settings(
            broker_url=topology.url, sentinel_master=topology.master_name, home=tmp_path
        )
        # Connecting declares the topology through Celery's connection, on TLS too.
        with Bus(settings, outbox=False) as bus:
            bus.emit("system.metrics", VALID["system.metrics"])
            asyncio.run(bus.publish("system.metrics", VALID["system.metrics"]))
            assert bus.current_master() == topology.master.address
            assert topology.master.serving_port != topology.master.port
            with topology.master.client() as master:
                assert master.llen(priority_list("council", 6)) == 2
                assert master.exists("_kombu.binding.raptorflow.events")
            # Flower's reader, given what `raptorbus flower` gives it: Sentinels
            # and master over TLS.
            assert flower_depths(settings, ["council", "research"]) == {
                "council": 2,
                "research": 0,
            }
