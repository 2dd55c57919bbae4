"""Each worker says how the bus looks from where it stands, as the seed's
``bus.health`` event on the heartbeat channel, which the Council hears.

It is a thread beside the heartbeat for the same reason: a solo pool busy in a
long handler must still report. A reading that finds the broker down emits
nothing: the event could only be spooled, and would be stale by the time the
outbox drains it."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from celery import bootsteps

from raptorflow_bus.errors import BusError
from raptorflow_bus.events import HealthStatus, RaptorBusHealthPayload

if TYPE_CHECKING:
    from raptorflow_bus.bus import Bus

logger = logging.getLogger("bus")


def health_payload(health: dict[str, Any]) -> RaptorBusHealthPayload:
    return RaptorBusHealthPayload(
        status=HealthStatus(health["status"]),
        queue_depths={name: q["depth"] for name, q in health.get("queues", {}).items()},
        dlq_depth=health["dlq_depth"] or 0,
    )


class HealthBeacon:
    def __init__(self, bus: Bus, interval_seconds: float) -> None:
        self.bus = bus
        self.interval = interval_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def report(self) -> bool:
        """Emit one ``bus.health`` event; False if the broker was down."""
        health = self.bus.health()
        if health["status"] == HealthStatus.DOWN.value:
            return False
        self.bus.emit("bus.health", health_payload(health))
        return True

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="raptorbus-health", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.report()
            except BusError as exc:
                logger.warning(f"bus.health not emitted: {exc}")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def make_health_step(beacon: HealthBeacon) -> type[bootsteps.StartStopStep]:
    class HealthStep(bootsteps.StartStopStep):
        name = "raptorbus.HealthBeacon"
        requires = ("celery.worker.components:Pool",)

        def start(self, worker: Any) -> None:
            beacon.start()

        def stop(self, worker: Any) -> None:
            beacon.stop()

        def terminate(self, worker: Any) -> None:
            beacon.stop()

    return HealthStep
