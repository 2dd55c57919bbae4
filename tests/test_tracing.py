"""Tracing: one trace from emit through dispatch, every handler attempt and the
dead letter, on the eager bus and (marked broker) a real worker on real Redis,
collected by OpenTelemetry's in-memory exporter."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from raptorflow_bus import tracing
from raptorflow_bus.errors import InvalidPayload
from tests.harness import EagerBackend, Recorder, wait_until
from tests.payloads import VALID

SIGNAL = VALID["signal.detected"]


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    """Spans of the bus go to this exporter (and nowhere else) during the test."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.configure(provider)
    try:
        yield exporter
    finally:
        tracing.configure(None)
        provider.shutdown()


def spans_when(exporter: InMemorySpanExporter, done: Any, what: str) -> Sequence[ReadableSpan]:
    """The finished spans once ``done(spans)`` holds: at once in eager mode, and
    within a bounded wait on a real worker (a span ends just before its task is acked)."""
    wait_until(lambda: done(exporter.get_finished_spans()), timeout=30, what=what)
    return exporter.get_finished_spans()


def named(spans: Sequence[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def the(spans: Sequence[ReadableSpan], name: str) -> ReadableSpan:
    [span] = named(spans, name)
    return span


def parent_id(span: ReadableSpan) -> int | None:
    return int(span.parent.span_id) if span.parent else None


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.span_id)


def trace_ids(spans: Sequence[ReadableSpan]) -> set[int]:
    return {s.context.trace_id for s in spans if s.context is not None}


def attempts(spans: Sequence[ReadableSpan], handler: str) -> list[ReadableSpan]:
    found = named(spans, f"raptorbus.handle {handler}")
    return sorted(found, key=lambda s: int(s.attributes["raptorbus.attempt"]))  # type: ignore[index, arg-type]


def test_emit_dispatch_and_a_retried_attempt_form_one_trace(
    backend: Any, exporter: InMemorySpanExporter
) -> None:
    calls = Recorder()
    with backend.bus() as bus:
        bus.subscribe("signal.detected", calls.handler("flaky", fail_times=1), guild="research")
        with backend.running(bus):
            sent = bus.emit("signal.detected", SIGNAL, workspace_id="ws-1", correlation_id="c-1")
            spans = spans_when(
                exporter, lambda s: len(attempts(s, "research.flaky")) == 2, "two attempts"
            )
            backend.settle(bus)

    emit = the(spans, "raptorbus.emit signal.detected")
    dispatch = the(spans, "raptorbus.dispatch research")
    first, second = attempts(spans, "research.flaky")
    assert emit.context is not None and trace_ids(spans) == {emit.context.trace_id}
    assert emit.kind is SpanKind.PRODUCER and emit.parent is None
    assert sent.trace_context is not None
    assert f"{span_id(emit):016x}" in sent.trace_context["traceparent"]
    assert parent_id(dispatch) == span_id(emit)
    assert parent_id(first) == parent_id(second) == span_id(dispatch)
    assert first.kind is SpanKind.CONSUMER
    assert first.attributes is not None and second.attributes is not None
    assert first.attributes["raptorbus.outcome"] == "retry"
    assert first.status.status_code is StatusCode.ERROR
    assert [e.attributes["exception.type"] for e in first.events] == ["RuntimeError"]  # type: ignore[index]
    assert (second.attributes["raptorbus.outcome"], second.status.status_code) == (
        "ok",
        StatusCode.UNSET,
    )
    assert {
        "raptorbus.event_id": sent.id,
        "raptorbus.event_type": "signal.detected",
        "raptorbus.workspace_id": "ws-1",
        "raptorbus.correlation_id": "c-1",
        "raptorbus.guild": "research",
        "raptorbus.handler": "research.flaky",
    }.items() <= dict(second.attributes).items()


def test_an_always_failing_handler_makes_four_attempts_then_a_dead_letter_in_one_trace(
    backend: Any, exporter: InMemorySpanExporter
) -> None:
    calls = Recorder()
    with backend.bus() as bus:
        bus.subscribe("signal.detected", calls.handler("doomed", fail_times=-1), guild="research")
        with backend.running(bus):
            sent = bus.emit("signal.detected", SIGNAL, workspace_id="ws-1")
            spans = spans_when(
                exporter, lambda s: len(attempts(s, "research.doomed")) == 4, "four attempts"
            )
            backend.settle(bus, lambda: bus.dlq.count() == 1)
        [letter] = bus.dlq.list()

    assert letter.envelope == sent
    dispatch = the(spans, "raptorbus.dispatch research")
    tries = attempts(spans, "research.doomed")
    dead = the(spans, "raptorbus.dead_letter research.doomed")
    assert len(trace_ids(spans)) == 1
    assert [s.attributes["raptorbus.attempt"] for s in tries] == [1, 2, 3, 4]  # type: ignore[index]
    assert [s.attributes["raptorbus.outcome"] for s in tries] == [  # type: ignore[index]
        "retry",
        "retry",
        "retry",
        "dead_lettered",
    ]
    assert all(s.status.status_code is StatusCode.ERROR for s in tries)
    assert {parent_id(s) for s in tries} == {span_id(dispatch)}
    assert parent_id(dead) == span_id(tries[-1])
    assert dead.attributes is not None
    assert (dead.attributes["raptorbus.dead_letter_id"], dead.attributes["raptorbus.attempts"]) == (
        letter.id,
        4,
    )


def test_an_event_emitted_by_a_handler_is_a_child_of_that_handler_attempt(
    backend: Any, exporter: InMemorySpanExporter
) -> None:
    from raptorflow_bus import emit

    def research(signal: Any) -> None:
        emit("insight.generated", VALID["insight.generated"])

    calls = Recorder()
    with backend.bus() as bus:
        bus.subscribe("signal.detected", research, guild="research")
        bus.subscribe("insight.generated", calls.handler("muse"), guild="muse")
        with backend.running(bus):
            bus.emit("signal.detected", SIGNAL, workspace_id="ws-1")
            spans = spans_when(
                exporter, lambda s: len(attempts(s, "muse.muse")) == 1, "the muse handler"
            )
            backend.settle(bus)

    handle = the(spans, "raptorbus.handle research.research")
    child = the(spans, "raptorbus.emit insight.generated")
    assert len(trace_ids(spans)) == 1
    assert parent_id(child) == span_id(handle)
    assert parent_id(the(spans, "raptorbus.dispatch muse")) == span_id(child)
    [muse] = [c[2] for c in calls.calls]
    assert f"{span_id(child):016x}" in muse.trace_context["traceparent"]


def test_a_batch_is_one_emit_many_span_over_each_event_dispatch(
    exporter: InMemorySpanExporter,
) -> None:
    with EagerBackend().bus() as bus:
        sent = bus.emit_many(
            [("signal.detected", SIGNAL), ("insight.generated", VALID["insight.generated"])],
            workspace_id="ws-1",
        )
    spans = exporter.get_finished_spans()
    batch = the(spans, "raptorbus.emit_many")
    assert batch.attributes is not None
    assert batch.attributes["raptorbus.event_count"] == 2
    assert all(e.trace_context == sent[0].trace_context for e in sent)
    dispatches = [s for s in spans if s.name.startswith("raptorbus.dispatch")]
    assert dispatches and {parent_id(s) for s in dispatches} == {span_id(batch)}


def test_a_refused_emit_is_an_error_span_and_nothing_else(
    exporter: InMemorySpanExporter,
) -> None:
    with EagerBackend().bus() as bus, pytest.raises(InvalidPayload):
        bus.emit("signal.detected", {**SIGNAL, "strength": 7}, workspace_id="ws-1")
    [span] = exporter.get_finished_spans()
    assert span.name == "raptorbus.emit signal.detected"
    assert span.status.status_code is StatusCode.ERROR
    [event] = span.events
    assert event.attributes is not None
    assert event.attributes["exception.type"] == "raptorflow_bus.errors.InvalidPayload"


def test_a_replayed_dead_letter_joins_its_event_trace(exporter: InMemorySpanExporter) -> None:
    calls = Recorder()
    with EagerBackend().bus() as bus:
        bus.subscribe("signal.detected", calls.handler("doomed", fail_times=4), guild="research")
        bus.emit("signal.detected", SIGNAL, workspace_id="ws-1")
        [letter] = bus.dlq.list()
        exporter.clear()
        bus.dlq.replay(letter.id)
        assert bus.dlq.count() == 0
    [replay] = exporter.get_finished_spans()
    assert replay.attributes is not None
    assert replay.attributes["raptorbus.outcome"] == "ok"
    assert letter.envelope is not None and letter.envelope.trace_context is not None
    traceparent = letter.envelope.trace_context["traceparent"]
    assert replay.context is not None and replay.parent is not None
    assert f"{replay.context.trace_id:032x}-{replay.parent.span_id:016x}" in traceparent


def test_with_no_tracer_provider_configured_nothing_is_traced_or_added_to_the_wire() -> None:
    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        pytest.skip("a global tracer provider is set in this process")
    unused = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(unused))
    calls = Recorder()
    with EagerBackend().bus() as bus:
        bus.subscribe("signal.detected", calls.handler("flaky", fail_times=1), guild="research")
        sent = bus.emit("signal.detected", SIGNAL, workspace_id="ws-1")
        assert calls.count("flaky") == 2
    assert sent.trace_context is None
    assert "trace_context" not in json.loads(sent.to_json())
    assert unused.get_finished_spans() == ()


