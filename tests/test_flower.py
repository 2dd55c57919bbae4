"""What a person sees in Flower, checked in headless Chromium: each handler run
is its own task named <guild>.<handler>, the failure is visible, every guild's
event and handler queue is listed with its depth (all priority lists counted),
and nothing is shown without credentials."""

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
from html.parser import HTMLParser
from pathlib import Path

import pytest

from raptorflow_bus import Bus, Priority, Settings
from raptorflow_bus.demo import EXPECTED_DEAD_LETTER, drive
from raptorflow_bus.embedded import free_port
from raptorflow_bus.queues import UNACKED_KEY, queue_state
from tests.flower_view import (
    api_depths,
    emit_waiting,
    filled_priority_lists,
    flower_process,
    get,
)
from tests.harness import wait_until
from tests.payloads import VALID
from tests.sentinel_topology import DataServer, make_tls, tls_binary

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


class QueueTable(HTMLParser):
    """The rows of Flower's Broker page (``#queue-table``): cell texts per row."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self._in_table = self._in_cell = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table" and ("id", "queue-table") in attrs:
            self._in_table = True
        elif self._in_table and tag == "tr":
            self.rows.append([])
        elif self._in_table and tag == "td" and self.rows:
            self.rows[-1].append("")
            self._in_cell = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._in_table = False
        elif tag == "td":
            self._in_cell = False

    def handle_data(self, data: str) -> None:
        if self._in_cell:
            self.rows[-1][-1] += data.strip()


def broker_page_depths(dom: str) -> dict[str, int]:
    """Queue name -> the Messages column, as the page renders them."""
    table = QueueTable()
    table.feed(dom)
    return {row[0]: int(row[1].replace(",", "")) for row in table.rows if len(row) >= 2}


HELD = "guardian"
DIRECTIVE = {"issued_by": "council", "directive": "hold", "target_guilds": []}


def worker_node(bus: Bus, guild: str) -> str:
    replies = bus.app.control.ping(timeout=1.0) or []
    return next(node for reply in replies for node in reply if node.startswith(f"{guild}@"))


@pytest.mark.timeout(300)
def test_flower_shows_every_guilds_queue_depths_priorities_included(
    running_flower: tuple[str, Bus], tmp_path: Path
) -> None:
    """Given five guild workers and a Flower that has asked them for their
    queues, when Guardian's handler queue is held (its consumer cancelled: the
    event step still turns events into handler tasks) and then its worker is
    stopped (SIGSTOP: events wait in its event queue), then Flower's API and
    its Broker page list all ten queues with exactly the messages waiting, at
    every priority."""
    binary = chromium_binary()
    base, bus = running_flower
    bus.load_handlers()
    names = set(bus.topology.all_queue_names())
    event_queue, handler_queue = bus.topology.event_queue(HELD), bus.topology.handler_queue(HELD)

    # Flower lists the queues named by the workers it has inspected; this is
    # what the Workers page's refresh does.
    def flower_knows_every_queue() -> bool:
        return get(f"{base}/api/workers?refresh=1")[0] == 200 and set(api_depths(base)) == names

    wait_until(flower_knows_every_queue, timeout=60, what="Flower to list every guild's queues")

    node = worker_node(bus, HELD)
    # Flower offers "Cancel Consumer" on every listed queue; the event step's
    # queue is not Celery's to cancel, and the worker says so.
    refused = bus.app.control.cancel_consumer(
        event_queue, destination=[node], reply=True, timeout=5
    )
    assert refused and "error" in refused[0][node], refused
    cancelled = bus.app.control.cancel_consumer(
        handler_queue, destination=[node], reply=True, timeout=5
    )
    assert cancelled and "ok" in cancelled[0][node], cancelled
    dispatched = [Priority.CRITICAL, Priority.HIGH, Priority.HIGH, Priority.LOW]
    for n, priority in enumerate(dispatched):
        bus.emit(
            "council.directive",
            {**DIRECTIVE, "directive_id": f"held-{n}"},
            priority=priority,
            workspace_id="ws-flower",
        )
    tasks = len(dispatched) * len(bus.handlers_for(HELD, "council.directive"))
    assert tasks == len(dispatched)

    def depths() -> dict[str, int]:
        return {q: queue_state(bus, q).depth for q in names}

    # Idle but for the held tasks: nothing unacked the stopped worker could own.
    settled = {**dict.fromkeys(names, 0), handler_queue: tasks}
    wait_until(
        lambda: depths() == settled and bus.redis.hlen(UNACKED_KEY) == 0,
        timeout=60,
        what="the directives to be dispatched everywhere and held in guardian.handlers",
    )

    stats = bus.app.control.inspect(destination=[node], timeout=5).stats() or {}
    pid = int(stats[node]["pid"])
    os.kill(pid, signal.SIGSTOP)
    try:
        waiting = [Priority.HIGH, Priority.NORMAL, Priority.LOW, Priority.LOW, Priority.CRITICAL]
        for priority in waiting:
            bus.emit(
                "campaign.paused",
                VALID["campaign.paused"],
                priority=priority,
                workspace_id="ws-flower",
            )
        expected = {**settled, event_queue: len(waiting)}
        wait_until(lambda: depths() == expected, timeout=60, what="the council to drain")
        # Several priority lists hold messages: a count of one list would be short.
        assert filled_priority_lists(bus, event_queue) == [0, 3, 6, 9]
        assert filled_priority_lists(bus, handler_queue) == [0, 3, 9]

        # A refresh now gets no answer from the stopped worker; Flower keeps
        # the queues it named before.
        assert get(f"{base}/api/workers?refresh=1")[0] == 200
        assert api_depths(base) == expected

        page = f"http://{AUTH[0]}:{AUTH[1]}@127.0.0.1:{base.rsplit(':', 1)[1]}/broker"
        dom = chromium(binary, page, tmp_path / "profile", "--dump-dom")
        assert broker_page_depths(dom) == expected, dom[-3000:]

        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "flower-broker.png"
        shot.unlink(missing_ok=True)
        chromium(binary, page, tmp_path / "profile2", f"--screenshot={shot}")
        assert shot.exists() and shot.stat().st_size > 10_000
    finally:
        os.kill(pid, signal.SIGCONT)


def test_flower_shows_queue_depths_on_a_redis_over_tls(tmp_path: Path) -> None:
    """A rediss:// broker whose CA is given in the URL: Flower reads the depths
    through TLS, verifying the server as the workers do. No worker runs, so
    Flower lists every queue from the settings it was given (and Celery's
    default queue)."""
    binary = tls_binary()
    if binary is None or shutil.which("openssl") is None:
        pytest.skip("needs a redis-server built with TLS (Debian's) and openssl")
    tls = make_tls(tmp_path / "tls", binary)
    server = DataServer(tmp_path / "redis", tls=tls)
    server.start()
    try:
        url = f"rediss://127.0.0.1:{server.tls_port}/0?{tls.query()}"
        with Bus(Settings(broker_url=url, home=tmp_path), outbox=False) as bus:
            expected = emit_waiting(bus)
            assert len(filled_priority_lists(bus, "council")) == 3
        env = {"RAPTORBUS_BROKER_URL": url, "RAPTORBUS_HOME": str(tmp_path)}
        with flower_process(env, tmp_path / "flower.log") as base:
            assert api_depths(base) == {"celery": 0, **expected}
            page = get(f"{base}/broker")[1].decode()
            assert f"@127.0.0.1:{server.tls_port}/0</p>" in page and ">rediss://" in page
    finally:
        server.stop()
