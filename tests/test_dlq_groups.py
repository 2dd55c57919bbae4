"""Failure groups of the dead-letter queue: messages normalised into groups,
the aggregates the stores keep as letters come and go (the ``Store`` contract
on the in-memory store and a real Redis), and on the bus: a group's letters
paged, replayed and purged; a payload edited (validated, audited) and
replayed with its original correlation id."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import redis

from raptorflow_bus import InvalidPayload
from raptorflow_bus.deadletter import DeadLetter
from raptorflow_bus.dlq import LetterFilter
from raptorflow_bus.dlq_groups import group_of, normalise
from raptorflow_bus.envelope import Envelope, utcnow
from raptorflow_bus.redis_store import RedisStore
from raptorflow_bus.store import Store

NOW = utcnow()


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("timeout after 3.2s", "timeout after 4.1s"),
        ("order 7f3a9c21 not found", "order 0b12ffe9 not found"),
        (
            "event 0b6f2b8e-8d3c-4a57-9a6e-0f2f0a9c1d11 rejected",
            "event 5d1f4e2a-1b2c-4d3e-8f9a-abcdefabcdef rejected",
        ),
        ("bad value 'alpha' for key", 'bad value "beta" for key'),
        ("campaign camp-1 uses blocked channel(s)", "campaign camp-22 uses blocked channel(s)"),
        ("pointer 0xdeadbeef", "pointer 0x1"),
    ],
)
def test_messages_that_differ_only_in_values_normalise_alike(a: str, b: str) -> None:
    assert normalise(a) == normalise(b)


def test_different_words_stay_different_groups() -> None:
    assert normalise("connection refused") != normalise("connection reset")
    assert normalise("timeout after 3.2s") == "timeout after <n>s"


def letter(
    n: int,
    workspace: str | None = "ws-a",
    message: str = "timeout after 3.2s",
    *,
    handler: str = "research.score_signal",
    event_type: str = "signal.detected",
    age: timedelta = timedelta(0),
) -> DeadLetter:
    when = NOW - age
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
        handler=handler,
        guild=handler.split(".")[0],
        exception_type="TimeoutError",
        message=message,
        traceback="",
        attempts=4,
        first_failed_at=when - timedelta(seconds=30),
        last_failed_at=when,
    )


def groups(store: Store, workspace: str | None = None) -> dict[str, tuple[int, tuple[str, ...]]]:
    return {
        g.key.pattern: (g.count, g.workspaces) for _, g in store.dlq_groups(workspace, None, 100)
    }


def test_groups_count_letters_per_workspace_and_follow_removals(store: Store) -> None:
    store.dlq_put(letter(1, "ws-a", "timeout after 3.2s", age=timedelta(hours=2)), 100)
    store.dlq_put(letter(2, "ws-b", "timeout after 4.1s", age=timedelta(hours=1)), 100)
    store.dlq_put(letter(3, "ws-a", "timeout after 9s"), 100)
    store.dlq_put(letter(4, "ws-b", "connection refused"), 100)
    assert groups(store) == {
        "timeout after <n>s": (3, ("ws-a", "ws-b")),
        "connection refused": (1, ("ws-b",)),
    }
    assert groups(store, "ws-a") == {"timeout after <n>s": (2, ("ws-a",))}

    gid = group_of(letter(1)).id
    whole = store.dlq_group(gid, None)
    mine = store.dlq_group(gid, "ws-b")
    assert whole is not None and mine is not None
    assert whole.first_seen == (NOW - timedelta(hours=2, seconds=30))
    assert whole.last_seen == NOW and whole.sample == "timeout after 9s"
    # One workspace's view holds its own times and messages only.
    assert (mine.count, mine.first_seen) == (1, NOW - timedelta(hours=1, seconds=30))
    assert mine.sample == "timeout after 4.1s" and mine.workspaces == ("ws-b",)
    assert mine.event_types == (("signal.detected", 1),)
    assert store.dlq_group(gid, "ws-c") is None

    assert store.dlq_remove(["letter-00002", "letter-00004"]) == 2
    assert groups(store) == {"timeout after <n>s": (2, ("ws-a",))}
    assert groups(store, "ws-b") == {}
    assert store.dlq_remove(["letter-00001", "letter-00003"]) == 2
    assert groups(store) == {}
    assert store.dlq_group(gid, None) is None


@pytest.mark.broker
def test_redis_keeps_no_group_record_once_the_dlq_is_empty(redis_url: str) -> None:
    client: redis.Redis[bytes] = redis.Redis.from_url(redis_url)
    client.flushdb()
    store = RedisStore(client)
    for n in range(6):
        store.dlq_put(letter(n, f"ws-{n % 3}", f"timeout after {n}s"), capacity=4)
    store.dlq_remove([f"letter-{n:05d}" for n in range(6)])
    assert client.keys("raptorbus:dlq:*") == []
    client.close()


def test_a_letter_stored_again_moves_to_its_new_group(store: Store) -> None:
    store.dlq_put(letter(1, message="timeout after 3s"), 100)
    store.dlq_put(letter(1, message="connection refused"), 100)  # its replay failed otherwise
    assert groups(store) == {"connection refused": (1, ("ws-a",))}


def test_eviction_past_capacity_leaves_the_groups(store: Store) -> None:
    for n in range(3):
        store.dlq_put(letter(n, message="connection refused"), 100)
    for n in range(3, 6):
        store.dlq_put(letter(n, message="timeout after 1s"), capacity=3)
    assert groups(store) == {"timeout after <n>s": (3, ("ws-a",))}


def test_groups_are_listed_last_seen_first_and_paged(store: Store) -> None:
    for n in range(7):
        store.dlq_put(letter(n, message=f"error kind {'abcdefg'[n]}", age=timedelta(n)), 100)
    order: list[str] = []
    after = None
    while rows := store.dlq_groups(None, after, 3):
        order.extend(g.sample for _, g in rows)
        after = rows[-1][0]
    assert order == [f"error kind {c}" for c in "abcdefg"]


def test_a_groups_letters_are_paged_per_workspace(store: Store) -> None:
    for n in range(10):
        store.dlq_put(letter(n, "ws-a" if n % 2 else "ws-b"), 100)
    store.dlq_put(letter(50, message="other"), 100)
    gid = group_of(letter(0)).id

    def ids(workspace: str | None) -> list[str]:
        out: list[str] = []
        after = None
        while rows := store.dlq_group_page(gid, workspace, after, 3):
            out.extend(d.id for _, d in rows)
            after = rows[-1][0]
        return out

    assert ids(None) == [f"letter-{n:05d}" for n in range(10)]
    assert ids("ws-a") == [f"letter-{n:05d}" for n in range(1, 10, 2)]


# On the bus: eager, and a real Redis with a real worker ----------------------

COMPLIANCE = "guardian.check_campaign_compliance"
BLOCKED = {"campaign_id": "camp-1", "name": "Spring", "channels": ["email", "unverified_sms"]}


def blocked(n: int) -> dict[str, Any]:
    return {**BLOCKED, "campaign_id": f"camp-{n}"}


def test_edit_and_replay_fixes_a_letter_and_keeps_its_correlation_id(backend: Any) -> None:
    with backend.bus() as bus:
        bus.load_handlers()
        with backend.running(bus):
            bus.emit("campaign.activated", blocked(1), workspace_id="ws-a", correlation_id="c-1")
            bus.emit("campaign.activated", blocked(2), workspace_id="ws-b", correlation_id="c-2")
            backend.settle(bus, lambda: bus.dlq.count() == 2)
            [group] = bus.dlq.groups().groups
            assert (group.key.handler, group.key.exception_type) == (
                COMPLIANCE,
                "ComplianceViolation",
            )
            assert group.count == 2 and group.workspaces == ("ws-a", "ws-b")
            assert bus.dlq.groups(LetterFilter(workspace_id="ws-a")).groups[0].count == 1
            assert bus.dlq.groups(LetterFilter(guild="muse")).groups == []
            assert bus.dlq.groups(LetterFilter(event_type="campaign.activated")).groups

            first = bus.dlq.group_page(group.id, LetterFilter(workspace_id="ws-a")).letters[0]
            with pytest.raises(InvalidPayload, match="channels"):
                bus.dlq.edit(first.id, {**blocked(1), "channels": "email"}, by="ops")
            assert bus.dlq.get(first.id).edits == []

            fixed = {**blocked(1), "channels": ["email"]}
            edited = bus.dlq.edit(first.id, fixed, by="alice")
            assert edited.edits[0].by == "alice"
            assert edited.edits[0].old_payload["channels"] == ["email", "unverified_sms"]
            assert edited.envelope is not None and first.envelope is not None
            assert edited.envelope.id == first.envelope.id
            assert edited.envelope.correlation_id == "c-1"
            bus.dlq.replay(first.id)
            backend.settle(bus, lambda: bus.dlq.count() == 1)
            assert bus.dlq.group(group.id).workspaces == ("ws-b",)

            # A replay that fails again keeps the audit trail and the history.
            [other] = bus.dlq.group_page(group.id).letters
            bus.dlq.edit(other.id, blocked(3), by="bob")
            bus.dlq.replay(other.id)
            backend.settle(bus, lambda: bus.dlq.get(other.id).replays == 1)
            again = bus.dlq.get(other.id)
            assert [e.by for e in again.edits] == ["bob"]
            assert [f.replay for f in again.history] == [False, True]
            assert again.history[0].attempts == 4 and again.attempts == 8


def test_a_group_is_replayed_and_purged_whole_within_a_workspace(backend: Any) -> None:
    with backend.bus() as bus:
        bus.load_handlers()
        with backend.running(bus):
            for n in range(6):
                ws = "ws-a" if n % 2 else "ws-b"
                bus.emit("campaign.activated", blocked(n), workspace_id=ws)
            backend.settle(bus, lambda: bus.dlq.count() == 6)
            [group] = bus.dlq.groups().groups
            replayed = bus.dlq.replay_group(group.id, LetterFilter(workspace_id="ws-a"))
            assert len(replayed) == 3
            backend.settle(bus, lambda: bus.dlq.group(group.id, "ws-a").count == 3)
            assert {d.replays for d in bus.dlq.group_matching(group.id)} == {0, 1}
            assert bus.dlq.purge_group(group.id, LetterFilter(workspace_id="ws-b")) == 3
            assert bus.dlq.group(group.id).workspaces == ("ws-a",)
            assert bus.dlq.purge_group(group.id) == 3
            assert bus.dlq.groups().groups == [] and bus.dlq.count() == 0