def test_the_bus_works_without_opentelemetry_installed() -> None:
    script = textwrap.dedent(
        """
        import sys
        sys.modules["opentelemetry"] = None  # what an absent package looks like to import
        from raptorflow_bus.testing import eager_bus
        from tests.harness import FAST_RETRIES, Recorder
        from tests.payloads import VALID

        calls = Recorder()
        with eager_bus(celery_config=FAST_RETRIES) as bus:
            bus.subscribe("signal.detected", calls.handler("flaky", fail_times=1), "research")
            sent = bus.emit("signal.detected", VALID["signal.detected"], workspace_id="ws-1")
            bus.subscribe("insight.generated", calls.handler("doomed", fail_times=-1), "muse")
            bus.emit("insight.generated", VALID["insight.generated"], workspace_id="ws-1")
            loaded = [m for m, module in sys.modules.items() if module and "opentelemetry" in m]
            print(calls.count("flaky"), calls.count("doomed"), bus.dlq.count(),
                  sent.trace_context, loaded)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[-2] == "2 4 1 None []"


def test_a_global_tracer_provider_set_after_the_first_emit_is_picked_up() -> None:
    script = textwrap.dedent(
        """
        import json
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from raptorflow_bus.testing import eager_bus
        from tests.payloads import VALID

        with eager_bus() as bus:
            before = bus.emit("signal.detected", VALID["signal.detected"], workspace_id="ws-1")
            exporter = InMemorySpanExporter()
            provider = TracerProvider()
            provider.add_span_processor(SimpleSpanProcessor(exporter))
            trace.set_tracer_provider(provider)
            after = bus.emit("signal.detected", VALID["signal.detected"], workspace_id="ws-1")
        names = sorted({s.name for s in exporter.get_finished_spans()})
        print(json.dumps([before.trace_context, after.trace_context is not None, names]))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.split("\n")[-2]) == [
        None,
        True,
        [
            "raptorbus.dispatch council",
            "raptorbus.dispatch research",
            "raptorbus.emit signal.detected",
        ],
    ]


def test_celery_instrumentor_spans_join_the_same_trace(exporter: InMemorySpanExporter) -> None:
    from opentelemetry.instrumentation.celery import CeleryInstrumentor

    instrumentor = CeleryInstrumentor()  # type: ignore[no-untyped-call]
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor.instrument(tracer_provider=provider)
    calls = Recorder()
    try:
        with EagerBackend().bus() as bus:
            bus.subscribe("signal.detected", calls.handler("flaky", fail_times=1), "research")
            bus.emit("signal.detected", SIGNAL, workspace_id="ws-1")
    finally:
        instrumentor.uninstrument()
        provider.shutdown()
    spans = exporter.get_finished_spans()
    runs = named(spans, "run/research.flaky")
    dispatch = the(spans, "raptorbus.dispatch research")
    assert len(runs) == 2 and len(trace_ids(spans)) == 1
    assert {parent_id(r) for r in runs} == {span_id(dispatch)}
    assert {parent_id(h) for h in attempts(spans, "research.flaky")} == {span_id(r) for r in runs}
