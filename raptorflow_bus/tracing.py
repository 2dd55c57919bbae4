"""OpenTelemetry spans over an event's whole path, one trace per emit:

    raptorbus.emit <type>             PRODUCER  emit/send/publish (emit_many: raptorbus.emit_many)
      raptorbus.dispatch <guild>      CONSUMER  the guild's event step queues its handler tasks
        raptorbus.handle <handler>    CONSUMER  one per attempt, retries included
          raptorbus.dead_letter <handler>       the final failure being stored
          raptorbus.emit <type>                 what the handler emits, and so on down

The emit span's W3C context (``traceparent``, ``tracestate``) rides in the
envelope's ``trace_context``: the envelope is the only thing that crosses the
outbox, the event queues (written by our Lua script) and the dead-letter queue.
The dispatch span's context rides in the handler task's ``traceparent`` and
``tracestate`` message headers, which Celery copies into every retry, so each
attempt hangs off the dispatch that queued it; a task without them (a DLQ
replay) hangs off the envelope's context instead.

Without the ``otel`` extra, or with no tracer provider configured, each hook is
one check that returns at once: OpenTelemetry is imported on first use and only
here, nothing is added to the envelope (its JSON stays byte-identical) and no
Redis command is ever added.

Why not ``opentelemetry-instrumentation-celery`` for these spans: the dispatch
hop writes task messages straight into Redis (``dispatch.py``), never through
``apply_async``, so its publish hook never runs and each handler's run span
would start a trace of its own; its spans know task names and ids, not events,
guilds, attempts or dead letters; and on a retry it re-injects its own
``apply_async`` span, chaining attempt N under attempt N-1. It still fits
beside the bus: the headers carry the standard ``traceparent`` name, so a worker
that also runs ``CeleryInstrumentor`` gets its ``run/<task>`` spans in the same
trace under the dispatch span, and the handle span nests inside the current
span whenever that span belongs to the same trace."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator, Mapping, Sized
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, ParamSpec, TypeVar, cast

from celery.exceptions import Reject, Retry

from raptorflow_bus.envelope import Envelope
from raptorflow_bus.sent import Sent, SentBatch

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.propagators.textmap import TextMapPropagator
    from opentelemetry.trace import Span, Tracer, TracerProvider

    from raptorflow_bus.deadletter import DeadLetter

P = ParamSpec("P")
R = TypeVar("R")
Q = TypeVar("Q")
SCOPE = "raptorflow_bus"
TRACE_KEYS = ("traceparent", "tracestate")


class _Api(NamedTuple):
    trace: Any
    get_tracer_provider: Callable[[], TracerProvider]
    get_current_span: Callable[[], Span]
    inert: tuple[type, ...]
    propagator: TextMapPropagator
    provider_from_env: bool


@functools.cache
def _api() -> _Api | None:
    try:
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    except ImportError:
        return None
    inert = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
    propagator = TraceContextTextMapPropagator()
    from_env = "OTEL_PYTHON_TRACER_PROVIDER" in os.environ
    return _Api(
        trace, trace.get_tracer_provider, trace.get_current_span, inert, propagator, from_env
    )


class _State:
    provider: TracerProvider | None = None
    tracer: tuple[TracerProvider, Tracer] | None = None


_state = _State()


def configure(provider: TracerProvider | None) -> None:
    """Trace to ``provider`` instead of OpenTelemetry's global one (None: back to
    the global). For tests and for applications that keep a private provider."""
    _state.provider = provider
    _state.tracer = None


def _tracer() -> Tracer | None:
    """The bus's tracer, or None when spans would go nowhere (the hot path's check)."""
    api = _api()
    if api is None:
        return None
    provider = _state.provider
    if provider is None:
        # get_tracer_provider() looks the environment up each time nothing is
        # set, a third of an eager emit's whole cost of tracing; OpenTelemetry's
        # own global says "nothing set" for a fraction of that. Should that
        # private name go, the public call is made every time.
        if getattr(api.trace, "_TRACER_PROVIDER", ...) is None and not api.provider_from_env:
            return None
        provider = api.get_tracer_provider()
    if isinstance(provider, api.inert):
        return None
    cached = _state.tracer
    if cached is None or cached[0] is not provider:
        cached = _state.tracer = (provider, provider.get_tracer(SCOPE))
    return cached[1]


def _inject() -> dict[str, str] | None:
    """The current span's W3C context, when tracing is on and a span is current."""
    api = _api()
    if _tracer() is None or api is None:
        return None
    if not api.get_current_span().get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    api.propagator.inject(carrier)
    return carrier or None


