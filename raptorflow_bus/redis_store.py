"""The Redis ``Store``: counters in one hash, dead letters in a hash plus a
sorted index (oldest first, so capacity evicts the oldest atomically), and
their failure groups' aggregates, updated by the same scripts that store and
remove letters (``lua/dlq_groups.lua``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import redis

from raptorflow_bus import keys, scripts
from raptorflow_bus.deadletter import DeadLetter
from raptorflow_bus.dlq_groups import (
    GroupPosition,
    GroupSummary,
    cells_from_hash,
    group_of,
    positions_before,
    summarise,
    timestamp,
    workspace_token,
)
from raptorflow_bus.errors import NotReplicated
from raptorflow_bus.packed_script import PackedScript
from raptorflow_bus.replica_acks import ReplicaAcks
from raptorflow_bus.store import Counts, Position
from raptorflow_bus.wire import Wire

logger = logging.getLogger("bus")
T = TypeVar("T")

PREFIX = keys.PREFIX
METRICS_KEY = keys.METRICS
DLQ_ENTRIES_KEY = keys.DLQ_ENTRIES
DLQ_INDEX_KEY = keys.DLQ_INDEX
DONE_PREFIX = keys.DONE_PREFIX
FIELD_SEP = "|"
# A group keeps the latest message of each workspace, this long at most.
SAMPLE_LIMIT = 1_000
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
        self._dlq_remove = scripts.register(client, "dlq_remove")
        # Every handler run makes the claim and finish calls: packed, on a kept
        # connection, as is every call that must wait for replica acks.
        self._wire = Wire(client)
        self._claim = PackedScript("claim", self._wire)
        self._finish = PackedScript("finish", self._wire)
        self._put_one = PackedScript("dlq_put", self._wire)

    def close(self) -> None:
        """Closes the kept connection (the client's pool is its owner's to close)."""
        self._wire.close()

    def claim(self, task_id: str, counts: Counts, duplicate_counts: Counts) -> bool:
        dup = [x for (s, c), n in duplicate_counts.items() for x in (metric_field(s, c), n)]
        new = [x for (s, c), n in counts.items() for x in (metric_field(s, c), n)]
        result = self._claim([DONE_PREFIX + task_id, METRICS_KEY], [len(dup) // 2, *dup, *new])
        return bool(int(result))

    def finish(self, task_id: str, ttl_seconds: int, counts: Counts) -> None:
        """The done record of a run whose handler has already succeeded. Without
        it the run's redelivery would run the handler again, so a broker that
        cannot be reached (restarting, failing over: a few seconds) is waited
        for, up to ``FINISH_PATIENCE_SECONDS``. Only refused or dropped
        connections (a broker that is gone) are retried here, not timeouts.

        Retries come often: when the broker is back, the worker reconnects and
        hands this run's delivery back (its channel died), and the record must
        be written before another pool child claims the copy.

        With replica acks the record must also reach the replicas, or a
        failover right after brings back a master that never saw it, and the
        run's task with it: the record is written again until they confirm it
        (a record on any master is true, the handler did run)."""
        deadline = time.monotonic() + FINISH_PATIENCE_SECONDS
        done = DONE_PREFIX + task_id
        fields = [x for (s, c), n in counts.items() for x in (metric_field(s, c), n)]
        acks = self.replica_acks
        try:
            _patiently(
                deadline,
                lambda: self._finish([done, METRICS_KEY], [ttl_seconds, *fields], acks),
            )
            return
        except NotReplicated:
            pass

        def again(pipe: Any) -> None:
            pipe.set(done, b"1", ex=ttl_seconds)

        def confirmed() -> bool:
            return acks.confirm(self.client, again, lambda: time.monotonic() < deadline)

        if not _patiently(deadline, confirmed):
            logger.warning(
                f"the done record of {task_id} was not confirmed by {acks.replicas} "
                f"replica(s) within {FINISH_PATIENCE_SECONDS:.0f} s; a failover now "
                "would run it again"
            )

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
        evicted: list[Any] = self._put_one(
            [DLQ_ENTRIES_KEY, DLQ_INDEX_KEY, METRICS_KEY, keys.DLQ_CELLS, keys.DLQ_GROUPS],
            self.put_args(letter, capacity, time.time()),
            self.replica_acks,
        )
        return [e.decode() if isinstance(e, bytes) else str(e) for e in evicted]

    @staticmethod
    def put_args(letter: DeadLetter, capacity: int, now: float) -> list[Any]:
        """``dlq_put.lua``'s ARGV for ``letter`` stored at ``now``."""
        key = group_of(letter)
        return [
            letter.id,
            letter.model_dump_json(),
            repr(now),
            capacity,
            metric_field("dlq", "evicted"),
            keys.DLQ_PREFIX,
            key.id,
            workspace_token(letter.workspace_id),
            letter.event_type or "",
            repr(timestamp(letter.first_failed_at)),
            repr(timestamp(letter.last_failed_at)),
            key.handler,
            key.guild,
            key.exception_type,
            key.pattern,
            letter.message[:SAMPLE_LIMIT],
        ]

    def dlq_put_many(self, letters: Iterable[DeadLetter], capacity: int) -> None:
        """Store many letters in one pipeline (imports, tests seeding a full
        queue); each is one ``dlq_put.lua`` call, as ``dlq_put`` makes."""
        pipe = self.client.pipeline(transaction=False)
        now = time.time()
        script_keys = [DLQ_ENTRIES_KEY, DLQ_INDEX_KEY, METRICS_KEY, keys.DLQ_CELLS, keys.DLQ_GROUPS]
        for n, letter in enumerate(letters):
            args = self.put_args(letter, capacity, now + n * 1e-4)
            self._dlq_put(keys=script_keys, args=args, client=pipe)
        pipe.execute()

    def dlq_get(self, letter_id: str) -> DeadLetter | None:
        raw = self.client.hget(DLQ_ENTRIES_KEY, letter_id)
        return None if raw is None else DeadLetter.model_validate_json(raw)

    def dlq_all(self) -> list[DeadLetter]:
        ids: list[bytes] = self.client.zrange(DLQ_INDEX_KEY, 0, -1)
        if not ids:
            return []
        raws = self.client.hmget(DLQ_ENTRIES_KEY, ids)
        return [DeadLetter.model_validate_json(r) for r in raws if r is not None]

    def dlq_page(self, after: Position | None, count: int) -> list[tuple[Position, DeadLetter]]:
        """ZRANGEBYSCORE from the cursor's score, then one HMGET per batch.

        Each batch resumes from the last position read rather than an offset,
        so letters removed meanwhile cannot shift a live one out of the walk.
        Letters sharing the cursor's score sort by id (Redis's tie order) and
        those up to the cursor come first in a batch and are skipped; a letter
        removed between the two reads is left out."""
        found: list[tuple[Position, DeadLetter]] = []
        cursor = after
        while len(found) < count:
            fresh = self._positions_after(DLQ_INDEX_KEY, cursor, count - len(found))
            if not fresh:
                break
            cursor = fresh[-1]
            found.extend(self._letters_at(fresh))
        return found

    def _letters_at(self, positions: list[Position]) -> list[tuple[Position, DeadLetter]]:
        raws = self.client.hmget(DLQ_ENTRIES_KEY, [letter_id for _, letter_id in positions])
        return [
            (position, DeadLetter.model_validate_json(raw))
            for position, raw in zip(positions, raws, strict=True)
            if raw is not None
        ]

    def _positions_after(self, key: str, cursor: Position | None, count: int) -> list[Position]:
        low = "-inf" if cursor is None else repr(cursor[0])
        num = count
        while True:
            rows: list[tuple[bytes, float]] = self.client.zrangebyscore(
                key, low, "+inf", start=0, num=num, withscores=True
            )
            positions = [(float(score), member.decode()) for member, score in rows]
            fresh = [p for p in positions if cursor is None or p > cursor]
            if fresh or len(rows) < num:
                return fresh[:count]
            num *= 2  # every row was a tie at or before the cursor: read further

    def dlq_remove(self, letter_ids: Iterable[str]) -> int:
        ids = list(letter_ids)
        if not ids:
            return 0
        removed = self._dlq_remove(
            keys=[DLQ_ENTRIES_KEY, DLQ_INDEX_KEY, keys.DLQ_CELLS, keys.DLQ_GROUPS],
            args=[keys.DLQ_PREFIX, *ids],
        )
        return int(removed)

    def dlq_groups(
        self, workspace: str | None, after: GroupPosition | None, count: int
    ) -> list[tuple[GroupPosition, GroupSummary]]:
        zset = keys.DLQ_GROUPS if workspace is None else keys.dlq_workspace_groups(workspace)
        found: list[tuple[GroupPosition, GroupSummary]] = []
        cursor = after
        while len(found) < count:
            fresh = self._groups_before(zset, cursor, count - len(found))
            if not fresh:
                break
            cursor = fresh[-1]
            pipe = self.client.pipeline(transaction=False)
            for _, group_id in fresh:
                pipe.hgetall(keys.dlq_group(group_id))
            for position, raw in zip(fresh, pipe.execute(), strict=True):
                summary = self._summary(raw, workspace)
                if summary is not None:
                    found.append((position, summary))
        return found

    def _groups_before(
        self, zset: str, cursor: GroupPosition | None, count: int
    ) -> list[GroupPosition]:
        high = "+inf" if cursor is None else repr(cursor[0])
        num = count
        while True:
            rows: list[tuple[bytes, float]] = self.client.zrevrangebyscore(
                zset, high, "-inf", start=0, num=num, withscores=True
            )
            fresh = positions_before(((float(s), m.decode()) for m, s in rows), cursor)
            if fresh or len(rows) < num:
                return fresh[:count]
            num *= 2  # every row was a tie at or before the cursor: read further

    @staticmethod
    def _summary(raw: dict[bytes, bytes], workspace: str | None) -> GroupSummary | None:
        parsed = cells_from_hash({k.decode(): v.decode() for k, v in raw.items()})
        if parsed is None:
            return None
        only = None if workspace is None else workspace_token(workspace)
        return summarise(*parsed, only=only)

    def dlq_group(self, group_id: str, workspace: str | None) -> GroupSummary | None:
        return self._summary(self.client.hgetall(keys.dlq_group(group_id)), workspace)

    def dlq_group_page(
        self, group_id: str, workspace: str | None, after: Position | None, count: int
    ) -> list[tuple[Position, DeadLetter]]:
        members = keys.dlq_members(
            group_id, None if workspace is None else workspace_token(workspace)
        )
        found: list[tuple[Position, DeadLetter]] = []
        cursor = after
        while len(found) < count:
            fresh = self._positions_after(members, cursor, count - len(found))
            if not fresh:
                break
            cursor = fresh[-1]
            found.extend(self._letters_at(fresh))
        return found

    def dlq_count(self) -> int:
        return int(self.client.hlen(DLQ_ENTRIES_KEY))

    def clear(self) -> None:
        keys = list(self.client.scan_iter(match=PREFIX + "*", count=1000))
        if keys:
            self.client.delete(*keys)


def _patiently(deadline: float, call: Callable[[], T]) -> T:
    """``call()``, again after a refused or dropped connection until ``deadline``."""
    pause = 0.05
    while True:
        try:
            return call()
        except redis.ConnectionError:
            if time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.25)
