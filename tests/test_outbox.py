"""The outbox: what is accepted while the broker is unreachable waits in a local
SQLite file, and reaches its queues in order once the broker is back. Real
SQLite, real processes (killed with SIGKILL), a real redis-server started late."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis

from raptorflow_bus import (
    BrokerUnavailable,
    Bus,
    ConfigurationError,
    Envelope,
    InvalidPayload,
    Settings,
    UnknownEventType,
)
from raptorflow_bus.breaker import Breaker
from raptorflow_bus.embedded import free_port, redis_server_binary
from raptorflow_bus.errors import Backpressure
from raptorflow_bus.outbox import Outbox, target_for
from raptorflow_bus.publisher import Prepared
from raptorflow_bus.testing import eager_bus
from raptorflow_bus.topology import priority_list
from tests.harness import wait_until

ROOT = Path(__file__).parent.parent
TARGET = "redis://127.0.0.1:1/0"


def alert(tag: str) -> dict[str, str]:
    return {"alert_id": tag, "severity": "info", "title": "t", "message": "m"}


def item(tag: str) -> Prepared:
    envelope = Envelope(
        type="alert.created", payload=alert(tag), correlation_id="c", request_id="c"
    )
    return envelope, envelope.to_json()


def tags(prepared: list[Prepared]) -> list[str]:
    return [str(envelope.payload["alert_id"]) for envelope, _ in prepared]


class Published:
    """A publish callable that records what it published. On cue, call number
    ``refuse_call`` publishes nothing and raises ``BrokerUnavailable``; call
    number ``crash_after_call`` publishes, then the drainer "dies" (the broker
    has the events, the outbox still has their rows); events in ``full`` meet
    a full queue."""

    def __init__(self, *, refuse_call: int = 0, crash_after_call: int = 0) -> None:
        self.tags: list[str] = []
        self.calls = 0
        self.refuse_call = refuse_call
        self.crash_after_call = crash_after_call
        self.full: set[str] = set()

    def __call__(self, prepared: list[Prepared]) -> None:
        self.calls += 1
        if self.calls == self.refuse_call:
            raise BrokerUnavailable("broker gone")
        if self.full & set(tags(prepared)):
            raise Backpressure("council", 10, 10)
        self.tags += tags(prepared)
        if self.calls == self.crash_after_call:
            raise KeyboardInterrupt


def run(script: str, *args: str, **kwargs: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        text=True,
        **kwargs,
    )


def records(path: Path) -> list[str]:
    """Complete lines only: a SIGKILL may cut the last one short."""
    text = path.read_text() if path.exists() else ""
    return [line for line in text.split("\n")[:-1] if line]


# the outbox alone ----------------------------------------------------------


def test_spooled_events_drain_in_order_and_leave_nothing(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path, TARGET)
    outbox.spool([item("a")])
    outbox.spool([item("b"), item("c"), item("d")])
    outbox.spool([item("e")])
    assert outbox.depth() == 5
    age = outbox.oldest_age_seconds()
    assert age is not None and age >= 0

    published = Published()
    assert outbox.drain(published, batch=2) == 5
    assert published.tags == ["a", "b", "c", "d", "e"]
    assert outbox.stats() == {"depth": 0, "oldest_age_seconds": None, "spooled": 5, "drained": 5}
    assert outbox.drain(published) == 0


def test_the_file_is_durable_sqlite_in_wal_mode_and_private(tmp_path: Path) -> None:
    import sqlite3
    import stat

    home = tmp_path / "home"
    Outbox(home, TARGET).spool([item("a")])
    with sqlite3.connect(home / "outbox.sqlite3") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    conn.close()
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    for path in home.glob("outbox.sqlite3*"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name


def test_a_failed_publish_stops_the_drain_and_keeps_the_rest_in_order(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path, TARGET)
    outbox.spool([item(str(n)) for n in range(10)])

    failing = Published(refuse_call=3)
    assert outbox.drain(failing, batch=2) == 4
    assert failing.tags == ["0", "1", "2", "3"]
    assert outbox.depth() == 6

    rest = Published()
    assert outbox.drain(rest, batch=2) == 6
    assert failing.tags + rest.tags == [str(n) for n in range(10)]


def test_a_crash_between_publish_and_delete_republishes_only_that_batch(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path, TARGET)
    outbox.spool([item(str(n)) for n in range(10)])

    crashing = Published(crash_after_call=3)
    with pytest.raises(KeyboardInterrupt):
        outbox.drain(crashing, batch=2)
    assert crashing.tags == [str(n) for n in range(6)]

    rest = Published()
    assert outbox.drain(rest, batch=2) == 6
    assert rest.tags == [str(n) for n in range(4, 10)]
    duplicates = set(crashing.tags) & set(rest.tags)
    assert duplicates == {"4", "5"}


DRAINER = """
import os, signal, sys, time
from pathlib import Path
from raptorflow_bus.outbox import Outbox