def carrier() -> dict[str, str] | None:
    """The current span's W3C context for a new envelope, or None (tracing off)."""
    return _inject()


def task_headers(headers: dict[str, Any]) -> dict[str, Any]:
    """A handler task message's ``headers``, plus the current span's W3C context."""
    context = _inject()
    return headers if context is None else {**headers, **context}


def apply_options() -> dict[str, Any]:
    """``apply_async`` options for a handler task: the current span's W3C context."""
    context = _inject()
    return {} if context is None else {"headers": context}


def _arg(args: tuple[Any, ...], kwargs: Mapping[str, Any], index: int, name: str) -> Any:
    return kwargs[name] if name in kwargs else args[index] if len(args) > index else None


EVENT_ATTRIBUTES = {
    "id": "raptorbus.event_id",
    "type": "raptorbus.event_type",
    "workspace_id": "raptorbus.workspace_id",
    "correlation_id": "raptorbus.correlation_id",
}


def _event_attributes(event: Mapping[str, Any]) -> dict[str, str]:
    return {name: str(event[key]) for key, name in EVENT_ATTRIBUTES.items() if event.get(key)}


def _envelope_attributes(envelope: Envelope) -> dict[str, str]:
    return _event_attributes({key: getattr(envelope, key) for key in EVENT_ATTRIBUTES})


