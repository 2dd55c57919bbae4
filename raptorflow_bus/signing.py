"""HMAC-SHA256 seals on envelopes, so a worker can tell an event the bus
emitted from one written by someone who merely holds Redis credentials.

The seal covers the envelope's canonical JSON without the seal itself, so it
survives every hop that carries the envelope unchanged (the fan-out, the
handler task's kwargs, the outbox, a dead letter and its replay) and breaks on
any change to payload, type, workspace or ids. Keys have ids: the first key
listed signs and every key listed verifies, so a rotation is "add the new key
first everywhere, then drop the old one once nothing signed with it waits"."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from raptorflow_bus.envelope import Envelope
from raptorflow_bus.errors import BusError, ConfigurationError

MIN_SECRET_BYTES = 16
SEPARATOR = ":"


class BadSignature(BusError):
    """A seal that does not match the envelope: tampered, or forged."""

    @property
    def kind(self) -> str:
        """What the DLQ records as the letter's exception type."""
        return type(self).__name__


class Unsigned(BadSignature):
    pass


class UnknownSigningKey(BadSignature):
    pass


def signed_text(envelope: Envelope) -> bytes:
    return envelope.model_dump_json(exclude={"signature"}).encode()


@dataclass(frozen=True)
class Signer:
    keys: tuple[tuple[str, bytes], ...]

    @classmethod
    def parse(cls, text: str) -> Signer | None:
        """``id1:secret1,id2:secret2``; the first signs. Empty means no signing."""
        keys: list[tuple[str, bytes]] = []
        for part in filter(None, (p.strip() for p in text.split(","))):
            key_id, sep, secret = part.partition(SEPARATOR)
            if not sep or not key_id or not secret:
                raise ConfigurationError(
                    "RAPTORBUS_SIGNING_KEYS must be 'id:secret[,id:secret...]'; "
                    f"an entry has no id or no secret (key id {key_id or '?'!r})"
                )
            if len(secret.encode()) < MIN_SECRET_BYTES:
                raise ConfigurationError(
                    f"signing key {key_id!r} is shorter than {MIN_SECRET_BYTES} bytes"
                )
            if any(known == key_id for known, _ in keys):
                raise ConfigurationError(f"signing key id {key_id!r} is listed twice")
            keys.append((key_id, secret.encode()))
        return cls(tuple(keys)) if keys else None

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(key_id for key_id, _ in self.keys)

    def seal(self, envelope: Envelope) -> Envelope:
        key_id, secret = self.keys[0]
        digest = hmac.new(secret, signed_text(envelope), hashlib.sha256).hexdigest()
        return envelope.model_copy(update={"signature": f"{key_id}{SEPARATOR}{digest}"})

    def verify(self, envelope: Envelope) -> None:
        """Raises ``BadSignature`` unless a listed key made this seal."""
        if not envelope.signature:
            raise Unsigned(f"event {envelope.id} is not signed")
        key_id, _, digest = envelope.signature.partition(SEPARATOR)
        secrets: Mapping[str, bytes] = dict(self.keys)
        secret = secrets.get(key_id)
        if secret is None:
            raise UnknownSigningKey(
                f"event {envelope.id} is signed with unknown key {key_id!r} "
                f"(known: {', '.join(self.key_ids)})"
            )
        expected = hmac.new(secret, signed_text(envelope), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, digest):
            raise BadSignature(
                f"event {envelope.id}'s signature does not match its content (tampered?)"
            )
