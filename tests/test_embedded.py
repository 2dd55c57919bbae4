"""The embedded broker: a real redis-server, shared by a user's processes,
stopped by the last one to leave."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from raptorflow_bus import Bus, Settings
from raptorflow_bus.embedded import EmbeddedRedis
from raptorflow_bus.topology import priority_list
from tests.payloads import VALID

pytestmark = pytest.mark.broker

HOLDER = """
import sys, time
from pathlib import Path
from raptorflow_bus.embedded import EmbeddedRedis
server = EmbeddedRedis(Path(sys.argv[1]))
print(server.acquire(), flush=True)
sys.stdin.readline()
server.release()
"""


def alive(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=1).ping())
    except redis.RedisError:
        return False


def test_processes_share_one_server_and_the_last_one_out_stops_it(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdin is not None
    url = holder.stdout.readline().strip()
    mine = EmbeddedRedis(tmp_path)
    assert mine.acquire() == url
    config = redis.Redis.from_url(url).config_get("*")
    assert (config["appendonly"], config["maxmemory-policy"]) == ("yes", "noeviction")
    assert config["bind"] == "127.0.0.1"
    mine.release()
    assert alive(url), "released while another process still used it"
    holder.stdin.write("\n")
    holder.stdin.flush()
    assert holder.wait(timeout=30) == 0
    assert not alive(url)
    assert not (tmp_path / "redis.url").exists()


def test_a_bus_with_no_broker_configured_starts_one_and_logs_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bus = Bus(Settings(broker_url=None, home=tmp_path)).connect()
    url = bus.broker_url
    assert url is not None and url.startswith("redis://:") and "@127.0.0.1:" in url
    bus.emit("alert.created", {"alert_id": "a", "severity": "info", "title": "t", "message": "m"})
    assert redis.Redis.from_url(url).llen(priority_list("council", 6)) == 1
    assert any("using embedded redis broker" in r.getMessage() for r in caplog.records)
    bus.close()
    assert not alive(url)


def test_a_configured_broker_that_is_down_is_a_clear_error_in_strict_mode(
    tmp_path: Path,
) -> None:
    from raptorflow_bus import BrokerUnavailable
    from raptorflow_bus.embedded import free_port

    url = f"redis://user:pw@127.0.0.1:{free_port()}/0"
    bus = Bus(Settings(broker_url=url, home=tmp_path), outbox=False)
    with pytest.raises(BrokerUnavailable, match=r"cannot reach broker redis://user:\*\*\*@"):
        bus.connect()


def test_the_embedded_server_wants_a_password_only_its_user_can_read(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "home")
    url = server.acquire()
    try:
        address = redis.Redis.from_url(url).connection_pool.connection_kwargs
        password = address["password"]
        assert password and len(password) >= 32
        stranger = redis.Redis(host="127.0.0.1", port=address["port"], socket_timeout=2)
        with pytest.raises(redis.AuthenticationError):
            stranger.get("anything")
        with pytest.raises(redis.AuthenticationError):
            stranger.lpush("research", "injected")
        for secret in ("redis.url", "redis.conf"):
            assert stat.S_IMODE((tmp_path / "home" / secret).stat().st_mode) == 0o600
        for private in ("home", "home/data"):
            assert stat.S_IMODE((tmp_path / private).stat().st_mode) == 0o700
        pid = int((tmp_path / "home" / "redis.pid").read_text())
        assert password not in Path(f"/proc/{pid}/cmdline").read_text()
        assert alive(url)
    finally:
        server.release()


def test_the_password_never_reaches_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for var in ("RAPTORBUS_BROKER_URL", "REDIS_URL", "UPSTASH_REDIS_URL"):
        monkeypatch.delenv(var, raising=False)
    with Bus(Settings(home=tmp_path)) as bus:
        bus.emit("system.metrics", VALID["system.metrics"])
        password = bus.redis.connection_pool.connection_kwargs["password"]
    assert password
    assert all(password not in record.getMessage() for record in caplog.records)
