"""A broker that asks who you are and proves who it is: an ACL user with a
password over TLS with certificate verification on (Debian's redis-server 7,
certificates made in the test). The bus, a real guild worker and the CLI all
get through; a client without credentials, or one that does not trust the
server's CA, does not; and the password shows up in no log line, no CLI output
and no health reading."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from raptorflow_bus import Bus, Settings
from raptorflow_bus.embedded import free_port
from raptorflow_bus.errors import BrokerUnavailable
from tests.harness import guild_worker, wait_until
from tests.payloads import VALID
from tests.sentinel_topology import Tls, make_tls, tls_binary

pytestmark = [pytest.mark.broker, pytest.mark.timeout(180)]
USER, PASSWORD = "raptor", "s3cret-Acl-pass-7f2c"


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[tuple[Tls, int]]:
    """redis-server on TLS only, the default user off, one ACL user."""
    binary = tls_binary()
    if binary is None or shutil.which("openssl") is None:
        pytest.skip("needs a redis-server built with TLS (Debian's) and openssl")
    tls = make_tls(tmp_path / "tls", binary)
    port = free_port()
    conf = tmp_path / "redis.conf"
    lines = [
        "port 0",
        f"tls-port {port}",
        "bind 127.0.0.1",
        f"dir {tmp_path}",
        "appendonly yes",
        "maxmemory-policy noeviction",
        f"logfile {tmp_path / 'redis.log'}",
        "user default off",
        f"user {USER} on >{PASSWORD} ~* &* +@all",
    ]
    args = tls.server_args()
    lines += [f"{args[i]} {args[i + 1]}" for i in range(0, len(args), 2)]
    conf.write_text("\n".join(lines) + "\n")
    server = subprocess.Popen([binary, str(conf)], stdout=subprocess.DEVNULL)
    probe = redis.Redis(
        host="127.0.0.1",
        port=port,
        username=USER,
        password=PASSWORD,
        ssl=True,
        ssl_ca_certs=str(tls.ca),
        socket_timeout=1,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if probe.ping():
                    break
            except redis.RedisError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.1)
        yield tls, port
    finally:
        probe.close()
        server.terminate()
        server.wait(timeout=30)


def test_an_acl_user_over_verified_tls_runs_the_whole_bus_and_never_shows_its_password(
    secured: tuple[Tls, int], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tls, port = secured
    url = f"rediss://{USER}:{PASSWORD}@127.0.0.1:{port}/0?{tls.query()}"
    env = {**os.environ, "RAPTORBUS_BROKER_URL": url, "RAPTORBUS_HOME": str(tmp_path)}
    log_path = tmp_path / "worker.log"
    with (
        Bus(Settings(broker_url=url, home=tmp_path), outbox=False) as bus,
        guild_worker(url, log_path, RAPTORBUS_HOME=str(tmp_path)),
    ):
        bus.emit("signal.detected", VALID["signal.detected"], workspace_id="ws-1")
        wait_until(
            lambda: (
                bus.get_metrics()["handlers"].get("research.score_signal", {}).get("succeeded", 0)
                == 1
            ),
            timeout=90,
            what="the research worker to handle the event over TLS",
        )
        health = bus.health()
    stats = subprocess.run(
        [sys.executable, "-m", "raptorflow_bus.cli", "stats", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert stats.returncode in (0, 1), stats.stderr
    shown = [
        log_path.read_text(),
        stats.stdout + stats.stderr,
        repr(health),
        *(record.getMessage() for record in caplog.records),
    ]
    assert all(PASSWORD not in text for text in shown)
    assert "using broker rediss://raptor:***@127.0.0.1" in "\n".join(shown)


def test_without_credentials_or_without_the_ca_the_broker_is_refused(
    secured: tuple[Tls, int], tmp_path: Path
) -> None:
    tls, port = secured
    anonymous = f"rediss://127.0.0.1:{port}/0?{tls.query()}"
    with pytest.raises(BrokerUnavailable) as refused:
        Bus(Settings(broker_url=anonymous, home=tmp_path), outbox=False).connect()
    assert "auth" in str(refused.value).lower() or "NOPERM" in str(refused.value)
    untrusted = f"rediss://{USER}:{PASSWORD}@127.0.0.1:{port}/0?ssl_cert_reqs=required"
    with pytest.raises(BrokerUnavailable) as unverified:
        Bus(Settings(broker_url=untrusted, home=tmp_path), outbox=False).connect()
    assert "certificate verify failed" in str(unverified.value)
    assert PASSWORD not in str(unverified.value)
