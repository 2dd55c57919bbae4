"""The bus over HTTP: emit, health, metrics and the dead-letter queue.

Write routes (emit, replay, delete) mount only with an ``auth`` dependency the
app supplies; there is no default, because a bus API open to anyone on the
network can flood guilds and replay or destroy other workspaces' failures.
Asking for them without one raises ``ConfigurationError`` when the app is
built. With ``auth``, every route uses it, and a principal bound to a
workspace emits into it and sees, replays and deletes only its letters (a
letter of another workspace is "not found", so its existence does not leak).

Every call to the bus runs in a worker thread: each one may wait on Redis, and
the event loop must keep serving other requests meanwhile."""

# No ``from __future__ import annotations``: FastAPI reads these signatures'
# annotations at runtime, and the dependencies are local to ``bus_router``.

import asyncio
import json
import weakref
from collections.abc import Callable
from datetime import timedelta
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Query, Request, Response
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from raptorflow_bus.bus import Bus
from raptorflow_bus.context import workspace_id_var
from raptorflow_bus.deadletter import DeadLetter
from raptorflow_bus.dlq import LetterFilter
from raptorflow_bus.errors import ConfigurationError, PayloadTooLarge
from raptorflow_bus.fastapi.console import console_router
from raptorflow_bus.fastapi.console_auth import Login
from raptorflow_bus.fastapi.emit import send
from raptorflow_bus.fastapi.errors import BusRoute, InvalidRequest
from raptorflow_bus.fastapi.lifespan import provide_bus
from raptorflow_bus.fastapi.models import (
    Accepted,
    ErrorBody,
    LetterPage,
    LetterSummary,
    Principal,
    Purged,
    Replayed,
    ReplayFilter,
)
from raptorflow_bus.fastapi.scope import letter_for, scoped_workspace
from raptorflow_bus.prometheus import registry_for
from raptorflow_bus.settings import mask_url

MAX_PAGE = 500
# A body may carry whitespace the envelope will not; the bus checks the exact
# envelope size after, this only stops reading an absurd body into memory.
BODY_SLACK = 2
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody} for status in (400, 403, 404, 409, 413, 422, 429, 503)
}
_registries: "weakref.WeakKeyDictionary[Bus, CollectorRegistry]" = weakref.WeakKeyDictionary()