def _traced_emit(name: Callable[[tuple[Any, ...], Mapping[str, Any]], str]) -> Any:
    def decorate(method: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(method)
        def send(*args: P.args, **kwargs: P.kwargs) -> R:
            tracer = _tracer()
            if tracer is None:
                return method(*args, **kwargs)
            from opentelemetry.trace import SpanKind

            with tracer.start_as_current_span(name(args, kwargs), kind=SpanKind.PRODUCER) as span:
                result = method(*args, **kwargs)
                _describe_sent(span, result)
                return result

        return send

    return decorate


def _describe_sent(span: Span, result: object) -> None:
    if isinstance(result, Sent):
        span.set_attributes(_envelope_attributes(result.envelope))
    elif isinstance(result, SentBatch):
        envelopes = result.envelopes
        span.set_attribute("raptorbus.event_count", len(envelopes))
        span.set_attribute("raptorbus.event_types", sorted({e.type for e in envelopes}))
    else:
        return
    span.set_attribute("raptorbus.spooled", bool(result.spooled))


traced_send: Callable[[Callable[P, R]], Callable[P, R]] = _traced_emit(
    lambda args, kwargs: f"raptorbus.emit {_arg(args, kwargs, 1, 'event_type')}"
)
traced_send_many: Callable[[Callable[P, R]], Callable[P, R]] = _traced_emit(
    lambda args, kwargs: "raptorbus.emit_many"
)


def traced_dispatch(func: Callable[P, Q]) -> Callable[P, Q]:
    """``dispatch(bus, envelope, consumer, ...)`` inside a span parented on the
    envelope; what it returns is, or has the length of, the handlers queued."""

    @functools.wraps(func)
    def dispatch(*args: P.args, **kwargs: P.kwargs) -> Q:
        tracer = _tracer()
        if tracer is None:
            return func(*args, **kwargs)
        from opentelemetry.trace import SpanKind

        envelope: Envelope = _arg(args, kwargs, 1, "envelope")
        consumer = str(_arg(args, kwargs, 2, "consumer"))
        with tracer.start_as_current_span(
            f"raptorbus.dispatch {consumer}",
            context=_extract(envelope.trace_context),
            kind=SpanKind.CONSUMER,
            attributes={**_envelope_attributes(envelope), "raptorbus.guild": consumer},
        ) as span:
            queued = func(*args, **kwargs)
            count = queued if isinstance(queued, int) else len(cast(Sized, queued))
            span.set_attribute("raptorbus.handlers", count)
            return queued

    return dispatch


def _extract(carried: Mapping[str, Any] | None) -> Context | None:
    """The context to parent on: ``carried``'s, unless the current span is of the
    same trace (an eager run, or ``CeleryInstrumentor``'s run span), or None."""
    api = _api()
    if api is None or not carried or "traceparent" not in carried:
        return None
    from opentelemetry import trace

    context = api.propagator.extract({k: str(carried[k]) for k in TRACE_KEYS if k in carried})
    remote = trace.get_current_span(context).get_span_context()
    current = trace.get_current_span().get_span_context()
    if not remote.is_valid or (current.is_valid and current.trace_id == remote.trace_id):
        return None
    return context


@dataclass
class _Attempt:
    dead_lettered: bool = False


_attempt_var: ContextVar[_Attempt | None] = ContextVar("raptorbus_trace_attempt", default=None)


def traced_handler(run: Callable[P, str]) -> Callable[P, str]:
    """``run_handler(task, envelope=..., ...)`` inside one span per attempt."""

    @functools.wraps(run)
    def run_traced(*args: P.args, **kwargs: P.kwargs) -> str:
        tracer = _tracer()
        if tracer is None:
            return run(*args, **kwargs)
        from opentelemetry.trace import SpanKind

        task: Any = args[0]
        data = _arg(args, kwargs, 1, "envelope")
        event: Mapping[str, Any] = data if isinstance(data, Mapping) else {}
        request = task.request
        headers = request.headers if isinstance(request.headers, Mapping) else None
        carried = headers if headers and "traceparent" in headers else event.get("trace_context")
        attributes: dict[str, str | int] = {
            **_event_attributes(event),
            "raptorbus.guild": str(task.name).partition(".")[0],
            "raptorbus.handler": str(task.name),
            "raptorbus.task_id": str(request.id),
            "raptorbus.attempt": (request.retries or 0) + 1,
        }
        attempt = _Attempt()
        token = _attempt_var.set(attempt)
        try:
            with tracer.start_as_current_span(
                f"raptorbus.handle {task.name}",
                context=_extract(carried if isinstance(carried, Mapping) else None),
                kind=SpanKind.CONSUMER,
                attributes=attributes,
                record_exception=False,
                set_status_on_exception=False,
            ) as span:
                try:
                    outcome = run(*args, **kwargs)
                except Retry as exc:
                    _failed(span, "retry", exc.exc or exc.__cause__ or exc)
                    raise
                except Reject as exc:
                    _failed(span, "requeued", exc)
                    raise
                except BaseException as exc:
                    _failed(span, "dead_lettered" if attempt.dead_lettered else "error", exc)
                    raise
                span.set_attribute("raptorbus.outcome", outcome)
                if attempt.dead_lettered:
                    from opentelemetry.trace import Status, StatusCode

                    span.set_status(Status(StatusCode.ERROR, f"{outcome}; dead-lettered"))
                return outcome
        finally:
            _attempt_var.reset(token)

    return run_traced


def _failed(span: Span, outcome: str, exc: BaseException) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute("raptorbus.outcome", outcome)
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))


def dead_letter_span(letter: DeadLetter) -> AbstractContextManager[object]:
    """Around storing ``letter``; marks the current attempt as dead-lettered."""
    tracer = _tracer()
    return nullcontext() if tracer is None else _dead_letter(tracer, letter)


@contextmanager
def _dead_letter(tracer: Tracer, letter: DeadLetter) -> Iterator[None]:
    attributes: dict[str, str | int] = {
        "raptorbus.dead_letter_id": letter.id,
        "raptorbus.handler": letter.handler,
        "raptorbus.guild": letter.guild,
        "raptorbus.attempts": letter.attempts,
        "raptorbus.exception_type": letter.exception_type,
    }
    if letter.envelope is not None:
        attributes.update(_envelope_attributes(letter.envelope))
    with tracer.start_as_current_span(
        f"raptorbus.dead_letter {letter.handler}", attributes=attributes
    ):
        yield
    attempt = _attempt_var.get()
    if attempt is not None:
        attempt.dead_lettered = True