home, target, record, kill_on_call = Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
fd = os.open(record, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
calls = 0

def publish(prepared):
    global calls
    calls += 1
    os.write(fd, "".join(e.payload["alert_id"] + "\\n" for e, _ in prepared).encode())
    os.fsync(fd)
    if calls == kill_on_call:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.05 if kill_on_call == 0 else 0)

Outbox(home, target).drain(publish, batch=10)
"""


@pytest.mark.parametrize("killer", ["itself, after its 7th publish", "the test, mid-stream"])
def test_a_drainer_killed_with_sigkill_loses_nothing(tmp_path: Path, killer: str) -> None:
    outbox = Outbox(tmp_path, TARGET)
    sent = [str(n) for n in range(300)]
    outbox.spool([item(tag) for tag in sent])
    record = tmp_path / "published.txt"

    kill_on_call = "7" if killer.startswith("itself") else "0"
    child = run(DRAINER, str(tmp_path), TARGET, str(record), kill_on_call)
    if kill_on_call == "0":
        wait_until(lambda: len(records(record)) >= 100, what="the child to publish 100")
        child.send_signal(signal.SIGKILL)
    assert child.wait(timeout=60) == -signal.SIGKILL
    first = records(record)

    rest = Published()
    outbox.drain(rest, batch=10)
    assert outbox.depth() == 0
    assert list(dict.fromkeys(first + rest.tags)) == sent  # nothing lost, order kept
    republished = set(first) & set(rest.tags)
    assert len(republished) <= 10  # at most the batch in flight
    if kill_on_call == "7":
        assert republished == {str(n) for n in range(60, 70)}


WRITER = """
import sys
from pathlib import Path
from raptorflow_bus.envelope import Envelope
from raptorflow_bus.outbox import Outbox

home, target, tag, n = Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
outbox = Outbox(home, target)

def item(i):
    payload = {"alert_id": f"{tag}-{i}", "severity": "info", "title": "t", "message": "m"}
    envelope = Envelope(type="alert.created", payload=payload, correlation_id=tag, request_id=tag)
    return envelope, envelope.to_json()

i = 0
while i < n:
    size = 3 if i % 4 == 0 else 1
    outbox.spool([item(j) for j in range(i, min(n, i + size))])
    i += size
"""


def test_two_processes_spooling_while_a_third_drains_lose_nothing_and_keep_order(
    tmp_path: Path,
) -> None:
    n = 300
    writers = [run(WRITER, str(tmp_path), TARGET, tag, str(n)) for tag in ("p", "q")]
    outbox = Outbox(tmp_path, TARGET)
    published = Published()
    deadline = time.monotonic() + 90
    while any(w.poll() is None for w in writers) or outbox.depth():
        assert time.monotonic() < deadline, "writers and drain did not finish"
        outbox.drain(published, batch=25)
    assert [w.returncode for w in writers] == [0, 0]

    assert len(published.tags) == len(set(published.tags)) == 2 * n
    for tag in ("p", "q"):
        mine = [int(t.split("-")[1]) for t in published.tags if t.startswith(tag + "-")]
        assert mine == list(range(n))
    assert outbox.stats()["spooled"] == outbox.stats()["drained"] == 2 * n


HOLDER = """
import fcntl, sys
with open(sys.argv[1], "a+") as fh:
    fcntl.flock(fh, fcntl.LOCK_EX)
    print("held", flush=True)
    sys.stdin.readline()
