"""examples/api.py served by uvicorn, driven with httpx, on a real Redis with a
real Celery worker (in a thread, tests/harness.py): a POST reaches the right
guilds with the request's correlation id, in the envelope, the handler's log
and the dead letter; the API starts and answers while Redis is down and
delivers what it spooled once Redis is up; a caller bound to a workspace sees,
replays and purges only that workspace's letters; an emit stuck on a silent
broker does not hold up other requests."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from examples.api import create_app
from raptorflow_bus import Bus, Envelope, Sent, Settings
from raptorflow_bus.embedded import free_port
from raptorflow_bus.logs import log
from tests.api_server import api_client, serving
from tests.harness import FAST_RETRIES, RedisBackend, wait_until
from tests.netproxy import SilentProxy
from tests.test_fastapi import TOKENS, auth
from tests.test_outbox import redis_server_on

pytestmark = [pytest.mark.broker, pytest.mark.timeout(180)]
COMPLIANCE = "guardian.check_campaign_compliance"


class Seen:
    """What recording handlers saw: (guild, envelope), from worker threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[tuple[str, Envelope]] = []

    def handler(self, guild: str) -> Callable[..., None]:
        def record(payload: Any, envelope: Envelope) -> None:
            with self.lock:
                self.calls.append((guild, envelope))
            log(logging.INFO, f"{guild} recorded {envelope.type}")

        return record

    def by(self, correlation_id: str) -> set[tuple[str, str]]:
        with self.lock:
            return {(g, e.type) for g, e in self.calls if e.correlation_id == correlation_id}

    def count(self) -> int:
        with self.lock:
            return len(self.calls)


def record_everywhere(bus: Bus, seen: Seen, *event_types: str) -> None:
    """One recording handler per guild, subscribed to each event type it hears."""
    handlers: dict[str, Callable[..., None]] = {}
    for event_type in event_types:
        for guild in bus.topology.consumers_for(f"raptorflow.events.{event_type}"):
            handler = handlers.setdefault(guild, seen.handler(guild))
            bus.subscribe(event_type, handler, guild, name=f"record_{guild}")


@pytest.fixture
def live(redis_backend: RedisBackend) -> Iterator[tuple[Bus, Seen]]:
    """A bus on the session's Redis with RaptorFlow's handlers and recorders,
    and a worker for every guild."""
    seen = Seen()
    with redis_backend.bus() as bus:
        bus.load_handlers()
        record_everywhere(bus, seen, "campaign.activated", "agent.task_started")
        with redis_backend.running(bus):
            yield bus, seen


def letters(client: httpx.Client, token: str, **params: Any) -> list[dict[str, Any]]:
    page = client.get("/bus/dlq", params=params, headers=auth(token))
    assert page.status_code == 200, page.text
    return list(page.json()["letters"])


