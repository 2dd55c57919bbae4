"""One handler run as one Celery task: dedup, retention, retries and the final
dead letter. Retries go back to the handler's own queue, never the exchange,
so the other handlers of the event are not run again (trap 4)."""

from __future__ import annotations

import logging
import time
import traceback
from datetime import datetime
from typing import TYPE_CHECKING, Any

import redis
from celery import Task
from celery.exceptions import Reject

from raptorflow_bus import tracing
from raptorflow_bus.context import handling
from raptorflow_bus.deadletter import HISTORY_LIMIT, DeadLetter, Failure
from raptorflow_bus.envelope import Envelope, utcnow
from raptorflow_bus.errors import BrokerUnavailable, BusError
from raptorflow_bus.histogram import DURATION_SCOPE, LATENCY_SCOPE, observe
from raptorflow_bus.logs import log

if TYPE_CHECKING:
    from raptorflow_bus.bus import Bus


class HandlerTask(Task):  # type: ignore[type-arg]
    """Base of every handler task; ``bus`` is bound per Bus when the task is made."""

    bus: Bus
    acks_late = True
    reject_on_worker_lost = True
    ignore_result = True
    typing = False


@tracing.traced_handler
def run_handler(
    task: HandlerTask,
    envelope: dict[str, Any],
    first_failed_at: str | None = None,
    replay: bool = False,
) -> str:
    """Run the handler behind ``task`` for one event; returns what happened."""
    bus = task.bus
    spec = bus.handler(task.name)
    env = Envelope.model_validate(envelope)
    task_id = str(task.request.id)
    retries: int = task.request.retries or 0
    attempt = retries + 1
    counts = bus.metrics
    first_run = attempt == 1 and not replay

    name, workspace = spec.task_name, env.workspace_id
    if first_run and bus.is_expired(env, spec.consumer):
        counts.incr(env.type, "expired", handler=spec.task_name, workspace=workspace)
        log(logging.WARNING, f"expired before {spec.task_name} ran", envelope=env)
        return "expired"
    delivered: dict[tuple[str, str], int] = {}
    if first_run:
        # Delivery latency is the first run's: a retry's start includes its backoff.
        delivered = counts.counts(env.type, "delivered", handler=name, workspace=workspace)
        delivered.update(observe(LATENCY_SCOPE + spec.consumer, _age_seconds(env)))
    duplicate = counts.counts(env.type, "duplicates", handler=name, workspace=workspace)
    try:
        claimed = bus.store.claim(task_id, delivered, duplicate)
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        # Nothing ran yet, and a failed task is acked (task_acks_on_failure):
        # hand the delivery back instead, or the event is lost.
        raise Reject(f"cannot claim {task_id}: {exc}", requeue=True) from exc
    if not claimed:
        log(logging.INFO, f"skipped duplicate run of {spec.task_name}", envelope=env)
        return "duplicate"

    try:
        bus.verify(env)
        payload = bus.catalogue.validate(env.type, env.payload)
    except BusError as exc:
        # Invalid data cannot become valid by waiting, nor a forged or tampered
        # envelope (a task written straight into the handler queue) become
        # genuine: dead-letter it at once, and never hand it to the handler.
        now = utcnow()
        first = first_failed_at or now.isoformat()
        _dead_letter(bus, spec.task_name, spec.consumer, env, exc, task_id, attempt, first, now)
        counts.incr(env.type, "failed", "dead_lettered", handler=name, workspace=workspace)
        return "invalid"
    started = time.perf_counter()
    with handling(bus, env):
        try:
            spec.call(payload, env)
        except Exception as exc:
            duration = observe(DURATION_SCOPE + spec.task_name, time.perf_counter() - started)
            now = utcnow()
            first = first_failed_at or now.isoformat()
            max_retries = task.max_retries if task.max_retries is not None else 0
            if retries < max_retries:
                countdown = bus.backoff.countdown(retries)
                counts.incr(
                    env.type,
                    "failed",
                    "retried",
                    handler=spec.task_name,
                    workspace=workspace,
                    extra=duration,
                )
                log(
                    logging.WARNING,
                    f"{spec.task_name} failed (attempt {attempt} of {max_retries + 1}), "
                    f"retrying in {countdown:.2f}s: {type(exc).__name__}: {exc}",
                    envelope=env,
                )
                raise task.retry(
                    exc=exc,
                    countdown=countdown,
                    queue=bus.topology.handler_queue(spec.consumer),
                    kwargs={"envelope": envelope, "first_failed_at": first, "replay": replay},
                ) from exc
            _dead_letter(bus, spec.task_name, spec.consumer, env, exc, task_id, attempt, first, now)
            counts.incr(
                env.type,
                "failed",
                "dead_lettered",
                handler=spec.task_name,
                workspace=workspace,
                extra=duration,
            )
            raise
    succeeded = counts.counts(env.type, "succeeded", handler=spec.task_name, workspace=workspace)
    succeeded.update(observe(DURATION_SCOPE + spec.task_name, time.perf_counter() - started))
    try:
        bus.store.finish(task_id, bus.dedup_ttl, succeeded)
    except (redis.ConnectionError, redis.TimeoutError):
        # The handler ran: record it on a new connection (redis-py dropped the
        # dead one), or the redelivery runs it a second time.
        bus.store.finish(task_id, bus.dedup_ttl, succeeded)
    if replay and bus.store.dlq_remove([task_id]):
        log(logging.INFO, f"replay of {spec.task_name} succeeded; left the DLQ", envelope=env)
    return "ok"


def _age_seconds(env: Envelope) -> float:
    return (utcnow() - env.timestamp).total_seconds()


def _dead_letter(
    bus: Bus,
    handler: str,
    guild: str,
    env: Envelope,
    exc: BaseException,
    task_id: str,
    attempt: int,
    first_failed_at: str,
    now: datetime,
) -> None:
    previous = bus.store.dlq_get(task_id)
    failure = Failure(
        at=now,
        attempts=attempt,
        exception_type=type(exc).__name__,
        message=str(exc)[:2_000],
        replay=previous is not None,
    )
    letter = DeadLetter(
        id=task_id,
        envelope=env,
        handler=handler,
        guild=guild,
        exception_type=type(exc).__name__,
        message=str(exc),
        traceback="".join(traceback.format_exception(exc)),
        attempts=attempt + (previous.attempts if previous else 0),
        first_failed_at=previous.first_failed_at if previous else first_failed_at,
        last_failed_at=now,
        replays=(previous.replays + 1) if previous else 0,
        history=[*(previous.history if previous else []), failure][-HISTORY_LIMIT:],
        edits=previous.edits if previous else [],
    )
    try:
        with tracing.dead_letter_span(letter):
            evicted = bus.store.dlq_put(letter, bus.topology.dlq_capacity)
    except BrokerUnavailable as unstored:
        # Acking the task now would leave the failure in no queue and in no
        # confirmed dead letter; back in its queue it fails and is dead-lettered
        # again once the broker (and its replicas) can take the letter.
        raise Reject(f"dead letter {task_id} not stored: {unstored}", requeue=True) from unstored
    log(
        logging.ERROR,
        f"{handler} failed {attempt} times; dead-lettered as {task_id}: "
        f"{type(exc).__name__}: {exc}",
        envelope=env,
    )
    if evicted:
        log(
            logging.WARNING,
            f"DLQ over capacity {bus.topology.dlq_capacity}: evicted {len(evicted)} oldest",
            envelope=env,
            evicted=",".join(evicted),
        )
