"""Nothing blocks forever and nothing floods the log: the settings every Redis
connection of the bus is opened with, the reclaim and durability settings, and
the worker's one-line-per-outage reconnect log."""

from __future__ import annotations

import logging
import socket

import pytest
from kombu import Connection

from raptorflow_bus import Bus, ConfigurationError, Settings
from raptorflow_bus.logs import OncePerOutage


def test_reclaim_and_durability_settings_name_what_is_wrong() -> None:
    assert Settings.from_env({"RAPTORBUS_RECLAIM_SECONDS": "4"}).reclaim_seconds == 4.0
    assert Settings.from_env({}).appendfsync == "everysec"
    assert Settings.from_env({"RAPTORBUS_APPENDFSYNC": "always"}).appendfsync == "always"
    with pytest.raises(ConfigurationError, match="RAPTORBUS_RECLAIM_SECONDS"):
        Settings.from_env({"RAPTORBUS_RECLAIM_SECONDS": "soon"})
    with pytest.raises(ConfigurationError, match="RAPTORBUS_RECLAIM_SECONDS"):
        Settings.from_env({"RAPTORBUS_RECLAIM_SECONDS": "0"})
    with pytest.raises(ConfigurationError, match="RAPTORBUS_APPENDFSYNC"):
        Settings.from_env({"RAPTORBUS_APPENDFSYNC": "no"})


def record(name: str, msg: str) -> logging.LogRecord:
    return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, None, None)


def test_a_long_outage_logs_one_failed_reconnect_not_one_per_retry() -> None:
    only_once = OncePerOutage()
    retry = "consumer: Cannot connect to %s: %s.\nTrying again in %.2f seconds... (%s/%s)"
    outage = [record(OncePerOutage.RETRY_LOGGER, retry) for _ in range(20)]
    assert [only_once.filter(r) for r in outage] == [True] + [False] * 19
    assert only_once.filter(record(OncePerOutage.CONNECTED_LOGGER, "Connected to %s"))
    assert only_once.filter(record(OncePerOutage.RETRY_LOGGER, retry))
    lost = "consumer: Connection to broker lost. Trying to re-establish the connection..."
    assert only_once.filter(record(OncePerOutage.RETRY_LOGGER, lost))


@pytest.mark.broker
def test_the_emit_path_times_out_and_keeps_alive(bus: Bus) -> None:
    kwargs = bus.redis.connection_pool.connection_kwargs
    assert kwargs["socket_connect_timeout"] + kwargs["socket_timeout"] <= 2.0
    assert kwargs["socket_keepalive"] is True
    assert kwargs["socket_keepalive_options"][socket.TCP_KEEPIDLE] <= 10
    assert bus.redis.get_retry().get_retries() == 1


@pytest.mark.broker
def test_worker_connections_time_out_keep_alive_and_check_blocking_pops(bus: Bus) -> None:
    with Connection(
        bus.broker_url,
        transport="raptorflow_bus.transport:Transport",
        transport_options=bus.app.conf.broker_transport_options,
    ) as conn:
        channel = conn.default_channel
        params = channel._connparams()
        assert params["socket_timeout"] and params["socket_connect_timeout"]
        assert params["socket_keepalive"] is True
        # Kombu drops a BRPOP whose reply is this late: the 15 s promise.
        assert channel.brpop_timeout + 2 * channel.health_check_interval <= 15
        assert channel.brpop_timeout < params["socket_timeout"]
