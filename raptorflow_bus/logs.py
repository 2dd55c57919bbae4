"""Every line of logger ``bus`` ends with the event's workspace, correlation and
type, so one grep on a correlation id follows a request across processes."""

from __future__ import annotations

import logging
from typing import Any

from raptorflow_bus.context import correlation_id_var, event_type_var, workspace_id_var
from raptorflow_bus.envelope import Envelope

logger = logging.getLogger("bus")


def log(
    level: int,
    message: str,
    *,
    envelope: Envelope | None = None,
    event_type: str | None = None,
    **fields: Any,
) -> None:
    if not logger.isEnabledFor(level):
        return
    ws: str | None
    corr: str | None
    etype: str | None
    if envelope is not None:
        ws, corr, etype = envelope.workspace_id, envelope.correlation_id, envelope.type
    else:
        ws, corr = workspace_id_var.get(), correlation_id_var.get()
        etype = event_type or event_type_var.get()
    extra = "".join(f" {k}={v}" for k, v in fields.items())
    logger.log(
        level,
        "%s workspace_id=%s correlation_id=%s event_type=%s%s",
        message,
        ws or "-",
        corr or "-",
        etype or "-",
        extra,
    )


class OncePerOutage(logging.Filter):
    """Celery logs every failed reconnect attempt ("Cannot connect to ... Trying
    again"); during a long outage that buries the log. Let the first through and
    drop the rest until a connection is made again."""

    RETRY_LOGGER = "celery.worker.consumer.consumer"
    CONNECTED_LOGGER = "celery.worker.consumer.connection"

    def __init__(self) -> None:
        super().__init__()
        self._reported = False

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        if record.name == self.CONNECTED_LOGGER:
            self._reported = False
            return True
        if message.startswith("consumer: Cannot connect to"):
            if self._reported:
                return False
            self._reported = True
        return True

    @classmethod
    def install(cls) -> OncePerOutage:
        log_filter = cls()
        for name in (cls.RETRY_LOGGER, cls.CONNECTED_LOGGER):
            target = logging.getLogger(name)
            if not any(isinstance(f, cls) for f in target.filters):
                target.addFilter(log_filter)
        return log_filter
