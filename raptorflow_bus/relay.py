"""The emitting process's side of the outbox: it spools while the broker is
unreachable or while this producer's earlier rows still wait, and runs the
thread that drains them once the broker answers (``outbox`` is the storage)."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from raptorflow_bus.breaker import Breaker
from raptorflow_bus.errors import BrokerUnavailable
from raptorflow_bus.logs import log
from raptorflow_bus.outbox import Outbox

if TYPE_CHECKING:
    from raptorflow_bus.publisher import Prepared, Publisher


class Relay:
    """The emitting process's drainer: a daemon thread that runs while this
    broker's rows wait in the outbox, tries the broker when the breaker allows,
    and drains as soon as it answers.

    It also keeps each producer's order while the broker is back but rows of
    this producer still wait: ``spool_if_behind`` sends a new event to the
    outbox behind them rather than letting it overtake them."""

    def __init__(self, outbox: Outbox, breaker: Breaker, connect: Callable[[], Publisher]) -> None:
        self.outbox = outbox
        self.breaker = breaker
        self._connect = connect
        self._pid = 0
        self._forked()

    def _forked(self) -> None:
        """Start afresh in a forked child (a worker's pool): the parent's thread is
        not there, its lock may be held by it, and the child is a new producer."""
        if self._pid == os.getpid():
            return
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._behind = False
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def behind(self) -> bool:
        """Whether rows of this producer wait in the outbox."""
        self._forked()
        return self._behind

    def spool(self, prepared: Sequence[Prepared]) -> None:
        self._forked()
        with self._lock:
            self.outbox.spool(prepared)
            self._behind = True
            self._ensure_running()

    def spool_if_behind(self, prepared: Sequence[Prepared]) -> bool:
        self._forked()
        with self._lock:
            if not self._behind:
                return False
            self.outbox.spool(prepared)
            self._ensure_running()
            return True

    def start(self) -> None:
        """Drain in the background if rows wait for this broker (left by anyone)."""
        self._forked()
        with self._lock:
            if self.outbox.depth():
                self._ensure_running()

    def stop(self, timeout: float = 5.0) -> None:
        self._forked()
        with self._lock:
            thread, self._thread = self._thread, None
            self._stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _ensure_running(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(self._stop,), name="raptorbus-outbox", daemon=True
        )
        self._thread.start()

    def _run(self, stop: threading.Event) -> None:
        idle = Breaker("outbox drain", quiet=True)
        while not stop.is_set():
            drained = self._drain_once()
            try:
                if self._settled(stop):
                    return
            except sqlite3.Error as exc:
                log(logging.ERROR, f"outbox unreadable, retrying: {exc}")
            if drained:
                idle.success()
            else:
                idle.failure()
            stop.wait(max(self.breaker.remaining(), idle.remaining()))

    def _settled(self, stop: threading.Event) -> bool:
        """Whether the thread is done; under the lock, so that a spool racing
        with the thread's exit always finds a thread to drain it."""
        with self._lock:
            if stop.is_set():
                return True
            if self.outbox.own_depth() == 0:
                self._behind = False
            if self.outbox.depth() == 0:
                self._thread = None
                return True
            return False

    def _drain_once(self) -> int:
        if not self.breaker.allow():
            return 0
        try:
            publisher = self._connect()
        except BrokerUnavailable as exc:
            self.breaker.failure(str(exc))
            return 0
        except Exception as exc:
            log(logging.ERROR, f"outbox relay cannot connect: {exc!r}")
            return 0

        def publish(items: list[Prepared]) -> None:
            try:
                publisher.publish(items)
            except BrokerUnavailable as exc:
                self.breaker.failure(str(exc))
                raise
            self.breaker.success()

        try:
            return self.outbox.drain(publish)
        except Exception as exc:
            log(logging.ERROR, f"outbox drain failed: {exc!r}")
            return 0
