"""A real uvicorn server for an app, in a thread on a free loopback port, with
its lifespan run as in production: what the API tests talk to with httpx."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn

from raptorflow_bus.embedded import free_port
from tests.harness import wait_until


@contextmanager
def serving(app: Any) -> Iterator[str]:
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    try:
        wait_until(
            lambda: server.started or not thread.is_alive(), timeout=60, what="uvicorn to start"
        )
        assert server.started, "the app did not start (see the log)"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=60)


@contextmanager
def api_client(app: Any) -> Iterator[httpx.Client]:
    with serving(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield client
