"""The fault stage on Redis Sentinel: the same ledger, workers and emitting bus
as ``harness.stage``, but every bus and worker reaches the broker through the
Sentinels (``RAPTORBUS_BROKER_URL=sentinel://...``, ``RAPTORBUS_SENTINEL_MASTER``),
so a failover is something they must follow on their own."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from raptorflow_bus import Bus, Settings
from tests.faults.harness import Ledger, Stage
from tests.faults.processes import RedisServer
from tests.sentinel_topology import SentinelTopology


class SentinelStage(Stage):
    """``broker`` is the first master (the server a scenario kills); buses and
    workers never address it directly."""

    def __init__(
        self,
        workdir: Path,
        topology: SentinelTopology,
        ledger: Ledger,
        reclaim: float,
        replica_acks: int,
    ) -> None:
        self.topology = topology
        self.replica_acks = replica_acks
        super().__init__(workdir, topology.master, ledger, reclaim)

    def bus_at(self, url: str) -> Bus:
        """A bus of this host on the Sentinel deployment (``url`` is ignored:
        on Sentinel there is no fixed server to point at)."""
        settings = Settings(
            broker_url=self.topology.url,
            sentinel_master=self.topology.master_name,
            min_replica_acks=self.replica_acks,
            home=self.workdir / "home",
        )
        bus = Bus(settings).connect()
        self.buses.append(bus)
        return bus

    def env(self, sleep: float = 0.0, broker_url: str | None = None) -> dict[str, str]:
        return {
            **super().env(sleep, broker_url or self.topology.url),
            "RAPTORBUS_SENTINEL_MASTER": self.topology.master_name,
            "RAPTORBUS_MIN_REPLICA_ACKS": str(self.replica_acks),
        }


@contextlib.contextmanager
def sentinel_stage(
    workdir: Path, *, replicas: int, replica_acks: int, reclaim: float = 3.0
) -> Iterator[SentinelStage]:
    with contextlib.ExitStack() as stack:
        topology = stack.enter_context(SentinelTopology(workdir / "sentinel", replicas))
        ledger_server = stack.enter_context(RedisServer(workdir / "ledger"))
        ledger = Ledger(ledger_server.url)
        stack.callback(ledger.close)
        scene = SentinelStage(workdir, topology, ledger, reclaim, replica_acks)
        stack.callback(scene.close)
        yield scene
