"""Exponential backoff for handler retries, capped below the broker's visibility
timeout: a countdown longer than that would be restored and run twice (kombu#337)."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    base_seconds: float = 2.0
    cap_seconds: float = 300.0
    jitter: bool = True

    def countdown(self, retries: int, rng: random.Random | None = None) -> float:
        """Delay before retry number ``retries + 1``: base * 2**retries, plus up to 10%."""
        delay: float = min(self.cap_seconds, self.base_seconds * 2.0**retries)
        if self.jitter:
            uniform = rng.uniform if rng is not None else random.uniform
            delay += uniform(0.0, delay * 0.1)
        return min(delay, self.cap_seconds)
