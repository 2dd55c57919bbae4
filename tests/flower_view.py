"""Queue depths as Flower shows them: a real ``raptorbus flower`` process asked
over HTTP (with basic auth), or, in-process, Flower's own Redis reader
(``flower.utils.broker.Broker``) built the way Flower's views build it, from a
Celery app set up the way ``raptorbus flower`` sets it up."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from celery import Celery
from flower.utils.broker import Broker

from raptorflow_bus import Bus, Priority, Settings
from raptorflow_bus.embedded import free_port
from raptorflow_bus.envelope import routing_key_for
from raptorflow_bus.flower import configure
from raptorflow_bus.topology import PRIORITY_STEPS, priority_list
from tests.harness import wait_until
from tests.payloads import VALID

AUTH = ("admin", "flower-test-pw")


def get(url: str, auth: tuple[str, str] | None = AUTH) -> tuple[int, bytes]:
    """Status and body of a GET; status 0 when nothing listens."""
    request = urllib.request.Request(url)
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()
    except OSError:
        return 0, b""


def api_depths(base: str) -> dict[str, int]:
    """``GET /api/queues/length``: Flower's queue names and message counts."""
    code, body = get(f"{base}/api/queues/length")
    assert code == 200, f"/api/queues/length answered {code}: {body[:300]!r}"
    return {str(q["name"]): int(q["messages"]) for q in json.loads(body)["active_queues"]}


@contextmanager
def flower_process(env: Mapping[str, str], log: Path) -> Iterator[str]:
    """``raptorbus flower`` on a free port with ``env``; yields its base URL."""
    port = free_port()
    flower = subprocess.Popen(
        [sys.executable, "-m", "raptorflow_bus.cli", "flower", f"--port={port}"],
        env={**os.environ, **env, "FLOWER_BASIC_AUTH": ":".join(AUTH)},
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: get(base, None)[0] == 401 or flower.poll() is not None,
            timeout=60,
            what="Flower to listen",
        )
        assert flower.poll() is None, log.read_text()[-3000:]
        yield base
    finally:
        flower.send_signal(signal.SIGTERM)
        flower.wait(timeout=60)


def flower_broker(app: Celery) -> Any:
    """Flower's queue reader for ``app``, as Flower's ``BaseHandler.get_broker``
    builds it; raises ``NotImplementedError`` where Flower answers "broker is not
    supported"."""
    with app.connection() as conn:
        uri = conn.as_uri(include_password=True)
    return Broker(
        uri,
        http_api=None,
        broker_options=app.conf.broker_transport_options,
        broker_use_ssl=app.conf.broker_use_ssl,
    )


def flower_depths(settings: Settings, names: Iterable[str]) -> dict[str, int]:
    """What Flower's Broker page reads for ``names``, in this process: the app
    configured as ``raptorbus flower`` configures it, then Flower's reader."""
    with Bus(settings, outbox=False) as bus:
        broker = flower_broker(configure(bus).app)
        queues = asyncio.run(broker.queues(list(names)))
    return {str(q["name"]): int(q["messages"]) for q in queues}


#: Events that wait in queues nobody consumes, one priority list each at
#: least: heartbeat reaches the council only, a directive every guild (with no
#: target guild, so no handler emits more).
WAITING: tuple[tuple[str, dict[str, Any], Priority], ...] = (
    ("system.metrics", VALID["system.metrics"], Priority.CRITICAL),
    ("system.metrics", VALID["system.metrics"], Priority.HIGH),
    ("system.metrics", VALID["system.metrics"], Priority.LOW),
    ("council.directive", {"directive_id": "d-1", "issued_by": "council",
                           "directive": "hold", "target_guilds": []}, Priority.HIGH),
    ("council.directive", {"directive_id": "d-2", "issued_by": "council",
                           "directive": "hold", "target_guilds": []}, Priority.LOW),
    ("council.directive", {"directive_id": "d-3", "issued_by": "council",
                           "directive": "hold", "target_guilds": []}, Priority.LOW),
)  # fmt: skip


def emit_waiting(bus: Bus) -> dict[str, int]:
    """Emit ``WAITING`` (no worker running) and return the depth every queue
    of the topology must then have, computed from the routing table."""
    expected = dict.fromkeys(bus.topology.all_queue_names(), 0)
    for event_type, payload, priority in WAITING:
        bus.emit(event_type, payload, priority=priority)
        for consumer in bus.topology.consumers_for(routing_key_for(event_type)):
            expected[bus.topology.event_queue(consumer)] += 1
    return expected


def filled_priority_lists(bus: Bus, queue: str) -> list[int]:
    """The priority steps whose Redis list for ``queue`` holds messages."""
    return [step for step in PRIORITY_STEPS if bus.redis.llen(priority_list(queue, step))]
