"""Celery's worker consumer, with every message it would log and drop sent to
the dead-letter queue instead: an undecodable body (a pickle), a task name no
handler has, a message that is not a task, and a body over the size limit
(which Celery would run)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from celery.worker.consumer import Consumer

from raptorflow_bus.quarantine import TASK_BODY_SLACK, oversized, quarantine

if TYPE_CHECKING:
    from raptorflow_bus.bus import Bus


def make_guild_consumer(bus: Bus, consumers: Sequence[str]) -> type[Consumer]:
    """The consumer class for a worker of ``consumers``, bound to ``bus``."""
    guild_by_queue = {bus.topology.handler_queue(c): c for c in consumers}

    def guild_of(message: Any) -> str:
        queue = str((message.delivery_info or {}).get("routing_key") or "")
        return guild_by_queue.get(queue, "+".join(consumers))

    class GuildConsumer(Consumer):
        def on_decode_error(self, message: Any, exc: Exception) -> None:
            reason = f"cannot decode {message.content_type!r} body: {exc}"
            quarantine(bus, guild_of(message), reason, type(exc).__name__, body=message.body)
            message.ack()

        def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
            name = (message.headers or {}).get("task", "?")
            reason = f"no handler is registered as task {name!r}"
            quarantine(bus, guild_of(message), reason, "NotRegistered", body=message.body)
            message.ack()

        def on_unknown_message(self, body: Any, message: Any) -> None:
            reason = "not a Celery task message (no task header)"
            quarantine(bus, guild_of(message), reason, "UnknownMessage", body=message.body)
            message.ack()

        def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
            quarantine(bus, guild_of(message), str(exc), type(exc).__name__, body=message.body)
            message.ack()

        def create_task_handler(self, *args: Any, **kwargs: Any) -> Callable[[Any], Any]:
            receive = super().create_task_handler(*args, **kwargs)

            def on_task_received(message: Any) -> Any:
                too_big = oversized(bus, message.body, TASK_BODY_SLACK)
                if too_big:
                    quarantine(
                        bus, guild_of(message), too_big, "PayloadTooLarge", body=message.body
                    )
                    message.ack()
                    return None
                return receive(message)

            return on_task_received

    return GuildConsumer
