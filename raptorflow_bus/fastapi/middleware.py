"""Request context for everything a request emits: the workspace and the
correlation id from the caller's headers, so every envelope, log line and dead
letter of the request carries them without a route passing them along.

A plain ASGI middleware, not Starlette's ``BaseHTTPMiddleware``: the route runs
in the task that set the context variables, and a streamed response is not
buffered. ``asyncio.to_thread`` (which the bus's ``publish`` uses) copies them
into the emitting thread.

The ids end up in log lines of the form ``correlation_id=<id>``, so a header
value outside the payloads' id alphabet is refused (400) rather than let it
forge a field of the line."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from raptorflow_bus.context import bus_context
from raptorflow_bus.fastapi.errors import InvalidRequest, error_response

WORKSPACE_HEADER = "x-workspace-id"
CORRELATION_HEADERS = ("x-correlation-id", "x-request-id")
ECHO_HEADER = "x-correlation-id"
# The ``Id`` of raptorflow_bus.events: what a workspace or agent id may be.
ID_RE = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}$")
TRACE_HEADERS = ("traceparent", "tracestate")


def _checked(name: str, value: str | None) -> str | None:
    if not value:
        return None
    if not ID_RE.match(value):
        raise InvalidRequest(
            f"header {name} must be 1 to 128 characters of A-Z a-z 0-9 _ . : -, got {value!r}"
        )
    return value


@contextmanager
def joined_trace(headers: Headers) -> Iterator[None]:
    """Make the caller's W3C trace the current one while the request runs, so
    the emits' spans (the ``otel`` extra) join it. Left alone when OpenTelemetry
    is not installed, when the caller sent no ``traceparent``, or when a span is
    already current (an instrumented server made its own, which is better)."""
    carrier = {k: headers[k] for k in TRACE_HEADERS if k in headers}
    if "traceparent" not in carrier:
        yield
        return
    try:
        from opentelemetry import context, trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    except ImportError:
        yield
        return
    if trace.get_current_span().get_span_context().is_valid:
        yield
        return
    token = context.attach(TraceContextTextMapPropagator().extract(carrier))
    try:
        yield
    finally:
        context.detach(token)


class BusContextMiddleware:
    """``app.add_middleware(BusContextMiddleware)``.

    ``X-Workspace-Id`` sets the workspace; ``X-Correlation-Id`` (else
    ``X-Request-Id``) the correlation id, generated when absent. Both are
    echoed in the response (``X-Correlation-Id`` always), so a caller that sent
    none can still find its request in the logs and the dead-letter queue."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        try:
            workspace = _checked("X-Workspace-Id", headers.get(WORKSPACE_HEADER))
            given = next((headers[h] for h in CORRELATION_HEADERS if headers.get(h)), None)
            correlation = _checked("X-Correlation-Id", given) or str(uuid.uuid4())
        except InvalidRequest as exc:
            await error_response(exc)(scope, receive, send)
            return

        async def send_with_ids(message: Message) -> None:
            if message["type"] == "http.response.start":
                out = MutableHeaders(scope=message)
                out[ECHO_HEADER] = correlation
                if workspace is not None:
                    out[WORKSPACE_HEADER] = workspace
            await send(message)

        with bus_context(workspace_id=workspace, correlation_id=correlation), joined_trace(headers):
            await self.app(scope, receive, send_with_ids)
