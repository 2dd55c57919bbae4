"""A circuit breaker, so that an emit during a broker outage costs a local write
instead of a connect timeout.

After a failure the circuit is open for an interval (0.5 s, doubling on each
failure in a row up to a cap); while it is open, callers skip the broker. Once
the interval has passed the next caller tries again: success closes the circuit
and resets the interval, another failure reopens it for twice as long. The
breaker logs the start and the end of an outage once each, not every attempt."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from raptorflow_bus.logs import log

FIRST_SECONDS = 0.5
CAP_SECONDS = 10.0


class Breaker:
    def __init__(
        self,
        name: str,
        *,
        first_seconds: float = FIRST_SECONDS,
        cap_seconds: float = CAP_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        quiet: bool = False,
    ) -> None:
        self.name = name
        self.first_seconds = first_seconds
        self.cap_seconds = cap_seconds
        self._clock = clock
        self._quiet = quiet
        self._lock = threading.Lock()
        self._interval = 0.0
        self._open_until = 0.0
        self._opened_at: float | None = None

    @property
    def is_open(self) -> bool:
        """Whether the last attempt failed (the outage is not known to be over)."""
        with self._lock:
            return self._opened_at is not None

    def allow(self) -> bool:
        """Whether a caller should try now: the circuit is closed, or its interval passed."""
        if self._open_until == 0.0:
            return True  # closed: every emit asks, so no lock for the common answer
        with self._lock:
            return self._clock() >= self._open_until

    def remaining(self) -> float:
        """Seconds until ``allow()`` turns true (0 when it is true)."""
        with self._lock:
            return max(0.0, self._open_until - self._clock())

    def failure(self, cause: str = "") -> float:
        """Open (again) for the next interval of the backoff; return that interval."""
        with self._lock:
            now = self._clock()
            first = self._opened_at is None
            self._interval = (
                self.first_seconds if first else min(self.cap_seconds, self._interval * 2)
            )
            self._open_until = now + self._interval
            if first:
                self._opened_at = now
            interval = self._interval
        if first and not self._quiet:
            log(logging.WARNING, f"{self.name} unreachable: {cause}")
        return interval

    def success(self) -> None:
        """Close the circuit and reset the backoff."""
        if self._opened_at is None and self._open_until == 0.0:
            return  # already closed (a racing failure() wins either way)
        with self._lock:
            opened_at = self._opened_at
            self._interval = 0.0
            self._open_until = 0.0
            self._opened_at = None
            now = self._clock()
        if opened_at is not None and not self._quiet:
            log(logging.WARNING, f"{self.name} reachable again after {now - opened_at:.1f}s")
