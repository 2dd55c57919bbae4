"""Is anything stuck, where, since when? One reading of the whole deployment,
shared by ``bus.health()``, ``raptorbus stats``, the Prometheus exporter and
the ``bus.health`` events workers emit.

A guild is *stalled* when messages wait for it and no worker of it beats:
nothing will drain them until someone starts one, which is the one state an
operator must hear about at once. Liveness comes from the heartbeats the
reaper already relies on (``heartbeat``), so "alive" means the same to both."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import redis

from raptorflow_bus import keys
from raptorflow_bus.errors import BrokerUnavailable
from raptorflow_bus.events import HealthStatus
from raptorflow_bus.heartbeat import BEATS_PER_RECLAIM, MISSED_BEATS, guilds_of
from raptorflow_bus.queues import QueueState, all_queue_states

if TYPE_CHECKING:
    from raptorflow_bus.bus import Bus

OK = "ok"
NO_WORKER = "no_worker"
STALLED = "stalled"
HANDLER_COUNTERS = ("succeeded", "failed", "retried", "dead_lettered")


@dataclass(frozen=True)
class GuildHealth:
    status: str
    workers_alive: int
    depth: int
    event_depth: int
    task_depth: int
    oldest_age_seconds: float | None
    succeeded: int
    failed: int
    retried: int
    dead_lettered: int
    latency_p50_seconds: float | None
    latency_p99_seconds: float | None


def workers_alive(bus: Bus, now: float | None = None) -> dict[str, int]:
    """Live worker processes per guild: beaten within the reaper's lapse."""
    lapse = bus.reclaim_seconds / BEATS_PER_RECLAIM * MISSED_BEATS
    cutoff = (time.time() if now is None else now) - lapse
    ids: list[bytes] = bus.redis.zrangebyscore(keys.HEARTBEATS, f"({cutoff}", "+inf")
    alive = dict.fromkeys(bus.topology.consumers, 0)
    for raw in ids:
        for guild in guilds_of(raw.decode()):
            alive[guild] = alive.get(guild, 0) + 1
    return alive


def guild_health(
    bus: Bus, name: str, states: dict[str, QueueState], metrics: dict[str, Any], alive: int
) -> GuildHealth:
    events = states[bus.topology.event_queue(name)]
    tasks = states[bus.topology.handler_queue(name)]
    ages = [a for a in (events.oldest_age_seconds, tasks.oldest_age_seconds) if a is not None]
    depth = events.depth + tasks.depth
    handled = {
        counter: sum(
            counts.get(counter, 0)
            for handler, counts in metrics["handlers"].items()
            if handler.startswith(name + ".")
        )
        for counter in HANDLER_COUNTERS
    }
    latency = metrics["latency"].get(name, {})
    status = OK if alive else (STALLED if depth else NO_WORKER)
    return GuildHealth(
        status=status,
        workers_alive=alive,
        depth=depth,
        event_depth=events.depth,
        task_depth=tasks.depth,
        oldest_age_seconds=max(ages) if ages else None,
        latency_p50_seconds=latency.get("p50_seconds"),
        latency_p99_seconds=latency.get("p99_seconds"),
        **handled,
    )


def read_health(bus: Bus, metrics: dict[str, Any] | None = None) -> dict[str, Any]:
    """The whole reading as plain data. A broker that cannot be reached is
    reported (status ``down``), not raised: a health check must answer."""
    outbox = bus.outbox_stats()
    try:
        states = {q.name: q for q in all_queue_states(bus)}
        metrics = bus.metrics.snapshot() if metrics is None else metrics
        alive = workers_alive(bus)
        master = bus.current_master()
    except (redis.RedisError, BrokerUnavailable) as exc:
        return {
            "time": time.time(),
            "status": HealthStatus.DOWN.value,
            "error": str(exc),
            "guilds": {},
            "dlq_depth": None,
            "outbox": outbox,
            "master": None,
        }
    guilds = {
        name: asdict(guild_health(bus, name, states, metrics, alive.get(name, 0)))
        for name in bus.topology.consumers
    }
    stalled = any(g["status"] == STALLED for g in guilds.values())
    status = HealthStatus.DEGRADED if stalled or outbox["depth"] else HealthStatus.HEALTHY
    return {
        "time": time.time(),
        "status": status.value,
        "guilds": guilds,
        "queues": {
            q.name: {"depth": q.depth, "oldest_age_seconds": q.oldest_age_seconds}
            for q in states.values()
        },
        "dlq_depth": metrics["dlq"]["depth"],
        "dlq_evicted": metrics["dlq"]["evicted"],
        "outbox": outbox,
        "master": master,
    }


def stalled_guilds(health: dict[str, Any]) -> list[str]:
    return [name for name, g in health["guilds"].items() if g["status"] == STALLED]
