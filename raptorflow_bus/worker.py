"""A guild worker: a Celery worker on the guild's handler queue plus a consumer
step on its event queue that turns each event into handler tasks.

The step runs in the worker's main process and publishes the handler tasks of
one event in a single Redis pipeline before acking the event, so a crash in
between redelivers the event and the deterministic task ids absorb the copy."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from celery import bootsteps
from celery.utils.nodenames import host_format
from kombu import Consumer, Message

from raptorflow_bus.bus import Bus
from raptorflow_bus.dispatch import dispatch
from raptorflow_bus.errors import NotReplicated
from raptorflow_bus.guild_consumer import make_guild_consumer
from raptorflow_bus.health_beacon import HealthBeacon, make_health_step
from raptorflow_bus.heartbeat import Heartbeat, make_heartbeat_step, new_worker_id
from raptorflow_bus.inbound import Rejected, accept, parse_body
from raptorflow_bus.logs import OncePerOutage, log
from raptorflow_bus.quarantine import oversized, quarantine
from raptorflow_bus.remote_control import EVENT_STEP
from raptorflow_bus.remote_control import register as register_remote_control
from raptorflow_bus.topology import PRIORITY_SEP, PRIORITY_STEPS
from raptorflow_bus.transport import OWNER_OPTION


def make_event_step(bus: Bus, consumers: Sequence[str]) -> type[bootsteps.ConsumerStep]:
    """A consumer bootstep bound to ``bus`` that reads the ``consumers``' event queues."""
    for name in consumers:
        bus.topology.consumer(name)

    class EventDispatch(bootsteps.ConsumerStep):
        name = EVENT_STEP

        def get_consumers(self, channel: Any) -> list[Consumer]:
            return [
                Consumer(
                    channel,
                    queues=[bus.topology.kombu_event_queue(name)],
                    callbacks=[_on_message(bus, name)],
                    on_decode_error=_on_decode_error(bus, name),
                    # text/plain: a stock Kombu producer's envelope JSON (inbound).
                    accept=["json", "text/plain"],
                    prefetch_count=50,
                )
                for name in consumers
            ]

    return EventDispatch


def _on_decode_error(bus: Bus, consumer: str) -> Any:
    """Kombu's default re-raises, and a refused pickle body then stops the worker."""

    def on_decode_error(message: Message, exc: Exception) -> None:
        reason = f"cannot decode {message.content_type!r} body: {exc}"
        quarantine(bus, consumer, reason, type(exc).__name__, body=message.body)
        message.ack()

    return on_decode_error


def _on_message(bus: Bus, consumer: str) -> Any:
    held_back = False

    def on_message(body: Any, message: Message) -> None:
        nonlocal held_back
        too_big = oversized(bus, message.body)
        if too_big:
            quarantine(bus, consumer, too_big, "PayloadTooLarge", body=message.body)
            message.ack()
            return
        try:
            data = parse_body(body)
            envelope = accept(bus, data, message.delivery_info)
        except Rejected as exc:
            quarantine(bus, consumer, exc.reason, exc.error_type, body=body, envelope=exc.envelope)
            message.ack()
            return
        # The bus's own copies are JSON objects whose text is the envelope's.
        raw = message.body if isinstance(body, dict) else None
        try:
            dispatch(bus, envelope, consumer, data, raw.decode() if isinstance(raw, bytes) else raw)
        except NotReplicated as exc:
            # The master took the handler tasks but too few replicas confirmed
            # them: the event goes back for a later attempt (a copy of a task
            # that did land is a counted duplicate). The master is reachable,
            # so this is no reason to drop the connection, and raising here
            # would stop the worker. Logged once until replicas confirm again.
            if not held_back:
                log(
                    logging.WARNING,
                    f"dispatch to {consumer!r} requeues events until replicas confirm: {exc}",
                    envelope=envelope,
                )
            held_back = True
            message.requeue()
            return
        except Exception:
            log(logging.ERROR, f"dispatch to {consumer!r} failed; requeued", envelope=envelope)
            message.requeue()
            raise
        if held_back:
            log(logging.INFO, f"dispatch to {consumer!r} confirmed by replicas again")
            held_back = False
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
    assert bus.address is not None, "a worker needs a broker, not an eager bus"
    worker_id = new_worker_id(consumers)
    conf = bus.app.conf
    transport_options = {**conf.broker_transport_options, OWNER_OPTION: worker_id}
    conf.update(broker_transport_options=transport_options)
    heartbeat = Heartbeat.for_worker(
        bus.address,
        worker_id,
        bus.reclaim_seconds,
        list(transport_options.get("priority_steps", PRIORITY_STEPS)),
        str(transport_options.get("sep", PRIORITY_SEP)),
    )
    bus.app.steps["worker"].add(make_heartbeat_step(heartbeat))
    if bus.settings.health_event_seconds > 0:
        beacon = HealthBeacon(bus, bus.settings.health_event_seconds)
        bus.app.steps["worker"].add(make_health_step(beacon))
    bus.app.steps["consumer"].add(make_event_step(bus, consumers))
    # active_queues names the event queue too, so Flower lists it.
    register_remote_control()
    conf.update(worker_consumer=make_guild_consumer(bus, consumers))
    OncePerOutage.install()
    return bus.app.Worker(
        hostname=host_format(hostname or f"{'+'.join(consumers)}@%h"),
        queues=[bus.topology.handler_queue(c) for c in consumers],
        pool=pool,
        concurrency=concurrency,
        loglevel=loglevel,
        **options,
    )
