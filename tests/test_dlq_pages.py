"""Paged reads of the dead-letter queue: the ``Store`` contract (``dlq_page``)
on the in-memory store and on a real Redis, and the cursor pagination and
filters that ``DeadLetterQueue.page`` builds on it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import redis

from raptorflow_bus import Bus, InvalidCursor
from raptorflow_bus.deadletter import DeadLetter
from raptorflow_bus.dlq import SCAN_BUDGET, LetterFilter, decode_cursor, encode_cursor
from raptorflow_bus.envelope import Envelope, utcnow
from raptorflow_bus.redis_store import DLQ_INDEX_KEY, RedisStore
from raptorflow_bus.store import Store
from raptorflow_bus.testing import eager_bus


def letter(n: int, workspace: str = "ws-a", event_type: str = "signal.detected") -> DeadLetter:
    now = utcnow()
    envelope = Envelope(
        type=event_type,
        payload={"n": n},
        workspace_id=workspace,
        correlation_id=f"corr-{n}",
        request_id=f"corr-{n}",
    )
    return DeadLetter(
        id=f"letter-{n:05d}",
        envelope=envelope,
        handler="research.score_signal",
        guild="research",
        exception_type="RuntimeError",
        message="boom",
        traceback="",
        attempts=4,
        first_failed_at=now,
        last_failed_at=now,
    )


def walk(store: Store, count: int) -> list[str]:
    ids: list[str] = []
    after = None
    while rows := store.dlq_page(after, count):
        assert len(rows) <= count
        ids.extend(letter.id for _, letter in rows)
        after = rows[-1][0]
    return ids


def test_a_paged_walk_sees_every_letter_once_oldest_first(store: Store) -> None:
    for n in range(23):
        store.dlq_put(letter(n), capacity=100)
    assert (
        walk(store, 5) == [d.id for d in store.dlq_all()] == [f"letter-{n:05d}" for n in range(23)]
    )
    assert walk(store, 100) == walk(store, 1)
    assert store.dlq_page(None, 1)[0][1] == store.dlq_get("letter-00000")


def test_a_replaced_letter_moves_behind_the_walk_and_removed_ones_vanish(store: Store) -> None:
    for n in range(6):
        store.dlq_put(letter(n), capacity=100)
    first = store.dlq_page(None, 2)
    assert [d.id for _, d in first] == ["letter-00000", "letter-00001"]
    store.dlq_put(letter(0), capacity=100)  # it failed again
    store.dlq_remove(["letter-00002"])
    rest = store.dlq_page(first[-1][0], 10)
    assert [d.id for _, d in rest] == [
        "letter-00003",
        "letter-00004",
        "letter-00005",
        "letter-00000",
    ]


def test_eviction_keeps_the_paged_order_consistent(store: Store) -> None:
    for n in range(5):
        store.dlq_put(letter(n), capacity=3)
    assert walk(store, 2) == ["letter-00002", "letter-00003", "letter-00004"]
    assert store.dlq_count() == 3


@pytest.mark.broker
def test_redis_ties_on_the_score_are_walked_by_id(redis_url: str) -> None:
    """Letters stored in the same clock tick share a score; the cursor's id
    part tells them apart, even when more share it than one batch holds."""
    client: redis.Redis[bytes] = redis.Redis.from_url(redis_url)
    client.flushdb()
    store = RedisStore(client)
    for n in range(9):
        store.dlq_put(letter(n), capacity=100)
    client.zadd(DLQ_INDEX_KEY, {f"letter-{n:05d}": 1000.0 for n in range(9)})
    assert walk(store, 2) == [f"letter-{n:05d}" for n in range(9)]
    client.close()


# DeadLetterQueue.page on top of it -------------------------------------------


def fill(bus: Bus, letters: list[DeadLetter]) -> None:
    for d in letters:
        bus.store.dlq_put(d, capacity=bus.topology.dlq_capacity)


def pages(bus: Bus, where: LetterFilter | None, limit: int) -> tuple[list[str], int]:
    ids: list[str] = []
    cursor = None
    calls = 0
    while True:
        page = bus.dlq.page(where, cursor=cursor, limit=limit)
        calls += 1
        assert len(page.letters) <= limit
        ids.extend(d.id for d in page.letters)
        if page.next_cursor is None:
            return ids, calls
        cursor = page.next_cursor


def test_cursor_pages_cover_the_queue_and_filters_hold() -> None:
    with eager_bus() as bus:
        fill(bus, [letter(n, "ws-a" if n % 3 else "ws-b") for n in range(30)])
        all_ids, _ = pages(bus, None, 7)
        assert all_ids == [f"letter-{n:05d}" for n in range(30)]
        ws_b, _ = pages(bus, LetterFilter(workspace_id="ws-b"), 4)
        assert ws_b == [f"letter-{n:05d}" for n in range(0, 30, 3)]
        assert pages(bus, LetterFilter(older_than=timedelta(days=1)), 5) == ([], 1)
        assert pages(bus, LetterFilter(event_type="agent.error"), 5)[0] == []


def test_a_rare_match_is_scanned_a_bounded_batch_at_a_time() -> None:
    """One match behind SCAN_BUDGET + 10 letters: the first page reads at most
    the budget and hands back a cursor rather than reading everything."""
    with eager_bus() as bus:
        many = [letter(n) for n in range(SCAN_BUDGET + 10)]
        fill(bus, [*many, letter(99_999, workspace="ws-rare")])
        first = bus.dlq.page(LetterFilter(workspace_id="ws-rare"), limit=10)
        assert first.letters == [] and first.next_cursor is not None
        ids, calls = pages(bus, LetterFilter(workspace_id="ws-rare"), 10)
        assert ids == ["letter-99999"] and calls == 2


def test_a_filtered_purge_walks_in_batches() -> None:
    with eager_bus() as bus:
        fill(bus, [letter(n, "ws-a" if n % 2 else "ws-b") for n in range(1200)])
        assert bus.dlq.purge(workspace_id="ws-b") == 600
        assert bus.dlq.count() == 600
        assert {d.workspace_id for d in bus.dlq.matching()} == {"ws-a"}


@pytest.mark.parametrize("bad", ["", "not-base64!", encode_cursor((1.0, "x"))[:-3] + "~~~", "Zm9v"])
def test_a_cursor_the_bus_did_not_hand_out_is_refused(bad: str) -> None:
    with pytest.raises(InvalidCursor):
        decode_cursor(bad)


def test_a_cursor_keeps_the_score_exact() -> None:
    position: Any = (1717171717.123456789, "id with spaces")
    assert decode_cursor(encode_cursor(position)) == position
