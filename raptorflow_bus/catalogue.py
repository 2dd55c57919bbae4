"""Which event types exist and what their payloads must look like. The bus refuses
anything not in its catalogue: an event nobody declared is an event nobody routes."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from raptorflow_bus.errors import InvalidEventType, InvalidPayload, UnknownEventType

EVENT_TYPE_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")


@dataclass(frozen=True)
class EventSpec:
    """``model`` is None for an untyped event: its handlers receive the payload dict."""

    event_type: str
    model: type[BaseModel] | None
    workspace_scoped: bool = True


def check_event_type(event_type: object) -> str:
    if not isinstance(event_type, str) or not event_type:
        raise InvalidEventType(f"event type must be a non-empty string, got {event_type!r}")
    if "*" in event_type or "#" in event_type:
        raise InvalidEventType(
            f"event type {event_type!r} contains a routing wildcard ('*' or '#'); "
            "wildcards belong in bindings, not in emitted events"
        )
    if not EVENT_TYPE_RE.match(event_type):
        raise InvalidEventType(
            f"event type {event_type!r} is not a dotted lowercase name like 'signal.detected'"
        )
    return event_type


class Catalogue:
    def __init__(self, specs: dict[str, EventSpec] | None = None) -> None:
        self._specs: dict[str, EventSpec] = dict(specs or {})
        for event_type in self._specs:
            check_event_type(event_type)

    @classmethod
    def default(cls) -> Catalogue:
        from raptorflow_bus.events import EVENT_TYPES

        return cls(
            {name: EventSpec(name, model, scoped) for name, (model, scoped) in EVENT_TYPES.items()}
        )

    def register(
        self,
        event_type: str,
        model: type[BaseModel] | None = None,
        *,
        workspace_scoped: bool = True,
    ) -> EventSpec:
        check_event_type(event_type)
        existing = self._specs.get(event_type)
        spec = EventSpec(event_type, model, workspace_scoped)
        if existing is not None and existing != spec:
            raise InvalidEventType(f"event type {event_type!r} is already registered differently")
        self._specs[event_type] = spec
        return spec

    def __contains__(self, event_type: object) -> bool:
        return event_type in self._specs

    def __iter__(self) -> Any:
        return iter(sorted(self._specs))

    def __len__(self) -> int:
        return len(self._specs)

    def spec(self, event_type: str) -> EventSpec:
        # Every key was checked when it was registered, so a known type needs
        # no check again (a type that is not a str is never a key).
        found = self._specs.get(event_type) if isinstance(event_type, str) else None
        if found is not None:
            return found
        check_event_type(event_type)
        close = difflib.get_close_matches(event_type, list(self._specs), n=3, cutoff=0.6)
        raise UnknownEventType(event_type, close)

    def validate(self, event_type: str, data: Any) -> BaseModel | dict[str, Any]:
        """Return the payload as the handler will see it: a model instance, or a dict."""
        spec = self.spec(event_type)
        if spec.model is None:
            if not isinstance(data, dict):
                raise InvalidPayload(
                    f"payload of untyped event {event_type!r} must be a dict, "
                    f"got {type(data).__name__}"
                )
            return dict(data)
        if isinstance(data, BaseModel) and not isinstance(data, spec.model):
            raise InvalidPayload(
                f"event {event_type!r} takes {spec.model.__name__}, got {type(data).__name__}"
            )
        try:
            if isinstance(data, spec.model):
                return spec.model.model_validate(data.model_dump(mode="json"))
            return spec.model.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'payload'}: {err['msg']}"
                for err in exc.errors()
            )
            raise InvalidPayload(
                f"payload of {event_type!r} does not match {spec.model.__name__}: {problems}"
            ) from exc

    def to_wire(self, event_type: str, data: Any) -> dict[str, Any]:
        value = self.validate(event_type, data)
        if isinstance(value, BaseModel):
            return value.model_dump(mode="json", exclude_none=False)
        return value
