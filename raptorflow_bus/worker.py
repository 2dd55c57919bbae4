"""A guild worker: a Celery worker on the guild's handler queue plus a consumer
step on its event queue that turns each event into handler tasks.

The step runs in the worker's main process and publishes the handler tasks of
one event in a single Redis pipeline before acking the event, so a crash in
between redelivers the event and the deterministic task ids absorb the copy."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from celery import bootsteps
from celery.utils.nodenames import host_format
from kombu import Consumer, Message
from pydantic import ValidationError

from raptorflow_bus.bus import Bus
from raptorflow_bus.deadletter import DeadLetter
from raptorflow_bus.dispatch import dispatch
from raptorflow_bus.envelope import Envelope, utcnow
from raptorflow_bus.heartbeat import Heartbeat, make_heartbeat_step, new_worker_id
from raptorflow_bus.logs import OncePerOutage, log
from raptorflow_bus.topology import PRIORITY_SEP, PRIORITY_STEPS
from raptorflow_bus.transport import OWNER_OPTION


def _dead_letter_malformed(bus: Bus, consumer: str, body: Any, error: Exception) -> None:
    now = utcnow()
    raw = body if isinstance(body, str) else json.dumps(body, default=str)
    letter = DeadLetter(
        id=f"malformed-{consumer}-{now.timestamp():.6f}",
        envelope=None,
        raw_body=raw[:65_536],
        handler="<dispatch>",
        guild=consumer,
        exception_type=type(error).__name__,
        message=str(error)[:4_000],
        traceback="",
        attempts=1,
        first_failed_at=now,
        last_failed_at=now,
    )
    bus.store.dlq_put(letter, bus.topology.dlq_capacity)
    bus.store.incr({("dispatch", "malformed"): 1})
    log(logging.ERROR, f"malformed message on queue {consumer!r} dead-lettered as {letter.id}")


def make_event_step(bus: Bus, consumers: Sequence[str]) -> type[bootsteps.ConsumerStep]:
    """A consumer bootstep bound to ``bus`` that reads the ``consumers``' event queues."""
    for name in consumers:
        bus.topology.consumer(name)

    class EventDispatch(bootsteps.ConsumerStep):
        name = "raptorbus.EventDispatch"

        def get_consumers(self, channel: Any) -> list[Consumer]:
            return [
                Consumer(
                    channel,
                    queues=[bus.topology.kombu_event_queue(name)],
                    callbacks=[_on_message(bus, name)],
                    accept=["json"],
                    prefetch_count=50,
                )
                for name in consumers
            ]

    return EventDispatch


def _on_message(bus: Bus, consumer: str) -> Any:
    def on_message(body: Any, message: Message) -> None:
        try:
            envelope = Envelope.model_validate(body)
        except (ValidationError, TypeError, ValueError) as exc:
            _dead_letter_malformed(bus, consumer, body, exc)
            message.ack()
            return
        try:
            raw = message.body
            dispatch(bus, envelope, consumer, body, raw.decode() if isinstance(raw, bytes) else raw)
        except Exception:
            log(logging.ERROR, f"dispatch to {consumer!r} failed; requeued", envelope=envelope)
            message.requeue()
            raise
        message.ack()

    return on_message


def build_worker(
    bus: Bus,
    consumers: Sequence[str],
    *,
    pool: str = "prefork",
    concurrency: int | None = None,
    loglevel: str = "INFO",
    hostname: str | None = None,
    **options: Any,
) -> Any:
    """A ``WorkController`` for ``consumers`` (not started)."""
    bus.connect()
    worker_id = new_worker_id()
    conf = bus.app.conf
    transport_options = {**conf.broker_transport_options, OWNER_OPTION: worker_id}
    conf.update(broker_transport_options=transport_options)
    heartbeat = Heartbeat.for_worker(
        str(bus.broker_url),
        worker_id,
        bus.reclaim_seconds,
        list(transport_options.get("priority_steps", PRIORITY_STEPS)),
        str(transport_options.get("sep", PRIORITY_SEP)),
    )
    bus.app.steps["worker"].add(make_heartbeat_step(heartbeat))
    bus.app.steps["consumer"].add(make_event_step(bus, consumers))
    OncePerOutage.install()
    return bus.app.Worker(
        hostname=host_format(hostname or f"{'+'.join(consumers)}@%h"),
        queues=[bus.topology.handler_queue(c) for c in consumers],
        pool=pool,
        concurrency=concurrency,
        loglevel=loglevel,
        **options,
    )