def test_a_post_runs_the_handlers_of_the_right_guilds_with_its_correlation_id(
    live: tuple[Bus, Seen], redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    bus, seen = live
    with api_client(create_app(bus, TOKENS)) as client:
        failing = client.post(
            "/demo/compliance-failure", headers=auth("tok-a", **{"X-Correlation-Id": "corr-1"})
        )
        assert failing.status_code == 202, failing.text
        assert failing.json()["spooled"] is False
        run = client.post(
            "/agents/RES-001/runs",
            json={"task_type": "research"},
            headers=auth("tok-a", **{"X-Request-Id": "corr-2"}),
        )
        assert run.status_code == 202 and run.headers["x-correlation-id"] == "corr-2"
        wait_until(lambda: seen.count() == 4 and bus.dlq.count() == 1, what="handlers and DLQ")

        assert seen.by("corr-1") == {("guardian", "campaign.activated"),
                                     ("council", "campaign.activated")}  # fmt: skip
        assert seen.by("corr-2") == {("matrix", "agent.task_started"),
                                     ("council", "agent.task_started")}  # fmt: skip
        assert {e.workspace_id for _, e in seen.calls} == {"ws-a"}
        logged = [r.getMessage() for r in caplog.records]
        for guild in ("guardian", "council"):
            line = f"{guild} recorded campaign.activated workspace_id=ws-a correlation_id=corr-1"
            assert any(m.startswith(line) for m in logged), line
        assert any(
            m.startswith(f"{COMPLIANCE} failed (attempt 1 of 4)") and "correlation_id=corr-1" in m
            for m in logged
        )

        [summary] = letters(client, "tok-a")
        assert (summary["handler"], summary["correlation_id"]) == (COMPLIANCE, "corr-1")
        letter = client.get(f"/bus/dlq/{summary['id']}", headers=auth("tok-a")).json()
        assert letter["envelope"]["correlation_id"] == "corr-1"
        assert letter["exception_type"] == "ComplianceViolation"

        health = client.get("/bus/health", headers=auth("tok-a"))
        assert health.status_code == 200 and health.json()["status"] in ("healthy", "degraded")
        assert set(health.json()["guilds"]) == set(bus.topology.consumers)
        metrics = client.get("/bus/metrics", headers=auth("tok-a")).text
        assert 'raptorbus_events_published_total{event_type="campaign.activated"} 1.0' in metrics
    password = urlsplit(redis_url).password
    assert password and health.json()["broker"].count("***") == 1
    assert password not in health.text
    assert not [m for m in (r.getMessage() for r in caplog.records) if password in m]


def test_the_api_answers_while_redis_is_down_and_delivers_what_it_spooled(
    tmp_path: Path,
) -> None:
    port = free_port()
    seen = Seen()
    bus = Bus(
        Settings(broker_url=f"redis://127.0.0.1:{port}/0", home=tmp_path),
        celery_config=FAST_RETRIES,
    )
    record_everywhere(bus, seen, "agent.task_started")
    with api_client(create_app(bus, TOKENS)) as client:
        health = client.get("/bus/health", headers=auth("tok-a"))
        assert health.status_code == 200 and health.json()["status"] == "down"
        ids = [f"down-{n}" for n in range(3)]
        for correlation in ids:
            sent = client.post(
                "/agents/RES-001/runs",
                json={"task_type": "research"},
                headers=auth("tok-a", **{"X-Correlation-Id": correlation}),
            )
            assert sent.status_code == 202 and sent.json()["spooled"] is True
        assert client.get("/bus/health", headers=auth("tok-a")).json()["outbox"]["depth"] == 3

        with redis_server_on(port, tmp_path) as url:
            wait_until(lambda: not bus.spooling, what="the outbox to drain")
            with RedisBackend(url).running(bus):
                wait_until(lambda: seen.count() == 6, what="the spooled events' handlers")
                after = client.post(
                    "/agents/RES-001/runs",
                    json={"task_type": "research"},
                    headers=auth("tok-a", **{"X-Correlation-Id": "up-1"}),
                )
                assert after.status_code == 202 and after.json()["spooled"] is False
                wait_until(lambda: seen.count() == 8, what="the live event's handlers")
            health = client.get("/bus/health", headers=auth("tok-a")).json()
    for correlation in [*ids, "up-1"]:
        assert seen.by(correlation) == {("matrix", "agent.task_started"),
                                        ("council", "agent.task_started")}  # fmt: skip
    assert health["status"] != "down" and health["outbox"]["depth"] == 0


def test_a_caller_bound_to_a_workspace_sees_replays_and_purges_only_its_letters(
    live: tuple[Bus, Seen],
) -> None:
    bus, _ = live
    with api_client(create_app(bus, TOKENS)) as client:
        for token, correlation in (("tok-a", "a-1"), ("tok-a", "a-2"), ("tok-b", "b-1")):
            sent = client.post(
                "/demo/compliance-failure", headers=auth(token, **{"X-Correlation-Id": correlation})
            )
            assert sent.status_code == 202
        wait_until(lambda: bus.dlq.count() == 3, what="three dead letters")

        mine = letters(client, "tok-a")
        assert sorted(d["correlation_id"] for d in mine) == ["a-1", "a-2"]
        assert {d["workspace_id"] for d in mine} == {"ws-a"}
        [theirs] = letters(client, "tok-b")
        b_id = theirs["id"]
        assert len(letters(client, "tok-ops")) == 3
        walked, cursor = [], None
        while True:
            page = client.get("/bus/dlq", params={"limit": 1, **({"cursor": cursor} if cursor
                              else {})}, headers=auth("tok-ops")).json()  # fmt: skip
            walked += [d["id"] for d in page["letters"]]
            if (cursor := page["next_cursor"]) is None:
                break
        assert walked == [d["id"] for d in letters(client, "tok-ops")]

        for method, path in (
            ("get", f"/bus/dlq/{b_id}"),
            ("post", f"/bus/dlq/{b_id}/replay"),
            ("delete", f"/bus/dlq/{b_id}"),
        ):
            refused = client.request(method, path, headers=auth("tok-a"))
            assert refused.status_code == 404, (method, refused.text)
            assert refused.json()["error"] == "DeadLetterNotFound"
        forbidden = client.post("/bus/dlq/replay", json={"workspace_id": "ws-b"},
                                headers=auth("tok-a"))  # fmt: skip
        assert forbidden.status_code == 403
        assert client.get(f"/bus/dlq/{b_id}", headers=auth("tok-b")).status_code == 200

        replayed = client.post("/bus/dlq/replay", json={"all": True}, headers=auth("tok-a"))
        assert replayed.status_code == 202
        assert sorted(replayed.json()["replayed"]) == sorted(d["id"] for d in mine)
        wait_until(
            lambda: all(bus.dlq.get(d["id"]).replays == 1 for d in mine), what="replays to fail"
        )
        assert bus.dlq.get(b_id).replays == 0

        gone = client.delete(f"/bus/dlq/{mine[0]['id']}", headers=auth("tok-a"))
        assert gone.status_code == 200 and gone.json() == {"purged": 1}
        assert [d["id"] for d in letters(client, "tok-a")] == [mine[1]["id"]]
        assert [d["id"] for d in letters(client, "tok-b")] == [b_id]
        ops = client.post("/bus/dlq/replay", json={"workspace_id": "ws-b"},
                          headers=auth("tok-ops"))  # fmt: skip
        assert ops.json()["replayed"] == [b_id]


PROBE = "/loop-probe"


class Entered:
    """Wraps the app to tell the test when a request to ``path`` has reached it,
    and in which order the server started its responses."""

    def __init__(self, app: ASGIApp, path: str) -> None:
        self.app, self.path, self.event = app, path, threading.Event()
        self.answered: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] == self.path:
            self.event.set()
        if scope["path"] == PROBE:
            # Answered by the event loop itself, at once: it answers first
            # unless the loop is blocked (building /openapi.json instead could
            # take longer than the emit's timeout on a loaded machine).
            self.answered.append(PROBE)
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
            return

        async def noting(message: Any) -> None:
            if message["type"] == "http.response.start":
                self.answered.append(scope["path"])
            await send(message)

        await self.app(scope, receive, noting)


