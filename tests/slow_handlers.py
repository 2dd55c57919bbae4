"""A handler module for shutdown tests: each run takes a second, so a shutdown
lands while one is running. Loaded by workers through RAPTORBUS_HANDLERS."""

import time
from typing import Any

from raptorflow_bus import HandlerGroup

handlers = HandlerGroup("research")


@handlers.on("signal.detected")
def slow_score(signal: Any) -> None:
    time.sleep(1.0)


GROUPS = (handlers,)
