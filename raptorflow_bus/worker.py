"""A guild worker: a Celery worker on the guild's handler queue plus the event
hop (``raptorflow_bus.hop``) that turns the events of its event queue into
handler tasks, in batches, in a thread of the worker's main process.

The hop is a worker bootstep, not a consumer one: it keeps its own connection
and reconnects by itself, so Celery's consumer restarting after a lost
connection neither stops it nor waits for it. It starts after the heartbeat
(the reaper must know the worker before the worker holds anything) and stops
before it, having committed the batch in hand."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from celery import bootsteps
from celery.utils.nodenames import host_format

from raptorflow_bus.bus import Bus
from raptorflow_bus.guild_consumer import make_guild_consumer
from raptorflow_bus.health_beacon import HealthBeacon, make_health_step
from raptorflow_bus.heartbeat import Heartbeat, make_heartbeat_step, new_worker_id
from raptorflow_bus.hop import DEFAULT_BATCH, EventHop
from raptorflow_bus.logs import OncePerOutage
from raptorflow_bus.remote_control import EVENT_STEP
from raptorflow_bus.remote_control import register as register_remote_control
from raptorflow_bus.topology import PRIORITY_SEP, PRIORITY_STEPS
from raptorflow_bus.transport import OWNER_OPTION


def make_event_step(
    bus: Bus,
    consumers: Sequence[str],
    owner: str | None = None,
    after: Sequence[type[bootsteps.Step]] = (),
) -> type[bootsteps.StartStopStep]:
    """A worker bootstep (for ``app.steps["worker"]``) that hops the events of
    ``consumers``' queues, as ``owner`` (default: the transport's owner option,
    else a new id), starting after the steps in ``after``."""
    for name in consumers:
        bus.topology.consumer(name)
    conf = bus.app.conf
    options = conf.broker_transport_options
    worker_id = owner or options.get(OWNER_OPTION) or new_worker_id(consumers)

    class EventDispatch(bootsteps.StartStopStep):
        name = EVENT_STEP
        requires = ("celery.worker.components:Pool", *after)

        def __init__(self, parent: Any, **kwargs: Any) -> None:
            super().__init__(parent, **kwargs)
            #: What ``active_queues`` names beside the handler queue.
            self.queues = [bus.topology.kombu_event_queue(name) for name in consumers]
            self.hop: EventHop | None = None

        def start(self, parent: Any) -> None:
            bus.connect()
            self.hop = EventHop(
                bus,
                consumers,
                worker_id,
                batch=int(conf.get("raptorbus_event_batch") or DEFAULT_BATCH),
                wait_seconds=float(options.get("brpop_timeout") or 1),
                priority_steps=list(options.get("priority_steps", PRIORITY_STEPS)),
                sep=str(options.get("sep", PRIORITY_SEP)),
            )
            self.hop.start()

        def stop(self, parent: Any) -> None:
            if self.hop is not None:
                self.hop.stop()

        def terminate(self, parent: Any) -> None:
            self.stop(parent)

    return EventDispatch


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
    heartbeat_step = make_heartbeat_step(heartbeat)
    bus.app.steps["worker"].add(heartbeat_step)
    if bus.settings.health_event_seconds > 0:
        beacon = HealthBeacon(bus, bus.settings.health_event_seconds)
        bus.app.steps["worker"].add(make_health_step(beacon))
    bus.app.steps["worker"].add(make_event_step(bus, consumers, worker_id, [heartbeat_step]))
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