class SendingBus(Bus):
    """Tells the test when an emit is inside the bus (waiting on Redis)."""

    sending = threading.Event()

    def send(self, event_type: str, payload: Any = None, **options: Any) -> Sent:
        self.sending.set()
        return super().send(event_type, payload, **options)


def test_an_emit_stuck_on_a_silent_broker_does_not_block_other_requests(
    redis_url: str, tmp_path: Path
) -> None:
    parts = urlsplit(redis_url)
    assert parts.port is not None
    with SilentProxy(parts.port) as proxy:
        proxied = parts._replace(netloc=f":{parts.password}@127.0.0.1:{proxy.port}").geturl()
        bus = SendingBus(Settings(broker_url=proxied, home=tmp_path))
        path = "/events/signal.detected"
        app = Entered(create_app(bus, TOKENS), path)
        body = {"signal_id": "s-1", "source": "news", "topic": "ai", "strength": 0.5}
        with serving(app) as url, httpx.Client(base_url=url, timeout=30) as client:
            first = client.post(path, json=body, headers=auth("tok-a"))
            assert first.json()["spooled"] is False
            # The bus's pooled connection hangs, and so would a new one: the
            # emit can only wait out its read timeout, then spool.
            assert proxy.freeze(new_too=True) >= 1
            app.event.clear()
            app.answered.clear()
            bus.sending.clear()
            stuck: list[httpx.Response] = []
            emitter = threading.Thread(
                target=lambda: stuck.append(client.post(path, json=body, headers=auth("tok-a")))
            )
            emitter.start()
            # Inside the bus now: it waits out its 1.5 s read timeout in a
            # thread, or, were it synchronous, with the event loop blocked.
            assert app.event.wait(30)
            assert bus.sending.wait(30)
            other = client.get(PROBE)
            assert other.status_code == 200
            emitter.join(30)
    # The emit waited on the frozen connection until its read timeout, then
    # spooled; meanwhile the server answered the other request.
    assert stuck[0].status_code == 202 and stuck[0].json()["spooled"] is True
    assert app.answered == [PROBE, path]