"""


@contextmanager
def drain_lock_held(outbox: Outbox) -> Iterator[None]:
    """Another process holds the host's drain lock."""
    holder = run(HOLDER, str(outbox.lock_path), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert holder.stdout is not None and holder.stdin is not None
    try:
        assert holder.stdout.readline().strip() == "held"
        yield
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


def test_only_one_process_drains_at_a_time(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path, TARGET)
    outbox.spool([item("a"), item("b")])
    published = Published()
    with drain_lock_held(outbox):
        assert outbox.drain(published) == 0
        assert outbox.depth() == 2
    assert outbox.drain(published) == 2
    assert published.tags == ["a", "b"]


def test_a_full_queue_defers_its_event_without_blocking_or_losing_it(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path, TARGET)
    outbox.spool([item(str(n)) for n in range(5)])
    published = Published()
    published.full = {"1"}

    assert outbox.drain(published) == 4
    assert published.tags == ["0", "2", "3", "4"]
    assert outbox.depth() == 1

    published.full = set()
    assert outbox.drain(published) == 1
    assert published.tags[-1] == "1"
    assert outbox.stats()["drained"] == 5


def test_a_row_that_is_no_envelope_is_kept_and_does_not_block_the_rest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import sqlite3

    outbox = Outbox(tmp_path, TARGET)
    outbox.spool([item("a")])
    with sqlite3.connect(outbox.path) as conn:
        conn.execute(
            "INSERT INTO outbox (target, producer, event_id, event_type, body, spooled_at) "
            "VALUES (?, 'other', 'x', 'alert.created', '{\"from\": \"the future\"}', 0)",
            (TARGET,),
        )
    conn.close()
    outbox.spool([item("b")])

    published = Published()
    assert outbox.drain(published) == 2
    assert published.tags == ["a", "b"]
    assert outbox.depth() == 1
    assert any("is not an envelope" in r.getMessage() for r in caplog.records)


def test_each_broker_drains_only_its_own_rows(tmp_path: Path) -> None:
    Outbox(tmp_path, "redis://a:1/0").spool([item("for-a")])
    b = Outbox(tmp_path, "redis://b:1/0")
    b.spool([item("for-b")])
    published = Published()
    assert b.drain(published) == 1
    assert published.tags == ["for-b"]
    assert b.other_targets() == {"redis://a:1/0": 1}
    assert target_for("redis://user:secret@h:1/0") == "redis://user:***@h:1/0"
    assert target_for(None) == "embedded"


def test_the_breaker_backs_off_doubling_to_a_cap_and_resets_on_success() -> None:
    now = [100.0]
    breaker = Breaker("broker", first_seconds=0.5, cap_seconds=4.0, clock=lambda: now[0])
    assert breaker.allow() and not breaker.is_open
    assert [breaker.failure() for _ in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert breaker.is_open and not breaker.allow()
    now[0] += 3.9
    assert not breaker.allow() and breaker.remaining() == pytest.approx(0.1)
    now[0] += 0.1
    assert breaker.allow() and breaker.is_open
    breaker.success()
    assert breaker.allow() and not breaker.is_open
    assert breaker.failure() == 0.5


# the bus, with no broker ---------------------------------------------------


def closed_url() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"


@pytest.fixture
def offline_bus(tmp_path: Path) -> Iterator[Bus]:
    """A bus whose broker is a closed port, with the outbox on (the default)."""
    bus = Bus(Settings(broker_url=closed_url(), home=tmp_path)).connect()
    yield bus
    bus.close()


def test_a_bus_whose_broker_is_down_accepts_events_into_the_outbox(
    offline_bus: Bus, caplog: pytest.LogCaptureFixture
) -> None:
    sent = offline_bus.send("alert.created", alert("one"))
    assert sent.spooled and sent.envelope.type == "alert.created"
    envelope = offline_bus.emit("alert.created", alert("two"))
    batch = offline_bus.send_many(
        [("alert.created", alert("three")), ("alert.created", alert("4"))]
    )
    assert batch.spooled and len(batch.envelopes) == 2
    assert offline_bus.spooling

    assert offline_bus.outbox_stats()["depth"] == offline_bus.outbox_stats()["spooled"] == 4
    spooled = [r.getMessage() for r in caplog.records if "spooled event" in r.getMessage()]
    assert len(spooled) == 4 and f"event_id={envelope.id}" in spooled[1]
    with pytest.raises(BrokerUnavailable):
        offline_bus.redis.ping()


def test_bad_input_is_refused_and_never_spooled(offline_bus: Bus) -> None:
    with pytest.raises(UnknownEventType):
        offline_bus.emit("alert.creatd", alert("x"))
    with pytest.raises(InvalidPayload):
        offline_bus.emit("alert.created", {"alert_id": "x"})
    with pytest.raises(InvalidPayload):
        offline_bus.emit_many([("alert.created", alert("ok")), ("alert.created", {})])
    assert offline_bus.outbox is not None
    assert offline_bus.outbox.depth() == 0 and offline_bus.outbox_stats()["spooled"] == 0


@contextmanager
def silent_port() -> Iterator[str]:
    """A port whose kernel completes the TCP handshake and then nothing answers,
    like a network that went silent without closing anything."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield f"redis://127.0.0.1:{sock.getsockname()[1]}/0"


@pytest.mark.parametrize("port", ["closed", "silent"])
@pytest.mark.parametrize("how", ["Bus(outbox=False)", "RAPTORBUS_OUTBOX=off"])
def test_strict_mode_raises_within_a_second_and_never_spools(
    tmp_path: Path, how: str, port: str
) -> None:
    with contextlib.ExitStack() as stack:
        url = closed_url() if port == "closed" else stack.enter_context(silent_port())
        if how == "Bus(outbox=False)":
            bus = Bus(Settings(broker_url=url, home=tmp_path), outbox=False)
        else:
            env = {"RAPTORBUS_BROKER_URL": url, "RAPTORBUS_HOME": str(tmp_path)}
            bus = Bus(Settings.from_env({**env, "RAPTORBUS_OUTBOX": "off"}))
        stack.callback(bus.close)
        for attempt in (bus.connect, lambda: bus.emit("alert.created", alert("x"))):
            start = time.monotonic()
            with pytest.raises(BrokerUnavailable, match="cannot reach broker"):
                attempt()
            assert time.monotonic() - start < 1.0
        assert not bus.spooling
        assert bus.outbox is not None and bus.outbox.depth() == 0
        assert not bus.outbox.path.exists()


def test_the_outbox_switch_reads_on_and_off_only() -> None:
    assert Settings.from_env({}).outbox is True
    assert Settings.from_env({"RAPTORBUS_OUTBOX": "on"}).outbox is True
    assert Settings.from_env({"RAPTORBUS_OUTBOX": "0"}).outbox is False
    with pytest.raises(ConfigurationError, match="RAPTORBUS_OUTBOX"):
        Settings.from_env({"RAPTORBUS_OUTBOX": "maybe"})


def test_an_eager_bus_has_no_outbox() -> None:
    with eager_bus() as bus:
        sent = bus.send("alert.created", alert("x"))
        assert not sent.spooled and bus.outbox is None and not bus.spooling
        assert bus.get_metrics()["outbox"]["depth"] == 0


class Refuser:
    """A port that accepts TCP connections and closes them at once, counting them."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.05)
        self.url = f"redis://127.0.0.1:{self.sock.getsockname()[1]}/0"
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


def test_an_open_breaker_keeps_emits_off_the_broker(tmp_path: Path) -> None:
    refuser = Refuser()
    bus = Bus(Settings(broker_url=refuser.url, home=tmp_path)).connect()
    try:
        sent = [bus.send("alert.created", alert(str(n))) for n in range(100)]
        assert all(s.spooled for s in sent)
        # The connect, then only the relay's probes, spaced by the breaker's
        # doubling backoff (a loaded machine fits a few more into the run);
        # without the breaker each of the 100 emits would dial.
        assert 1 <= refuser.accepted <= 10
    finally:
        bus.close()
        refuser.close()


# the bus, with the broker coming back --------------------------------------


@contextmanager
def redis_server_on(port: int, workdir: Path) -> Iterator[str]:
    """A real redis-server started late on a port the bus already points at."""
    server = subprocess.Popen(
        [
            *(redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1"),
            *("--save", "", "--appendonly", "no", "--dir", str(workdir)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"

    def up() -> bool:
        try:
            return bool(redis.Redis.from_url(url, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    try:
        wait_until(up, timeout=15, what="redis-server to start")
        yield url
    finally:
        server.kill()
        server.wait(timeout=10)


def council_tags(client: redis.Redis[bytes]) -> list[str]:
    """Alert ids in the council queue, oldest first (Kombu pops from the tail)."""
    raw = client.lrange(priority_list("council", 6), 0, -1)
    return [json.loads(json.loads(m)["body"])["payload"]["alert_id"] for m in reversed(raw)]


@pytest.mark.broker
def test_the_relay_drains_in_order_once_the_broker_is_back(tmp_path: Path) -> None:
    port = free_port()
    bus = Bus(Settings(broker_url=f"redis://127.0.0.1:{port}/0", home=tmp_path)).connect()
    try:
        sent = [str(n) for n in range(50)]
        assert bus.send_many([("alert.created", alert(t)) for t in sent[:10]]).spooled
        assert all(bus.send("alert.created", alert(t)).spooled for t in sent[10:])
        with redis_server_on(port, tmp_path) as url:
            client = redis.Redis.from_url(url)
            wait_until(lambda: not bus.spooling, what="the relay to drain")
            assert bus.outbox is not None and bus.outbox.depth() == 0
            assert council_tags(client) == sent
            assert not bus.send("alert.created", alert("after")).spooled
            assert council_tags(client) == [*sent, "after"]
            metrics = bus.get_metrics()
            assert metrics["outbox"] == {
                "depth": 0,
                "oldest_age_seconds": None,
                "spooled": 50,
                "drained": 50,
            }
            assert metrics["totals"]["published"] == 51
    finally:
        bus.close()


@pytest.mark.broker
def test_new_events_wait_behind_this_bus_spooled_ones(tmp_path: Path) -> None:
    port = free_port()
    bus = Bus(Settings(broker_url=f"redis://127.0.0.1:{port}/0", home=tmp_path)).connect()
    assert bus.outbox is not None
    try:
        assert bus.send("alert.created", alert("A")).spooled
        assert bus.send("alert.created", alert("B")).spooled
        with redis_server_on(port, tmp_path) as url:
            with drain_lock_held(bus.outbox):
                # The relay reaches the broker but cannot drain: A and B still wait.
                wait_until(lambda: not bus.breaker.is_open, what="the relay to reconnect")
                assert bus.send("alert.created", alert("C")).spooled
                assert bus.outbox.depth() == 3
            wait_until(lambda: not bus.spooling, what="the relay to drain")
            bus.emit("alert.created", alert("D"))
            assert council_tags(redis.Redis.from_url(url)) == ["A", "B", "C", "D"]
    finally:
        bus.close()


@pytest.mark.broker
def test_a_bus_that_starts_drains_what_earlier_processes_left(
    redis_url: str, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    Outbox(tmp_path, target_for(redis_url)).spool([item("left-1"), item("left-2")])
    Outbox(tmp_path, "redis://elsewhere:1/0").spool([item("not-ours")])
    bus = Bus(Settings(broker_url=redis_url, home=tmp_path)).connect()
    try:
        assert bus.outbox is not None
        wait_until(lambda: bus.outbox is not None and bus.outbox.depth() == 0, what="drain")
        assert council_tags(client) == ["left-1", "left-2"]
        assert bus.outbox.other_targets() == {"redis://elsewhere:1/0": 1}
    finally:
        bus.close()


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "raptorflow_bus.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT,
    )


def test_the_cli_spools_an_emit_and_reports_the_outbox_without_a_broker(tmp_path: Path) -> None:
    env = {**os.environ, "RAPTORBUS_BROKER_URL": closed_url(), "RAPTORBUS_HOME": str(tmp_path)}
    emitted = cli(env, "emit", "alert.created", json.dumps(alert("x")))
    assert emitted.returncode == 0, emitted.stderr
    assert emitted.stdout.startswith("spooled alert.created") and "outbox" in emitted.stderr
    status = json.loads(cli(env, "outbox", "status", "--json").stdout)
    assert (status["depth"], status["spooled"], status["drained"]) == (1, 1, 0)
    assert status["oldest_age_seconds"] >= 0
    assert cli(env, "outbox", "drain").returncode == 3
    strict = cli({**env, "RAPTORBUS_OUTBOX": "off"}, "emit", "alert.created", "{}")
    assert strict.returncode == 2  # bad input is refused before the broker is tried
    strict = cli(
        {**env, "RAPTORBUS_OUTBOX": "off"}, "emit", "alert.created", json.dumps(alert("y"))
    )
    assert strict.returncode == 3
    assert json.loads(cli(env, "outbox", "status", "--json").stdout)["depth"] == 1


@pytest.mark.broker
def test_the_cli_drains_the_outbox_and_stats_show_it(redis_url: str, tmp_path: Path) -> None:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    env = {**os.environ, "RAPTORBUS_BROKER_URL": redis_url, "RAPTORBUS_HOME": str(tmp_path)}
    outbox = Outbox(tmp_path, target_for(redis_url))
    outbox.spool([item("1"), item("2"), item("3")])

    stats = json.loads(cli(env, "stats", "--json").stdout)
    assert stats["outbox"]["depth"] == 3 and stats["outbox"]["oldest_age_seconds"] >= 0
    table = cli(env, "stats")
    assert table.returncode == 0 and "outbox depth 3" in table.stdout

    drained = cli(env, "outbox", "drain")
    assert drained.returncode == 0, drained.stderr
    assert "drained 3 event(s); 0 left" in drained.stdout
    assert council_tags(client) == ["1", "2", "3"]
    assert json.loads(cli(env, "outbox", "drain", "--json").stdout) == {"drained": 0, "left": 0}


FORKER = """
import os, sys, time
from pathlib import Path
from raptorflow_bus import Bus, Settings

home, url = Path(sys.argv[1]), sys.argv[2]
bus = Bus(Settings(broker_url=url, home=home)).connect()
alert = {"alert_id": "a", "severity": "info", "title": "t", "message": "m"}
assert bus.send("alert.created", alert).spooled
with bus._relay._lock:  # as if the relay thread were mid-spool at the fork
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        sent = bus.send("alert.created", alert)
        os.write(write, f"{sent.spooled} {bus.outbox.producer}".encode())
        os._exit(0)
deadline = time.monotonic() + 30
while os.waitpid(pid, os.WNOHANG) == (0, 0):
    if time.monotonic() > deadline:
        os.kill(pid, 9)
        sys.exit("the forked child deadlocked")
    time.sleep(0.02)
os.close(write)
print(os.read(read, 500).decode(), bus.outbox.producer, bus.outbox.depth())
bus.close()
"""


def test_a_forked_child_spools_as_its_own_producer_even_if_the_lock_was_held(
    tmp_path: Path,
) -> None:
    forker = run(FORKER, str(tmp_path), closed_url(), stdout=subprocess.PIPE)
    out, _ = forker.communicate(timeout=90)
    assert forker.returncode == 0
    spooled, child, parent, depth = out.split()
    assert spooled == "True" and depth == "2"
    assert child != parent and child.split(":")[1] != parent.split(":")[1]