async def json_body(request: Request, limit: int) -> Any:
    """The request's JSON, read no further than ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body is {declared} bytes, over the limit of {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"request body is over the limit of {limit} bytes")
    if not body.strip():
        return None
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRequest(f"request body is not JSON: {exc}") from None


def masked_health(bus: Bus) -> dict[str, Any]:
    """``bus.health()`` with the broker named and its password masked, there and
    in any string of the reading that might repeat it (an error message)."""
    reading = bus.health()
    url = bus.broker_url or bus.settings.broker_url
    reading["broker"] = mask_url(url) if url else None
    password = urlsplit(url.split(";")[0]).password if url else None
    return _masked(reading, password) if password else reading


def _masked(value: Any, password: str) -> Any:
    if isinstance(value, str):
        return value.replace(password, "***")
    if isinstance(value, dict):
        return {k: _masked(v, password) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_masked(v, password) for v in value]
    return value


def metrics_body(bus: Bus, accept: str) -> tuple[bytes, str]:
    registry = _registries.get(bus)
    if registry is None:
        registry = _registries[bus] = registry_for(bus)
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type


def _anonymous() -> Principal:
    return Principal(workspace=None)


def bus_router(
    bus_dependency: Callable[..., Any] = provide_bus,
    *,
    auth: Callable[..., Any] | None = None,
    write: bool | None = None,
    console: Login | None = None,
) -> APIRouter:
    """The routes, to ``app.include_router``. ``bus_dependency`` gives the bus
    (default: the one ``bus_lifespan`` connected); ``auth`` is a dependency
    returning a ``Principal`` (raise ``HTTPException(401)`` in it to refuse a
    caller); ``write`` defaults to whether ``auth`` is given. ``console``, a
    function from a token to a ``Principal`` (or None), adds the DLQ console
    under ``/bus/console``; like the write routes it needs ``auth``."""
    write = auth is not None if write is None else write
    if write and auth is None:
        raise ConfigurationError(
            "the write routes (POST /events, DLQ replay and delete) need "
            "auth=<a dependency returning Principal>; without one mount bus_router(write=False)"
        )
    if console is not None and auth is None:
        raise ConfigurationError(
            "the DLQ console replays, edits and purges letters: it mounts only with "
            "auth=<a dependency returning Principal>, beside console=<token -> Principal>"
        )

    async def principal_of(principal: Annotated[Any, Depends(auth or _anonymous)]) -> Principal:
        if not isinstance(principal, Principal):
            raise ConfigurationError(
                f"the auth dependency must return a Principal, got {type(principal).__name__}"
            )
        return principal

    BusDep = Annotated[Bus, Depends(bus_dependency)]
    Caller = Annotated[Principal, Depends(principal_of)]
    router = APIRouter(route_class=BusRoute, responses=ERRORS)
    if console is not None:
        # Its routes as they are (prefixed already): an included router would
        # be one opaque entry in ``router.routes``.
        router.routes.extend(console_router(bus_dependency, login=console).routes)

    @router.get("/bus/health", tags=["bus"])
    async def health(bus: BusDep, caller: Caller) -> dict[str, Any]:
        """Broker reachable (``status`` ``down`` if not: this still answers 200,
        since the API keeps accepting events into the outbox), live workers,
        depth and oldest age per guild and queue, DLQ depth, the local outbox."""
        return await asyncio.to_thread(masked_health, bus)

    @router.get("/bus/metrics", tags=["bus"], response_class=Response)
    async def metrics(request: Request, bus: BusDep, caller: Caller) -> Response:
        """Prometheus's exposition: the collector of ``raptorflow_bus.prometheus``,
        scraped in a thread (it reads Redis)."""
        accept = request.headers.get("accept", "")
        body, content_type = await asyncio.to_thread(metrics_body, bus, accept)
        return Response(body, media_type=content_type)

    @router.get("/bus/dlq", tags=["dlq"])
    async def list_letters(
        bus: BusDep,
        caller: Caller,
        workspace_id: str | None = None,
        event_type: str | None = None,
        handler: str | None = None,
        guild: str | None = None,
        older_than_seconds: Annotated[float | None, Query(ge=0)] = None,
        cursor: str | None = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    ) -> LetterPage:
        """Oldest first; ``next_cursor`` continues the walk."""
        where = LetterFilter(
            workspace_id=scoped_workspace(caller, workspace_id),
            event_type=event_type,
            handler=handler,
            guild=guild,
            older_than=None
            if older_than_seconds is None
            else timedelta(seconds=older_than_seconds),
        )
        if guild is not None:
            bus.topology.consumer(guild)
        page = await asyncio.to_thread(bus.dlq.page, where, cursor=cursor, limit=limit)
        return LetterPage(
            letters=[LetterSummary.of(d) for d in page.letters], next_cursor=page.next_cursor
        )

    @router.get("/bus/dlq/{letter_id}", tags=["dlq"])
    async def get_letter(letter_id: str, bus: BusDep, caller: Caller) -> DeadLetter:
        """The whole letter: envelope, error, traceback, attempts."""
        return await asyncio.to_thread(letter_for, bus, caller, letter_id)

    if not write:
        return router

    @router.post("/events/{event_type}", status_code=202, tags=["events"])
    async def post_event(
        event_type: str,
        request: Request,
        bus: BusDep,
        caller: Caller,
        priority: str = "normal",
        source_agent_id: str | None = None,
    ) -> Accepted:
        """The body is the event's payload. The workspace is the caller's, or
        ``X-Workspace-Id``; the correlation id the request's (middleware)."""
        payload = await json_body(request, BODY_SLACK * bus.settings.max_payload_bytes)
        workspace = scoped_workspace(caller, workspace_id_var.get())
        sent = await send(
            bus,
            event_type,
            payload,
            workspace_id=workspace,
            priority=priority,
            source_agent_id=source_agent_id,
        )
        envelope = sent.envelope
        return Accepted(
            id=envelope.id,
            event_type=envelope.type,
            correlation_id=envelope.correlation_id,
            workspace_id=envelope.workspace_id,
            spooled=sent.spooled,
        )

    @router.post("/bus/dlq/replay", status_code=202, tags=["dlq"])
    async def replay_matching(where: ReplayFilter, bus: BusDep, caller: Caller) -> Replayed:
        """Replay every letter the filter matches, each once."""
        narrowed = where.model_copy(update={"all": False}) != ReplayFilter()
        if not narrowed and not where.all:
            raise InvalidRequest('bulk replay needs a filter or "all": true')
        letters = where.letter_filter(scoped_workspace(caller, where.workspace_id))
        return Replayed(replayed=await asyncio.to_thread(bus.dlq.replay_matching, letters))

    @router.post("/bus/dlq/{letter_id}/replay", status_code=202, tags=["dlq"])
    async def replay_letter(letter_id: str, bus: BusDep, caller: Caller) -> Replayed:
        """Run the failed handler again with the same envelope and fresh retries;
        the letter leaves the queue when it succeeds."""

        def replay() -> str:
            letter_for(bus, caller, letter_id)
            return bus.dlq.replay(letter_id)

        return Replayed(replayed=[await asyncio.to_thread(replay)])

    @router.delete("/bus/dlq/{letter_id}", tags=["dlq"])
    async def delete_letter(letter_id: str, bus: BusDep, caller: Caller) -> Purged:
        def purge() -> int:
            letter_for(bus, caller, letter_id)
            return bus.dlq.purge([letter_id])

        return Purged(purged=await asyncio.to_thread(purge))

    return router


__all__ = ["bus_router", "letter_for", "scoped_workspace"]
