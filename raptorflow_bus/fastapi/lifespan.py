"""Connecting the bus when the app starts, and handing it to routes.

Fail open, as RaptorFlow's API always did: a broker that cannot be reached at
startup is a logged warning, not a dead API. The app starts, its emits go to
the local outbox, and the bus's relay delivers them once the broker answers.
Strict mode turns that into a failed startup, for deployments that would
rather not take events they cannot deliver now. A misconfiguration (a bad
broker URL) always stops the startup: waiting will not fix it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import FastAPI, Request

from raptorflow_bus.bus import Bus
from raptorflow_bus.default import get_bus
from raptorflow_bus.errors import BrokerUnavailable, ConfigurationError
from raptorflow_bus.logs import log
from raptorflow_bus.settings import Settings, mask_url

STATE_ATTR = "raptorbus"


def _broker(bus: Bus) -> str:
    url = bus.broker_url or bus.settings.broker_url
    return mask_url(url) if url else "the embedded redis"


@asynccontextmanager
async def connected_bus(
    app: FastAPI, bus: Bus | None = None, *, strict: bool | None = None
) -> AsyncIterator[Bus]:
    """Connect ``bus`` (or build one), put it on ``app.state``, close it after.

    ``strict`` defaults to the environment's ``RAPTORBUS_OUTBOX=off`` when no
    bus is given, else to False. Without a bus and not strict, the process-wide
    bus of ``get_bus()`` is used, so ``raptorflow_bus.emit`` in the app's code
    shares it; it is left open at shutdown for that reason. Strict without a
    bus builds one with the outbox off: startup fails while the broker is
    down, and so does each emit later (``BrokerUnavailable``, a 503). A given
    bus keeps its own mode for emits; ``strict=True`` then only makes the
    startup require the broker."""
    if strict is None:
        strict = bus is None and not Settings.from_env().outbox
    shared = bus is None and not strict
    if bus is None:
        if shared:
            bus = await get_bus()
        else:
            bus = Bus(Settings.from_env(), outbox=False)
            bus.load_handlers()
    try:
        await asyncio.to_thread(bus.connect)
        down = bus.spooling
    except BrokerUnavailable:
        if strict:
            await _close_unless(shared, bus)
            raise
        down = True
    if down and strict:
        await _close_unless(shared, bus)
        raise BrokerUnavailable(f"cannot reach broker {_broker(bus)} (strict mode)")
    if down:
        where = bus.outbox.path if bus.outbox is not None else "the outbox"
        log(
            logging.WARNING,
            f"broker {_broker(bus)} unreachable at startup; the API starts anyway and "
            f"its emits spool to {where} until the broker answers",
        )
    setattr(app.state, STATE_ATTR, bus)
    try:
        yield bus
    finally:
        delattr(app.state, STATE_ATTR)
        await _close_unless(shared, bus)


async def _close_unless(shared: bool, bus: Bus) -> None:
    if not shared:
        await asyncio.to_thread(bus.close)


def bus_lifespan(
    bus: Bus | None = None, *, strict: bool | None = None
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """``FastAPI(lifespan=bus_lifespan())``; see ``connected_bus`` for the modes.
    An app with a lifespan of its own enters ``connected_bus(app)`` in it."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with connected_bus(app, bus, strict=strict):
            yield

    return lifespan


def provide_bus(request: Request) -> Bus:
    """The dependency that gives a route the app's bus: ``Depends(provide_bus)``."""
    bus = getattr(request.app.state, STATE_ATTR, None)
    if not isinstance(bus, Bus):
        raise ConfigurationError(
            "this app has no bus: create it with FastAPI(lifespan=bus_lifespan()) "
            "or enter connected_bus(app) in its lifespan"
        )
    return bus
