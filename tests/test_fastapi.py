"""raptorflow_bus.fastapi through httpx against the app served by uvicorn (its
lifespan run as in production): bad requests are 4xx with the reason, on an eager bus and on a
real Redis; the request's ids reach the envelope; the app starts without a
broker and spools; strict mode refuses; write routes need auth."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

import raptorflow_bus.errors as errors_module
from examples.api import create_app, parse_tokens
from raptorflow_bus import Bus, BusError, ConfigurationError, Envelope, Settings
from raptorflow_bus.embedded import free_port
from raptorflow_bus.fastapi import (
    BusContextMiddleware,
    Principal,
    bus_lifespan,
    bus_router,
    status_for,
)
from raptorflow_bus.fastapi.errors import Forbidden, InvalidRequest
from raptorflow_bus.testing import eager_bus
from tests.api_server import api_client
from tests.payloads import VALID

TOKENS = {
    "tok-a": Principal(workspace="ws-a"),
    "tok-b": Principal(workspace="ws-b"),
    "tok-ops": Principal(workspace=None),
}
PASSWORD = "s3cret-pw"


def auth(token: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **headers}


def closed_url() -> str:
    """A broker URL with a password, on a port where nothing listens."""
    return f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"


@pytest.fixture
def client(backend: Any) -> Iterator[httpx.Client]:
    with backend.bus() as bus, api_client(create_app(bus, TOKENS)) as client:
        yield client


# (method, path, request options, status, error class, words in the detail)
BAD: list[tuple[str, str, dict[str, Any], int, str, str]] = [
    ("post", "/events/signal.detectd", {"json": VALID["signal.detected"]}, 404,
     "UnknownEventType", "did you mean 'signal.detected'"),
    ("post", "/events/signal.*", {"json": {}}, 400, "InvalidEventType", "wildcard"),
    ("post", "/events/Signal", {"json": {}}, 400, "InvalidEventType", "dotted lowercase"),
    ("post", "/events/signal.detected", {"json": {"signal_id": "s-1"}}, 422,
     "InvalidPayload", "strength"),
    ("post", "/events/signal.detected", {"json": [1, 2]}, 422, "InvalidPayload", "dictionary"),
    ("post", "/events/signal.detected", {"content": b"{nope"}, 400, "InvalidRequest", "not JSON"),
    ("post", "/events/signal.detected", {"json": VALID["signal.detected"],
     "params": {"priority": "urgent"}}, 422, "InvalidEnvelope", "priority 'urgent'"),
    ("post", "/events/move.executed", {"json": {"move_id": "m-1", "action": "post",
     "parameters": {"blob": "x" * 300_000}}}, 413, "PayloadTooLarge", "over the limit"),
    ("post", "/events/move.executed", {"content": b'{"a": "' + b"x" * 600_000 + b'"}'}, 413,
     "PayloadTooLarge", "over the limit"),
    ("post", "/events/signal.detected", {"json": VALID["signal.detected"], "headers":
     {"X-Correlation-Id": "two words"}}, 400, "InvalidRequest", "X-Correlation-Id"),
    ("get", "/bus/dlq", {"params": {"cursor": "zzz"}}, 400, "InvalidCursor", "zzz"),
    ("get", "/bus/dlq", {"params": {"limit": 0}}, 422, "RequestValidationError", "limit"),
    ("get", "/bus/dlq", {"params": {"guild": "nope"}}, 400, "UnknownConsumer", "nope"),
    ("get", "/bus/dlq/no-such-id", {}, 404, "DeadLetterNotFound", "no-such-id"),
    ("post", "/bus/dlq/no-such-id/replay", {}, 404, "DeadLetterNotFound", "no-such-id"),
    ("delete", "/bus/dlq/no-such-id", {}, 404, "DeadLetterNotFound", "no-such-id"),
    ("post", "/bus/dlq/replay", {"json": {}}, 400, "InvalidRequest", "a filter"),
    ("post", "/bus/dlq/replay", {"json": {"older_than_seconds": -1}}, 422,
     "RequestValidationError", "older_than_seconds"),
    ("post", "/bus/dlq/replay", {"json": {"colour": "red"}}, 422,
     "RequestValidationError", "colour"),
    ("post", "/campaigns/c-1/activate", {"json": {"channels": ["email"]}}, 422,
     "RequestValidationError", "name"),
    ("post", "/campaigns/bad id!/pause", {"json": {"reason": "r"}}, 422, "InvalidPayload",
     "campaign_id"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path", "options", "status", "error", "words"),
    BAD,
    ids=[f"{m} {p} {e}" for m, p, _, _, e, _ in BAD],
)
def test_a_bad_request_gets_a_4xx_naming_the_problem(
    client: httpx.Client,
    method: str,
    path: str,
    options: dict[str, Any],
    status: int,
    error: str,
    words: str,
) -> None:
    options = dict(options)  # the table is shared by both backends' runs
    headers = {**auth("tok-a"), **options.pop("headers", {})}
    response = client.request(method, path, headers=headers, **options)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error
    assert words in body["detail"]


def test_workspace_and_auth_refusals(client: httpx.Client) -> None:
    signal = VALID["signal.detected"]
    missing = client.post("/events/signal.detected", json=signal, headers=auth("tok-ops"))
    assert (missing.status_code, missing.json()["error"]) == (400, "MissingWorkspace")
    other = client.post(
        "/events/signal.detected", json=signal, headers=auth("tok-a", **{"X-Workspace-Id": "ws-b"})
    )
    assert (other.status_code, other.json()["error"]) == (403, "Forbidden")
    assert "bound to workspace 'ws-a'" in other.json()["detail"]
    listed = client.get("/bus/dlq", params={"workspace_id": "ws-b"}, headers=auth("tok-a"))
    assert (listed.status_code, listed.json()["error"]) == (403, "Forbidden")
    assert client.post("/events/signal.detected", json=signal).status_code == 401
    assert client.get("/bus/dlq", headers=auth("tok-forged")).status_code == 401
    ok = client.post("/events/signal.detected", json=signal, headers=auth("tok-a"))
    assert ok.status_code == 202 and ok.json()["workspace_id"] == "ws-a"


def test_every_bus_error_maps_to_a_json_answer_and_bad_input_to_a_4xx() -> None:
    classes = [
        c for _, c in inspect.getmembers(errors_module, inspect.isclass) if issubclass(c, BusError)
    ] + [InvalidRequest, Forbidden]
    special: dict[str, tuple[Any, ...]] = {
        "Backpressure": ("q", 1, 2),
        "UnknownEventType": ("x", []),
        "BatchInterrupted": (1, 0, 3, OSError("gone")),
    }
    for cls in classes:
        exc = cls(*special.get(cls.__name__, ("boom",)))
        status = status_for(exc)
        if issubclass(cls, (errors_module.BrokerUnavailable, errors_module.BatchInterrupted)):
            assert status == 503, cls
        elif cls is ConfigurationError:
            assert status == 500
        else:
            assert 400 <= status < 500, cls
    assert status_for(errors_module.Backpressure("q", 1, 1)) == 429


def test_write_routes_mount_only_with_an_auth_dependency() -> None:
    with pytest.raises(ConfigurationError, match="need auth="):
        bus_router(write=True)
    read_only = {(tuple(r.methods), r.path) for r in bus_router().routes}  # type: ignore[attr-defined]
    assert read_only == {
        (("GET",), "/bus/health"),
        (("GET",), "/bus/metrics"),
        (("GET",), "/bus/dlq"),
        (("GET",), "/bus/dlq/{letter_id}"),
    }
    full = {r.path for r in bus_router(auth=lambda: Principal()).routes}  # type: ignore[attr-defined]
    assert full - {p for _, p in read_only} == {
        "/events/{event_type}",
        "/bus/dlq/replay",
        "/bus/dlq/{letter_id}/replay",
    }


def test_the_request_ids_reach_the_envelope_and_the_response() -> None:
    seen: list[Envelope] = []

    def record(payload: Any, envelope: Envelope) -> None:
        seen.append(envelope)

    with eager_bus() as bus, api_client(create_app(bus, TOKENS)) as client:
        bus.subscribe("signal.detected", record, "research")
        given = client.post(
            "/events/signal.detected",
            json=VALID["signal.detected"],
            headers=auth("tok-ops", **{"X-Request-Id": "req-77", "X-Workspace-Id": "ws-9"}),
        )
        assert given.status_code == 202
        assert given.headers["x-correlation-id"] == "req-77"
        assert given.headers["x-workspace-id"] == "ws-9"
        assert given.json()["correlation_id"] == "req-77"
        generated = client.post(
            "/agents/RES-1/runs", json={"task_type": "research"}, headers=auth("tok-a")
        )
        echoed = generated.headers["x-correlation-id"]
        assert len(echoed) == 36 and generated.json()["correlation_id"] == echoed
        assert generated.json()["workspace_id"] == "ws-a"
    assert [(e.correlation_id, e.workspace_id) for e in seen] == [("req-77", "ws-9")]


def test_a_traceparent_header_joins_the_trace() -> None:
    trace = pytest.importorskip("opentelemetry.trace")
    app = FastAPI()
    app.add_middleware(BusContextMiddleware)

    @app.get("/trace")
    async def current() -> dict[str, str]:
        context = trace.get_current_span().get_span_context()
        return {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}

    trace_id, span_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    with api_client(app) as client:
        joined = client.get("/trace", headers={"traceparent": f"00-{trace_id}-{span_id}-01"})
        assert joined.json() == {"trace_id": trace_id, "span_id": span_id}
        assert client.get("/trace").json()["trace_id"] == "0" * 32


def test_the_app_starts_without_a_broker_answers_health_and_spools(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    bus = Bus(Settings(broker_url=closed_url(), home=tmp_path))
    with api_client(create_app(bus, TOKENS)) as client:
        warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any("unreachable at startup; the API starts anyway" in m for m in warned)
        health = client.get("/bus/health", headers=auth("tok-a"))
        assert health.status_code == 200
        assert health.json()["status"] == "down"
        assert health.json()["broker"].startswith("redis://:***@127.0.0.1:")
        sent = client.post("/events/signal.detected", json=VALID["signal.detected"],
                           headers=auth("tok-a"))  # fmt: skip
        assert sent.status_code == 202 and sent.json()["spooled"] is True
        assert client.get("/bus/health", headers=auth("tok-a")).json()["outbox"]["depth"] == 1
        metrics = client.get("/bus/metrics", headers=auth("tok-a"))
        assert "raptorbus_up 0.0" in metrics.text and "raptorbus_outbox_depth 1.0" in metrics.text
        assert PASSWORD not in health.text
    assert not [r for r in caplog.records if PASSWORD in r.getMessage()]


async def start(app: FastAPI) -> None:
    """What uvicorn does at startup: enter the app's lifespan."""
    async with app.router.lifespan_context(app):
        pass


