"""Handler declarations. ``HandlerGroup`` lets ``tasks/`` modules declare handlers
with a decorator and no bus at import time; a ``Bus`` turns each declaration
into one Celery task when the group is included."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from raptorflow_bus.envelope import Envelope
from raptorflow_bus.errors import HandlerError

HandlerFunc = Callable[..., Any]


def _wants_envelope(func: HandlerFunc) -> bool:
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError) as exc:
        raise HandlerError(f"cannot inspect handler {func!r}: {exc}") from exc
    if any(p.name == "envelope" for p in params):
        return True
    positional = [
        p
        for p in params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
    ]
    if not positional:
        raise HandlerError(f"handler {func.__qualname__} must accept the payload argument")
    return len(positional) >= 2 or positional[0].kind is inspect.Parameter.VAR_POSITIONAL


@dataclass
class HandlerSpec:
    """One handler in one consumer. ``task_name`` is what Flower shows."""

    name: str
    consumer: str
    func: HandlerFunc
    event_types: set[str] = field(default_factory=set)
    wants_envelope: bool = False

    @property
    def task_name(self) -> str:
        return f"{self.consumer}.{self.name}"

    def call(self, payload: Any, envelope: Envelope) -> Any:
        args = (payload, envelope) if self.wants_envelope else (payload,)
        if self.wants_envelope and "envelope" in inspect.signature(self.func).parameters:
            result = self.func(payload, envelope=envelope)
        else:
            result = self.func(*args)
        if inspect.isawaitable(result):
            return asyncio.run(_await(result))
        return result


async def _await(awaitable: Any) -> Any:
    return await awaitable


@dataclass(frozen=True)
class Subscription:
    event_type: str
    func: HandlerFunc
    guild: str
    name: str


class HandlerGroup:
    """The handlers of one guild, collected by decorator for ``Bus.include``."""

    def __init__(self, guild: str) -> None:
        self.guild = guild
        self.subscriptions: list[Subscription] = []

    def on(
        self, *event_types: str, name: str | None = None
    ) -> Callable[[HandlerFunc], HandlerFunc]:
        if not event_types:
            raise HandlerError("HandlerGroup.on needs at least one event type")

        def register(func: HandlerFunc) -> HandlerFunc:
            _wants_envelope(func)
            for event_type in event_types:
                self.subscriptions.append(
                    Subscription(event_type, func, self.guild, name or func.__name__)
                )
            return func

        return register


def make_spec(name: str, consumer: str, func: HandlerFunc) -> HandlerSpec:
    return HandlerSpec(
        name=name, consumer=consumer, func=func, wants_envelope=_wants_envelope(func)
    )
