"""The Redis ``Store``: counters in one hash, dead letters in a hash plus a
sorted index (oldest first, so capacity evicts the oldest atomically)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import redis

from raptorflow_bus import keys, scripts
from raptorflow_bus.deadletter import DeadLetter
from raptorflow_bus.replica_acks import ReplicaAcks
from raptorflow_bus.store import Counts

PREFIX = keys.PREFIX
METRICS_KEY = keys.METRICS
DLQ_ENTRIES_KEY = keys.DLQ_ENTRIES
DLQ_INDEX_KEY = keys.DLQ_INDEX
DONE_PREFIX = keys.DONE_PREFIX
FIELD_SEP = "|"
# Longer than a restart from the AOF or a Sentinel failover takes (Sentinel's
# default down-after-milliseconds is 30 s); a broker gone for longer fails the
# task, whose redelivery then runs the handler again (at-least-once).
FINISH_PATIENCE_SECONDS = 60.0


def metric_field(scope: str, counter: str) -> str:
    return f"{scope}{FIELD_SEP}{counter}"


class RedisStore:
    def __init__(self, client: redis.Redis[bytes], replica_acks: ReplicaAcks | None = None) -> None:
        self.client = client
        self.replica_acks = replica_acks or ReplicaAcks()
        self._dlq_put = scripts.register(client, "dlq_put")
        self._claim = scripts.register(client, "claim")
        self._finish = scripts.register(client, "finish")

    def claim(self, task_id: str, counts: Counts, duplicate_counts: Counts) -> bool:
        dup = [x for (s, c), n in duplicate_counts.items() for x in (metric_field(s, c), n)]
        new = [x for (s, c), n in counts.items() for x in (metric_field(s, c), n)]
        result = self._claim(
            keys=[DONE_PREFIX + task_id, METRICS_KEY], args=[len(dup) // 2, *dup, *new]
        )
        return bool(int(result))

    def finish(self, task_id: str, ttl_seconds: int, counts: Counts) -> None:
        """The done record of a run whose handler has already succeeded. Without
        it the run's redelivery would run the handler again, so a broker that
        cannot be reached (restarting, failing over: a few seconds) is waited
        for, up to ``FINISH_PATIENCE_SECONDS``. Only refused or dropped
        connections (a broker that is gone) are retried here, not timeouts.

        Retries come often: when the broker is back, the worker reconnects and
        hands this run's delivery back (its channel died), and the record must
        be written before another pool child claims the copy."""
        deadline = time.monotonic() + FINISH_PATIENCE_SECONDS
        pause = 0.05
        fields = [x for (s, c), n in counts.items() for x in (metric_field(s, c), n)]
        while True:
            try:
                self._finish(keys=[DONE_PREFIX + task_id, METRICS_KEY], args=[ttl_seconds, *fields])
                return
            except redis.ConnectionError:
                if time.monotonic() + pause > deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.25)

    @staticmethod
    def _add(pipe: Any, counts: Counts) -> None:
        for (scope, counter), n in counts.items():
            pipe.hincrby(METRICS_KEY, metric_field(scope, counter), n)

    def incr(self, counts: Counts) -> None:
        pipe = self.client.pipeline(transaction=False)
        self._add(pipe, counts)
        pipe.execute()

    def counters(self) -> dict[tuple[str, str], int]:
        raw: dict[bytes, bytes] = self.client.hgetall(METRICS_KEY)
        out: dict[tuple[str, str], int] = {}
        for field, value in raw.items():
            scope, _, counter = field.decode().rpartition(FIELD_SEP)
            out[(scope, counter)] = int(value)
        return out

    def dlq_put(self, letter: DeadLetter, capacity: int) -> list[str]:
        evicted: list[Any] = self.replica_acks.run_script(
            self.client,
            self._dlq_put,
            [DLQ_ENTRIES_KEY, DLQ_INDEX_KEY, METRICS_KEY],
            [
                letter.id,
                letter.model_dump_json(),
                repr(time.time()),
                capacity,
                metric_field("dlq", "evicted"),
            ],
        )
        return [e.decode() if isinstance(e, bytes) else str(e) for e in evicted]

    def dlq_get(self, letter_id: str) -> DeadLetter | None:
        raw = self.client.hget(DLQ_ENTRIES_KEY, letter_id)
        return None if raw is None else DeadLetter.model_validate_json(raw)

    def dlq_all(self) -> list[DeadLetter]:
        ids: list[bytes] = self.client.zrange(DLQ_INDEX_KEY, 0, -1)
        if not ids:
            return []
        raws = self.client.hmget(DLQ_ENTRIES_KEY, ids)
        return [DeadLetter.model_validate_json(r) for r in raws if r is not None]

    def dlq_remove(self, letter_ids: Iterable[str]) -> int:
        ids = list(letter_ids)
        if not ids:
            return 0
        pipe = self.client.pipeline(transaction=True)
        pipe.hdel(DLQ_ENTRIES_KEY, *ids)
        pipe.zrem(DLQ_INDEX_KEY, *ids)
        removed, _ = pipe.execute()
        return int(removed)

    def dlq_count(self) -> int:
        return int(self.client.hlen(DLQ_ENTRIES_KEY))

    def clear(self) -> None:
        keys = list(self.client.scan_iter(match=PREFIX + "*", count=1000))
        if keys:
            self.client.delete(*keys)
