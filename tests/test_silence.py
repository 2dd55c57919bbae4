"""A connection that goes silent (no FIN, no RST) is found by one read timeout,
and that timeout condemns the process's other connections, which went silent
with it: on plain TCP, on TLS and on Sentinel-managed connections alike."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import redis
from kombu import Connection

from raptorflow_bus.broker_address import BrokerAddress
from raptorflow_bus.silence import SilenceGuard
from tests.netproxy import SilentProxy
from tests.sentinel_topology import DataServer, make_tls, tls_binary

URLS = {
    "plain": "redis://127.0.0.1:6390/0",
    "tls": "rediss://127.0.0.1:6390/0?ssl_cert_reqs=required&ssl_ca_certs=/tmp/ca.crt",
    "sentinel": "sentinel://127.0.0.1:26379",
    "sentinel over tls": "sentinel://127.0.0.1:26379?ssl_cert_reqs=required&ssl_ca_certs=/tmp/ca",
}


@pytest.mark.parametrize("kind", sorted(URLS))
def test_every_kind_of_bus_connection_carries_the_guard(kind: str) -> None:
    master = "mymaster" if kind.startswith("sentinel") else None
    client = BrokerAddress.parse(URLS[kind], master, None).client(socket_timeout=1)
    try:
        assert issubclass(client.connection_pool.connection_class, SilenceGuard)
    finally:
        client.close()


def worker_connection_class(url: str) -> type[object]:
    with Connection(url, transport="raptorflow_bus.transport:Transport") as conn:
        params = conn.default_channel._connparams()
        return params["connection_class"]  # type: ignore[no-any-return]


@pytest.mark.broker
def test_a_worker_connection_carries_the_guard(redis_url: str) -> None:
    assert issubclass(worker_connection_class(redis_url), SilenceGuard)


@pytest.mark.broker
@pytest.mark.timeout(120)
def test_over_tls_one_timeout_condemns_the_other_silent_connections(tmp_path: Path) -> None:
    binary = tls_binary()
    if binary is None or shutil.which("openssl") is None:
        pytest.skip("needs a redis-server built with TLS (Debian's) and openssl")
    tls = make_tls(tmp_path / "tls", binary)
    server = DataServer(tmp_path / "redis", tls=tls)
    server.start()
    try:
        with SilentProxy(server.serving_port) as proxy:
            url = f"rediss://127.0.0.1:{proxy.port}/0?{tls.query()}"
            address = BrokerAddress.parse(url, None, None)
            first = address.client(socket_timeout=0.5, socket_connect_timeout=2)
            second = address.client(socket_timeout=0.5, socket_connect_timeout=2)
            assert first.set("k", "v") and second.get("k") == b"v"
            assert proxy.freeze() == 2
            with pytest.raises(redis.TimeoutError):
                first.get("k")
            # Without the guard this would wait out its own timeout and raise.
            assert second.get("k") == b"v"
            assert proxy.open_connections() == 1
            assert issubclass(worker_connection_class(url), SilenceGuard)
            first.close()
            second.close()
    finally:
        server.stop()
