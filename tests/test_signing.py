"""Signed envelopes: with keys configured, a worker runs only events the bus
sealed. An unsigned, tampered or unknown-key envelope is quarantined with its
reason, whoever wrote it (into an event queue or straight into a handler
queue), and no handler runs on it. Keys rotate: the first signs, all verify."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from celery import Celery
from kombu import Connection, Exchange, Producer

from raptorflow_bus import Bus, Settings
from raptorflow_bus.dispatch import handler_task_id
from raptorflow_bus.envelope import Envelope
from raptorflow_bus.errors import ConfigurationError
from raptorflow_bus.kombu_messages import wake_key
from raptorflow_bus.signing import BadSignature, Signer
from raptorflow_bus.testing import eager_bus
from raptorflow_bus.topology import priority_list
from tests.harness import guild_worker, wait_until
from tests.payloads import VALID

OLD = "k1:old-secret-0123456789abcdef"
NEW = "k2:new-secret-fedcba9876543210"
SIGNAL = VALID["signal.detected"]


def envelope(**changes: object) -> Envelope:
    fields: dict[str, object] = {
        "type": "signal.detected",
        "payload": SIGNAL,
        "workspace_id": "ws-1",
        "correlation_id": "c-1",
        "request_id": "c-1",
    }
    return Envelope.model_validate({**fields, **changes})


def kind(signer: Signer, sealed: Envelope) -> str:
    with pytest.raises(BadSignature) as refused:
        signer.verify(sealed)
    return refused.value.kind


def test_a_seal_breaks_on_any_change_and_names_why() -> None:
    signer = Signer.parse(NEW)
    assert signer is not None
    sealed = signer.seal(envelope())
    signer.verify(sealed)
    assert sealed.signature is not None and sealed.signature.startswith("k2:")
    assert signer.verify(Envelope.from_json(sealed.to_json())) is None
    payload = {**SIGNAL, "strength": 0.1}
    assert kind(signer, sealed.model_copy(update={"payload": payload})) == "BadSignature"
    assert kind(signer, sealed.model_copy(update={"workspace_id": "ws-2"})) == "BadSignature"
    assert kind(signer, sealed.model_copy(update={"signature": None})) == "Unsigned"
    forged = sealed.model_copy(update={"signature": "k9:" + "0" * 64})
    assert kind(signer, forged) == "UnknownSigningKey"


def test_keys_rotate_the_first_signs_and_every_listed_key_verifies() -> None:
    old, rotating, new = Signer.parse(OLD), Signer.parse(f"{NEW},{OLD}"), Signer.parse(NEW)
    assert old is not None and rotating is not None and new is not None
    from_old, from_rotating = old.seal(envelope()), rotating.seal(envelope())
    assert from_rotating.signature is not None and from_rotating.signature.startswith("k2:")
    rotating.verify(from_old)
    new.verify(from_rotating)
    assert kind(old, from_rotating) == "UnknownSigningKey"


@pytest.mark.parametrize(
    ("keys", "words"),
    [
        ("k1", "no id or no secret"),
        (":secret-0123456789abcdef", "no id or no secret"),
        ("k1:short", "shorter than 16 bytes"),
        (f"{OLD},{OLD}", "listed twice"),
    ],
)
def test_bad_keys_are_refused_at_start_naming_the_problem(keys: str, words: str) -> None:
    with pytest.raises(ConfigurationError, match=words):
        Settings.from_env({"RAPTORBUS_SIGNING_KEYS": keys})


def test_the_secret_is_not_in_the_settings_repr() -> None:
    settings = Settings.from_env({"RAPTORBUS_SIGNING_KEYS": NEW})
    assert "new-secret" not in repr(settings)


def test_in_eager_mode_a_forged_handler_task_is_dead_lettered_and_not_run() -> None:
    ran: list[str] = []

    def record(payload: object, envelope: Envelope) -> None:
        ran.append(envelope.id)

    with eager_bus(settings=Settings(broker_url=None, signing_keys=NEW)) as bus:
        bus.subscribe("signal.detected", record, guild="research")
        sealed = bus.emit("signal.detected", SIGNAL, workspace_id="ws-1")
        assert ran == [sealed.id] and sealed.signature
        forged = envelope()
        task = "research.record"
        bus.app.tasks[task].apply_async(
            kwargs={"envelope": forged.model_dump(mode="json")},
            task_id=handler_task_id(forged.id, task),
        )
        assert ran == [sealed.id]
        [letter] = bus.dlq.list()
        assert (letter.exception_type, letter.envelope.id) == ("Unsigned", forged.id)


@pytest.fixture
def signed_worker(redis_url: str, bus: Bus, tmp_path: Path) -> Iterator[dict[str, str]]:
    env = {
        "RAPTORBUS_BROKER_URL": redis_url,
        "RAPTORBUS_SIGNING_KEYS": f"{NEW},{OLD}",
        "RAPTORBUS_HEALTH_EVENT_SECONDS": "0",
    }
    with guild_worker(redis_url, tmp_path / "worker.log", **env):
        yield {**os.environ, **env}


def handled(bus: Bus) -> int:
    counts = bus.get_metrics()["handlers"].get("research.score_signal", {})
    return int(counts.get("succeeded", 0))


@pytest.mark.broker
@pytest.mark.timeout(180)
def test_a_signing_worker_runs_sealed_events_and_quarantines_every_other_kind(
    redis_url: str, bus: Bus, signed_worker: dict[str, str]
) -> None:
    old_signer = Bus(replace(bus.settings, signing_keys=OLD)).connect()
    new_signer = Bus(replace(bus.settings, signing_keys=NEW)).connect()
    try:
        # A tampered copy: sealed by the bus, then its payload changed in Redis.
        sealed = new_signer.prepare("signal.detected", SIGNAL, workspace_id="ws-1")[0]
        data = json.loads(sealed.to_json())
        data["payload"]["strength"] = 0.01
        raw = json.loads(_message(new_signer, sealed))
        raw["body"] = json.dumps(data)
        queue = priority_list("research", 6)
        bus.redis.lpush(queue, json.dumps(raw))
        bus.redis.lpush(wake_key("research"), "1")
        # Unsigned, through the exchange with a stock Kombu producer.
        unsigned = envelope(id="unsigned-1")
        exchange = Exchange("raptorflow.events", type="topic")
        with Connection(redis_url) as conn, Producer(conn, exchange=exchange) as producer:
            producer.publish(unsigned.to_json(), routing_key=unsigned.routing_key)
        # Unsigned, straight into the handler queue with a stock Celery app.
        stock = Celery("stock", broker=redis_url, set_as_current=False)
        forged = envelope(id="forged-1")
        stock.send_task(
            "research.score_signal",
            kwargs={"envelope": forged.model_dump(mode="json")},
            queue="research.handlers",
            task_id=handler_task_id(forged.id, "research.score_signal"),
        )
        # Genuine: one sealed with the old key (still listed), one with the new.
        old_signer.emit("signal.detected", SIGNAL, workspace_id="ws-1")
        new_signer.emit("signal.detected", SIGNAL, workspace_id="ws-1")
        wait_until(
            lambda: handled(bus) == 2 and bus.dlq.count() == 3,
            timeout=120,
            what="2 sealed events handled and 3 others quarantined",
        )
        letters = {letter.envelope.id: letter.exception_type for letter in bus.dlq.list()}
        assert letters == {
            sealed.id: "BadSignature",
            "unsigned-1": "Unsigned",
            "forged-1": "Unsigned",
        }
        assert handled(bus) == 2
    finally:
        old_signer.close()
        new_signer.close()


def _message(bus: Bus, sealed: Envelope) -> str:
    from raptorflow_bus.kombu_messages import kombu_message

    return kombu_message(sealed.to_json(), "research", 6)


def test_an_edited_letter_is_sealed_again_and_its_replay_runs() -> None:
    def strong_only(payload: object, envelope: Envelope) -> None:
        if envelope.payload["strength"] < 0.5:
            raise ValueError("too weak")

    settings = Settings(broker_url=None, signing_keys=NEW)
    with eager_bus(settings=settings, celery_config={"raptorbus_max_retries": 0}) as bus:
        bus.subscribe("signal.detected", strong_only, guild="research")
        bus.emit("signal.detected", {**SIGNAL, "strength": 0.1}, workspace_id="ws-1")
        [letter] = bus.dlq.list()
        edited = bus.dlq.edit(letter.id, {**SIGNAL, "strength": 0.9}, by="ops")
        assert edited.envelope is not None
        bus.verify(edited.envelope)
        bus.dlq.replay(letter.id)
        assert bus.dlq.count() == 0
