from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from raptorflow_bus import Envelope, Priority


def make(**overrides: object) -> Envelope:
    fields: dict[str, object] = {
        "type": "signal.detected",
        "payload": {"signal_id": "s-1", "nested": {"a": [1, 2.5, None, "x"]}},
        "workspace_id": "ws-1",
        "correlation_id": "corr-1",
        "request_id": "corr-1",
    }
    fields.update(overrides)
    return Envelope.model_validate(fields)


def test_an_envelope_survives_a_json_round_trip_exactly() -> None:
    env = make(
        priority=Priority.CRITICAL,
        causation_id="cause-1",
        source_agent_id="RES-001",
        expires_at=datetime(2030, 1, 1, tzinfo=UTC),
    )
    again = Envelope.from_json(env.to_json())
    assert again == env
    assert again.to_json() == env.to_json()


def test_timestamps_are_utc_iso_8601() -> None:
    env = make(timestamp=datetime(2026, 1, 1, 12, tzinfo=timezone(timedelta(hours=2))))
    assert env.timestamp == datetime(2026, 1, 1, 10, tzinfo=UTC)
    assert '"timestamp":"2026-01-01T10:00:00+00:00"' in env.to_json()
    with pytest.raises(ValidationError, match="timezone-aware"):
        make(timestamp=datetime(2026, 1, 1))


def test_unknown_fields_are_rejected_and_the_envelope_is_frozen() -> None:
    with pytest.raises(ValidationError, match="extra"):
        make(colour="blue")
    env = make()
    with pytest.raises(ValidationError, match="frozen"):
        env.type = "other.thing"  # type: ignore[misc]


def test_each_envelope_gets_its_own_uuid4_id_and_routing_key() -> None:
    a, b = make(), make()
    assert a.id != b.id and len(a.id) == 36 and a.id[14] == "4"
    assert a.routing_key == "raptorflow.events.signal.detected"


TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_an_envelope_without_trace_context_is_what_it_was_before_the_field_existed() -> None:
    old = make().to_json()
    assert "trace_context" not in old
    assert Envelope.from_json(old).trace_context is None


def test_trace_context_round_trips_and_holds_only_the_w3c_fields() -> None:
    context = {"traceparent": TRACEPARENT, "tracestate": "congo=t61rcWkgMzE"}
    env = make(trace_context=context)
    assert Envelope.from_json(env.to_json()) == env
    assert env.model_dump(mode="json")["trace_context"] == context
    with pytest.raises(ValidationError, match="only 'traceparent' and 'tracestate'"):
        make(trace_context={"traceparent": TRACEPARENT, "baggage": "k=v"})
    with pytest.raises(ValidationError, match="at most 512"):
        make(trace_context={"traceparent": TRACEPARENT, "tracestate": "x" * 513})