def test_raptorbus_up_api_serves_the_example_beside_the_workers(
    bus: Bus, redis_url: str, tmp_path: Path
) -> None:
    """Subprocess workers this time: ``raptorbus up --api`` starts the five
    guild workers and the API; a compliance failure posted to the API ends in
    the dead-letter queue that the API lists, and Ctrl-C stops everything."""
    root = Path(__file__).parent.parent
    port = free_port()
    env = {
        **os.environ,
        "RAPTORBUS_BROKER_URL": redis_url,
        "RAPTORBUS_HOME": str(tmp_path),
        "RAPTORBUS_RETRY_BASE_SECONDS": "0.05",
        "RAPTORFLOW_API_TOKENS": "tok-a=ws-a",
    }
    log_path = tmp_path / "up.log"
    up = subprocess.Popen(
        [sys.executable, "-m", "raptorflow_bus.cli", "up", "--no-flower", "--pool=solo",
         "--api", f"--api-port={port}"],
        env=env, cwd=root, stdout=log_path.open("w"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:

            def answers() -> bool:
                try:
                    return client.get("/bus/health", headers=auth("tok-a")).status_code == 200
                except httpx.TransportError:
                    return False

            wait_until(answers, timeout=90, what="the API to answer")
            wait_until(
                lambda: len(bus.app.control.ping(timeout=0.5) or []) == 5,
                timeout=90,
                what="five guild workers",
            )
            sent = client.post(
                "/demo/compliance-failure", headers=auth("tok-a", **{"X-Correlation-Id": "up-api"})
            )
            assert sent.status_code == 202 and sent.json()["spooled"] is False
            wait_until(lambda: bool(letters(client, "tok-a")), timeout=90, what="a dead letter")
            [letter] = letters(client, "tok-a")
            assert (letter["handler"], letter["correlation_id"]) == (COMPLIANCE, "up-api")
            guilds = client.get("/bus/health", headers=auth("tok-a")).json()["guilds"]
            assert {g: v["workers_alive"] >= 1 for g, v in guilds.items()} == dict.fromkeys(
                bus.topology.consumers, True
            )
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(timeout=90)
    output = log_path.read_text()
    assert up.returncode == 0, output[-3000:]
    assert f"[up] API at http://127.0.0.1:{port}" in output
    assert redis_url not in output


def test_a_full_queue_answers_429_naming_it_with_retry_after(
    redis_backend: RedisBackend,
) -> None:
    from tests.test_broker import reshaped

    with redis_backend.bus(topology=reshaped(max_queue_length=1)) as bus:
        with api_client(create_app(bus, TOKENS)) as client:
            signal_body = {"signal_id": "s-1", "source": "news", "topic": "ai", "strength": 0.5}
            first = client.post("/events/signal.detected", json=signal_body, headers=auth("tok-a"))
            assert first.status_code == 202
            full = client.post("/events/signal.detected", json=signal_body, headers=auth("tok-a"))
        assert full.status_code == 429 and full.headers["retry-after"] == "1"
        assert full.json()["error"] == "Backpressure"
        assert "is full" in full.json()["detail"]
        assert bus.get_metrics()["totals"]["published"] == 1
