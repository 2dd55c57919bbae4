"""What a person sees in Flower, checked in headless Chromium: each handler run
is its own task named <guild>.<handler>, the failure is visible, and nothing is
shown without credentials."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from raptorflow_bus import Bus, Settings
from raptorflow_bus.demo import EXPECTED_DEAD_LETTER, drive
from raptorflow_bus.embedded import free_port
from tests.harness import wait_until

pytestmark = pytest.mark.broker
ARTIFACTS = Path(__file__).parent.parent / "artifacts"
AUTH = ("admin", "flower-test-pw")
GUILDS = ("research", "muse", "matrix", "guardian", "council")


def chromium_binary() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path:
        return path
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed; .ci/run installs Debian's chromium package")
    pytest.skip("chromium is not installed (apt-get install chromium)")


def status(url: str, auth: tuple[str, str] | None = None) -> int:
    request = urllib.request.Request(url)
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def flower_tasks(base: str) -> dict[str, dict[str, object]]:
    request = urllib.request.Request(f"{base}/api/tasks")
    token = base64.b64encode(f"{AUTH[0]}:{AUTH[1]}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=5) as response:
        data: dict[str, dict[str, object]] = json.load(response)
        return data


def chromium(binary: str, url: str, tmp: Path, *extra: str) -> str:
    result = subprocess.run(
        [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp}",
            "--virtual-time-budget=8000",
            "--window-size=1400,900",
            *extra,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    return result.stdout


@pytest.fixture
def running_flower(redis_url: str, tmp_path: Path) -> Iterator[tuple[str, Bus]]:
    bus = Bus(Settings(broker_url=redis_url)).connect()
    bus.redis.flushdb()
    bus.declare_topology()
    port = free_port()
    env = {
        **os.environ,
        "RAPTORBUS_BROKER_URL": redis_url,
        "FLOWER_BASIC_AUTH": ":".join(AUTH),
        "RAPTORBUS_RETRY_BASE_SECONDS": "0.1",
    }
    log = tmp_path / "up.log"
    up = subprocess.Popen(
        [sys.executable, "-m", "raptorflow_bus.cli", "up", "--pool=solo", f"--flower-port={port}"],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: status(base) == 401, timeout=60, what="Flower to listen")
        wait_until(
            lambda: len(bus.app.control.ping(timeout=0.5) or []) == 5,
            timeout=90,
            what="five guild workers",
        )
        yield base, bus
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(timeout=90)
        bus.close()
    assert up.returncode == 0, log.read_text()[-3000:]


def test_flower_shows_each_guilds_handler_tasks_and_the_failure_after_login(
    running_flower: tuple[str, Bus], tmp_path: Path
) -> None:
    binary = chromium_binary()
    base, bus = running_flower
    drive(bus, "flower-test")
    wait_until(lambda: bus.dlq.count() == 1, timeout=60, what="the expected dead letter")

    def flower_saw_everything() -> bool:
        tasks = flower_tasks(base).values()
        names = {str(t["name"]) for t in tasks}
        failed = {str(t["name"]) for t in tasks if t["state"] == "FAILURE"}
        return failed == {EXPECTED_DEAD_LETTER} and all(
            any(n.startswith(f"{g}.") for n in names) for g in GUILDS
        )

    wait_until(flower_saw_everything, timeout=60, what="Flower to receive the task events")

    login = f"http://{AUTH[0]}:{AUTH[1]}@127.0.0.1:{base.rsplit(':', 1)[1]}/tasks"
    dom = chromium(binary, login, tmp_path / "profile", "--dump-dom")
    for guild in GUILDS:
        assert f">{guild}." in dom, f"no {guild} task on Flower's tasks page"
    assert EXPECTED_DEAD_LETTER in dom and "FAILURE" in dom
    assert f"{GUILDS[0]}@" in dom  # the worker column names the guild's worker

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "flower-tasks.png"
    shot.unlink(missing_ok=True)
    chromium(binary, login, tmp_path / "profile2", f"--screenshot={shot}")
    assert shot.exists() and shot.stat().st_size > 10_000


def test_flower_refuses_every_page_without_the_right_credentials(
    running_flower: tuple[str, Bus], tmp_path: Path
) -> None:
    binary = chromium_binary()
    base, bus = running_flower
    drive(bus, "flower-refusal")
    for path in ("/", "/tasks", "/workers", "/api/tasks", "/broker"):
        assert status(base + path) == 401
        assert status(base + path, ("admin", "wrong")) == 401
    assert status(base + "/tasks", AUTH) == 200
    dom = chromium(binary, base + "/tasks", tmp_path / "profile", "--dump-dom")
    assert "research." not in dom and "council." not in dom
