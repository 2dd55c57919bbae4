"""Bus errors as HTTP answers: one JSON shape, ``{"error": <class>, "detail":
<message>}``, and a status that says whose fault it is. Bad input is a 4xx
naming the problem, never a 500: the bus already raises a precise ``BusError``
for each case, so the API only has to pick the status.

``BusRoute`` does it inside the router itself, so an app that mounts
``bus_router`` gets these answers without installing anything; the app's own
routes that call the bus get the same by ``install_error_handlers(app)``."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from raptorflow_bus.errors import (
    Backpressure,
    BatchInterrupted,
    BrokerUnavailable,
    BusError,
    ConfigurationError,
    DeadLetterNotFound,
    HandlerError,
    InvalidCursor,
    InvalidEnvelope,
    InvalidEventType,
    InvalidPayload,
    MissingWorkspace,
    PayloadTooLarge,
    UnknownConsumer,
    UnknownEventType,
    Unroutable,
)


class InvalidRequest(BusError, ValueError):
    """The HTTP request itself is malformed: a body that is not JSON, a header
    or query value the bus cannot carry."""


class Forbidden(BusError):
    """The caller's principal is bound to another workspace than the one asked for."""


# First match wins, so subclasses come before their bases.
STATUS: tuple[tuple[type[BusError], int], ...] = (
    (InvalidRequest, 400),
    (InvalidEventType, 400),
    (MissingWorkspace, 400),
    (InvalidCursor, 400),
    (UnknownConsumer, 400),
    (Forbidden, 403),
    (UnknownEventType, 404),
    (DeadLetterNotFound, 404),
    (HandlerError, 409),
    (PayloadTooLarge, 413),
    (InvalidPayload, 422),
    (InvalidEnvelope, 422),
    (Unroutable, 422),
    (Backpressure, 429),
    (BrokerUnavailable, 503),
    # Strict mode only: part of a split batch is published; the detail says which.
    (BatchInterrupted, 503),
    # The deployment is misconfigured: no request can fix that, so not a 4xx.
    (ConfigurationError, 500),
)
# Bus errors without a class of their own ("purge needs a filter", "this letter
# holds a malformed message") are refusals of what was asked.
DEFAULT_STATUS = 400
# Both pass once the queue drains or the broker is back; tell clients when to retry.
RETRY_AFTER_SECONDS = {429: "1", 503: "5"}


def status_for(exc: BusError) -> int:
    for kind, status in STATUS:
        if isinstance(exc, kind):
            return status
    return DEFAULT_STATUS


def error_response(exc: BusError) -> JSONResponse:
    status = status_for(exc)
    retry = RETRY_AFTER_SECONDS.get(status)
    return JSONResponse(
        {"error": type(exc).__name__, "detail": str(exc)},
        status_code=status,
        headers={"Retry-After": retry} if retry else None,
    )


def validation_response(exc: RequestValidationError) -> JSONResponse:
    """FastAPI's own 422 for a bad path, query or body value, in the bus's shape."""
    problems = "; ".join(
        f"{'.'.join(str(p) for p in err.get('loc', ())) or 'request'}: {err.get('msg', '')}"
        for err in exc.errors()
    )
    return JSONResponse({"error": "RequestValidationError", "detail": problems}, status_code=422)


class BusRoute(APIRoute):
    """An ``APIRoute`` whose handler answers bus errors itself (a router cannot
    install exception handlers on the app that includes it)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def route_handler(request: Request) -> Response:
            try:
                return await handle(request)
            except BusError as exc:
                return error_response(exc)
            except RequestValidationError as exc:
                return validation_response(exc)

        return route_handler


def install_error_handlers(app: FastAPI) -> None:
    """Answer every ``BusError`` raised by the app's own routes as the router does."""

    async def on_bus_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, BusError)
        return error_response(exc)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return validation_response(exc)

    app.add_exception_handler(BusError, on_bus_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
