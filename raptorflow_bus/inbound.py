"""What the event step takes from an event queue: an envelope the bus itself
would have emitted, whoever published it.

The bus's own copies are JSON objects. A stock Kombu producer that publishes
an envelope into the exchange (``Producer.publish(envelope_json,
exchange=..., routing_key=...)``) sends text: ``text/plain`` by default, or a
JSON string when it names the json serializer; both are parsed here. Then the
envelope is checked as ``Bus.prepare`` checks an emit (known type, strict
payload model, a workspace for workspace-scoped types) and, when it came
through the exchange, that its routing key is its type's, since the routing
key decided which guilds got it. Whatever fails is rejected with its reason,
for the step to quarantine: no handler task is ever made from it.

The event hop pops raw messages in Kombu's Redis format (``decode`` undoes
that format as Kombu's consumer would, accepting JSON and text only)."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kombu.serialization import loads as kombu_loads
from pydantic import ValidationError

from raptorflow_bus.envelope import Envelope
from raptorflow_bus.errors import BusError
from raptorflow_bus.signing import BadSignature

if TYPE_CHECKING:
    from raptorflow_bus.bus import Bus


class Rejected(Exception):
    def __init__(self, reason: str, error_type: str, envelope: Envelope | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error_type = error_type
        self.envelope = envelope


ACCEPT = frozenset(["application/json", "text/plain"])
_BUS_FORMAT = ("application/json", "utf-8")


@dataclass(frozen=True)
class Delivery:
    """One event message as popped: ``body`` is what the size check and a
    quarantine see (Kombu's ``message.body``), ``delivery_info`` where it was
    published to."""

    body: str | bytes
    content_type: str
    content_encoding: str
    delivery_info: Mapping[str, Any]

    def decoded(self) -> Any:
        """The body decoded as Kombu's consumer decodes it with ``accept`` json and
        text; raises ``Rejected`` for any other content type (a pickle above all)."""
        if (self.content_type, self.content_encoding) == _BUS_FORMAT:
            try:
                return json.loads(self.body)
            except ValueError as exc:
                raise Rejected(f"body is not JSON: {exc}", "NotJSON") from exc
        try:
            return kombu_loads(self.body, self.content_type, self.content_encoding, accept=ACCEPT)
        except Exception as exc:
            reason = f"cannot decode {self.content_type!r} body: {exc}"
            raise Rejected(reason, type(exc).__name__) from exc


def delivery(message: Mapping[str, Any]) -> Delivery:
    """A message in Kombu's Redis format (already parsed: the pop script moved
    what is not JSON aside), its body base64-decoded if Kombu had encoded it."""
    properties = message.get("properties") or {}
    body = message.get("body") or ""
    if properties.get("body_encoding") == "base64":
        body = base64.b64decode(body)
    return Delivery(
        body,
        str(message.get("content-type") or ""),
        str(message.get("content-encoding") or ""),
        properties.get("delivery_info") or {},
    )


def parse_body(body: Any) -> Any:
    """The decoded message body, with envelope text parsed into its object."""
    if isinstance(body, bytes):
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise Rejected(f"body is not UTF-8 text: {exc}", "NotJSON") from exc
    if isinstance(body, str):
        try:
            return json.loads(body)
        except ValueError as exc:
            raise Rejected(f"body is not JSON: {exc}", "NotJSON") from exc
    return body


def accept(bus: Bus, data: Any, delivery_info: Mapping[str, Any] | None) -> Envelope:
    """The envelope in ``data`` (a parsed body), or ``Rejected`` saying why not."""
    try:
        envelope = Envelope.model_validate(data)
    except (ValidationError, TypeError, ValueError) as exc:
        raise Rejected(str(exc), type(exc).__name__) from exc
    try:
        bus.verify(envelope)
    except BadSignature as exc:
        raise Rejected(str(exc), exc.kind, envelope) from exc
    if envelope.type not in bus.catalogue:
        raise Rejected(f"unknown event type {envelope.type!r}", "UnknownEventType", envelope)
    try:
        bus.catalogue.validate(envelope.type, envelope.payload)
    except BusError as exc:
        raise Rejected(str(exc), type(exc).__name__, envelope) from exc
    if bus.catalogue.spec(envelope.type).workspace_scoped and not envelope.workspace_id:
        reason = f"event {envelope.type!r} is workspace-scoped and has no workspace_id"
        raise Rejected(reason, "MissingWorkspace", envelope)
    info = delivery_info or {}
    routing_key = info.get("routing_key")
    if info.get("exchange") == bus.topology.exchange and routing_key != envelope.routing_key:
        reason = (
            f"published with routing key {routing_key!r}, but {envelope.type!r} events "
            f"route as {envelope.routing_key!r}"
        )
        raise Rejected(reason, "RoutingKeyMismatch", envelope)
    return envelope