def test_strict_mode_refuses_to_start_without_a_broker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAPTORBUS_BROKER_URL", closed_url())
    monkeypatch.setenv("RAPTORBUS_HOME", str(tmp_path))
    with pytest.raises(errors_module.BrokerUnavailable, match="cannot reach broker"):
        asyncio.run(start(create_app(None, TOKENS, strict=True)))
    monkeypatch.setenv("RAPTORBUS_OUTBOX", "off")
    with pytest.raises(errors_module.BrokerUnavailable):
        asyncio.run(start(FastAPI(lifespan=bus_lifespan())))


def test_a_strict_bus_answers_503_while_the_broker_is_down(tmp_path: Path) -> None:
    bus = Bus(Settings(broker_url=closed_url(), home=tmp_path), outbox=False)
    with api_client(create_app(bus, TOKENS)) as client:
        sent = client.post("/events/signal.detected", json=VALID["signal.detected"],
                           headers=auth("tok-a"))  # fmt: skip
        assert sent.status_code == 503 and sent.headers["retry-after"] == "5"
        assert sent.json()["error"] == "BrokerUnavailable"
        assert PASSWORD not in sent.text


def test_api_tokens_parse_to_principals() -> None:
    parsed = parse_tokens("a=ws-1, b=*")
    assert {k: p.workspace for k, p in parsed.items()} == {"a": "ws-1", "b": None}
    assert parsed["a"].name and "a" not in parsed["a"].name.split()  # named, not by the secret
    with pytest.raises(ConfigurationError):
        parse_tokens("no-workspace")


def test_health_masks_the_password_in_every_string_and_only_there() -> None:
    from raptorflow_bus.fastapi.router import _masked

    reading = {"status": "down", "error": "auth failed for e: e", "queues": [{"depth": 1}]}
    assert _masked(reading, "e") == {
        "status": "down",
        "error": "auth fail***d for ***: ***",
        "queues": [{"depth": 1}],
    }
