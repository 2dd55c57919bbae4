"""A worker process's heartbeat, and the reaper run that rides on it.

The beat is a thread of its own, not part of Celery's event loop: a solo pool
running a long handler blocks that loop, and a worker must not look dead (and
have its running delivery handed to another worker) just because it is busy.
Every beat also tries the reaper lock, so one worker of the deployment reaps
each round and a restarted worker reaps at once on start."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

import redis
from celery import bootsteps

from raptorflow_bus import keys
from raptorflow_bus.broker_address import BrokerAddress, close_client
from raptorflow_bus.reaper import Reaper

logger = logging.getLogger("bus")

DEFAULT_RECLAIM_SECONDS = 15.0
GUILD_SEP = "+"
# A worker is dead once it missed this many beats.
MISSED_BEATS = 3
BEATS_PER_RECLAIM = 5


def new_worker_id(guilds: Sequence[str] = ()) -> str:
    """Unique per process start; names the guilds it serves, so the heartbeat
    table alone tells how many workers each guild has alive."""
    where = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    return f"{GUILD_SEP.join(guilds)}@{where}" if guilds else where


def guilds_of(worker_id: str) -> list[str]:
    head, at, _ = worker_id.partition("@")
    return head.split(GUILD_SEP) if at else []


class Heartbeat:
    """Beats every ``reclaim_seconds / 5``; a worker is dead once it missed three
    beats, and a reaper round runs every beat, so a dead worker's deliveries are
    back in their queues within ``reclaim_seconds`` of its last beat."""

    def __init__(self, client: redis.Redis[bytes], worker_id: str, reaper: Reaper) -> None:
        self.client = client
        self.worker_id = worker_id
        self.reaper = reaper
        self.interval = reaper.lapse_seconds / MISSED_BEATS
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    @classmethod
    def for_worker(
        cls,
        address: BrokerAddress,
        worker_id: str,
        reclaim_seconds: float,
        priority_steps: list[int],
        sep: str,
        **client_options: Any,
    ) -> Heartbeat:
        interval = reclaim_seconds / BEATS_PER_RECLAIM
        client = address.client(
            socket_timeout=max(interval, 1.0),
            socket_connect_timeout=max(interval, 1.0),
            socket_keepalive=True,
            **client_options,
        )
        return cls(client, worker_id, Reaper(client, MISSED_BEATS * interval, priority_steps, sep))

    def beat(self) -> None:
        self.client.zadd(keys.HEARTBEATS, {self.worker_id: time.time()})

    def round(self) -> int:
        """One beat and, if this worker holds the reaper lock, one reaper run."""
        self.beat()
        lock = self.client.set(
            keys.REAPER_LOCK, self.worker_id, nx=True, px=max(int(self.interval * 1000), 100)
        )
        return self.reaper.reap() if lock else 0

    def start(self) -> None:
        try:
            self.round()
        except redis.RedisError as exc:
            self._failing = True
            logger.warning(f"heartbeat of {self.worker_id} failed, retrying: {exc}")
        self._thread = threading.Thread(target=self._run, name="raptorbus-heartbeat", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.round()
            except redis.RedisError as exc:
                if not self._failing:
                    logger.warning(f"heartbeat of {self.worker_id} failed, retrying: {exc}")
                self._failing = True
            else:
                if self._failing:
                    logger.info(f"heartbeat of {self.worker_id} is back")
                self._failing = False

    def stop(self) -> None:
        """Stop beating and mark this worker dead at once, so whatever it still
        holds (nothing, after a warm shutdown) goes back at the next reaper round."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval + 5)
        try:
            self.client.zadd(keys.HEARTBEATS, {self.worker_id: 0})
        except redis.RedisError as exc:
            logger.warning(f"could not mark worker {self.worker_id} stopped: {exc}")
        close_client(self.client)


def make_heartbeat_step(heartbeat: Heartbeat) -> type[bootsteps.StartStopStep]:
    """A worker bootstep that beats from before the consumer starts until after it
    stopped (and has handed its prefetched messages back)."""

    class HeartbeatStep(bootsteps.StartStopStep):
        name = "raptorbus.Heartbeat"
        requires = ("celery.worker.components:Pool",)

        def start(self, worker: Any) -> None:
            heartbeat.start()

        def stop(self, worker: Any) -> None:
            heartbeat.stop()

        def terminate(self, worker: Any) -> None:
            heartbeat.stop()

    return HeartbeatStep
