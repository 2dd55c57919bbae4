"""The bus side's only handler during a benchmark: loaded by a real
``raptorbus worker research`` through ``RAPTORBUS_HANDLERS=bench.noop_handlers``,
so RaptorFlow's own research handlers do not run and the worker does exactly
what plain Celery's no-op task does (``bench.plain_app``): record its start."""

from __future__ import annotations

from typing import Any

from bench import marks
from raptorflow_bus import HandlerGroup

handlers = HandlerGroup("research")


@handlers.on("signal.detected")
def bench_noop(signal: Any) -> None:
    marks.record(signal.signal_id)


GROUPS = (handlers,)
