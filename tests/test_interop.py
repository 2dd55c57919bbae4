"""A Celery user reaches the guild workers with stock tools: a default Celery
app given only the broker URL pings them, lists their queues and sends a task
to a handler queue, and a default Kombu client declares its own queue on the
bus's exchange without corrupting anything (Kombu's default key separator)."""

from __future__ import annotations

from pathlib import Path

import pytest
from celery import Celery
from kombu import Connection, Exchange, Queue

from raptorflow_bus import Bus
from raptorflow_bus.dispatch import handler_task_id
from raptorflow_bus.topology import priority_list
from tests.harness import guild_worker, wait_until
from tests.payloads import VALID

pytestmark = [pytest.mark.broker, pytest.mark.timeout(120)]


def succeeded(bus: Bus, handler: str) -> int:
    return int(bus.get_metrics()["handlers"].get(handler, {}).get("succeeded", 0))


def test_a_stock_celery_app_pings_lists_queues_and_sends_a_task(
    bus: Bus, redis_url: str, tmp_path: Path
) -> None:
    stock = Celery("stock", broker=redis_url, set_as_current=False)
    with guild_worker(redis_url, tmp_path / "worker.log"):
        replies: list[dict[str, object]] = []
        wait_until(
            lambda: bool(replies.extend(stock.control.inspect(timeout=1).ping() or {}) or replies),
            timeout=60,
            what="the research worker to answer a stock ping",
        )
        queues = stock.control.inspect(timeout=2).active_queues() or {}
        names = {q["name"] for qs in queues.values() for q in qs}
        # The event queue too: the worker reads it through its event step (Flower
        # lists only the queues these replies name).
        assert {"research", "research.handlers"} <= names

        envelope = bus.prepare("signal.detected", VALID["signal.detected"], workspace_id="ws-1")[0]
        task_name = "research.score_signal"
        stock.send_task(
            task_name,
            kwargs={"envelope": envelope.model_dump(mode="json")},
            queue="research.handlers",
            task_id=handler_task_id(envelope.id, task_name),
        )
        wait_until(lambda: succeeded(bus, task_name) == 1, timeout=60, what="the sent task")


def test_a_default_kombu_client_binds_its_own_queue_to_the_exchange(
    bus: Bus, redis_url: str
) -> None:
    exchange = Exchange("raptorflow.events", type="topic")
    audit = Queue("external.audit", exchange, routing_key="raptorflow.events.#")
    with Connection(redis_url) as conn:
        audit(conn.default_channel).declare()
        with conn.Producer() as producer:
            producer.publish(
                {"probe": 1}, exchange=exchange, routing_key="raptorflow.events.probe.x"
            )
    assert bus.redis.llen("external.audit") == 1
    bus.emit("signal.detected", VALID["signal.detected"], workspace_id="ws-1")
    assert bus.redis.llen(priority_list("research", 6)) == 1
