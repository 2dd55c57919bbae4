"""The console at the DLQ's capacity: 50,000 letters on a real Redis (stored
straight through the store, no workers), and each page reads a bounded number
of letters and Redis commands, counted, not timed. The groups page reads group
aggregates only; a page of letters reads one page of letters; a letter page
reads one. Eviction past capacity keeps the groups' counts equal to the queue."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest

from examples.api import create_app
from raptorflow_bus import Bus
from raptorflow_bus.deadletter import DeadLetter
from raptorflow_bus.dlq import GROUP_SCAN_BATCH, SCAN_BUDGET
from raptorflow_bus.envelope import Envelope, utcnow
from raptorflow_bus.fastapi.console import PAGE_SIZE
from raptorflow_bus.redis_store import RedisStore
from tests.api_server import api_client
from tests.test_console import CONSOLE, TOKENS, logged_in

pytestmark = [pytest.mark.broker, pytest.mark.timeout(600)]
CAPACITY = 50_000
WORKSPACES = 20
FAILURES = [
    ("research.score_signal", "TimeoutError", "timeout after {n}.5s calling scorer"),
    ("muse.draft_copy", "RateLimited", "rate limited, retry in {n} ms"),
    ("matrix.record_task", "KeyError", "'task-{n}'"),
    ("guardian.check_campaign_compliance", "ComplianceViolation",
     "campaign camp-{n} uses blocked channel(s): unverified_sms"),
    ("council.log_event", "ConnectionError", "connection reset by peer {n}"),
]  # fmt: skip


def letter(n: int) -> DeadLetter:
    handler, error, message = FAILURES[n % len(FAILURES)]
    workspace = f"ws-{n // len(FAILURES) % WORKSPACES}"
    when = utcnow() - timedelta(seconds=CAPACITY - n)
    envelope = Envelope(
        type="signal.detected",
        payload={"signal_id": f"s-{n}", "source": "news", "topic": "ai", "strength": 0.5},
        workspace_id=workspace,
        correlation_id=f"corr-{n}",
        request_id=f"corr-{n}",
    )
    return DeadLetter(
        id=f"letter-{n:06d}",
        envelope=envelope,
        handler=handler,
        guild=handler.split(".")[0],
        exception_type=error,
        message=message.format(n=n),
        traceback="Traceback (most recent call last):\n  ...\n" + error,
        attempts=4,
        first_failed_at=when,
        last_failed_at=when,
    )


class Reads:
    """What the app asks Redis for while one page renders: every command
    (Redis's own per-command counters) and how many letters each HMGET of
    the entries hash fetched."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        store = bus.store
        assert isinstance(store, RedisStore)
        self.letters: list[int] = []
        real: Callable[..., Any] = store.client.hmget

        def hmget(name: Any, keys: Any, *args: Any) -> Any:
            self.letters.append(len(keys) if isinstance(keys, list) else 1 + len(args))
            return real(name, keys, *args)

        store.client.hmget = hmget  # type: ignore[method-assign]

    def __call__(self, action: Callable[[], Any]) -> dict[str, int]:
        self.letters.clear()
        self.bus.redis.config_resetstat()
        action()
        stats = self.bus.redis.info("commandstats")
        counts = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}
        # Redis 7 counts subcommands apart ("config|resetstat"); 6.2 does not.
        return {c: n for c, n in counts.items() if c.split("|")[0] not in ("config", "info")}


@pytest.fixture(scope="module")
def full(redis_url: str) -> Iterator[Bus]:
    """A bus whose DLQ is at capacity, plus ten evicted past it."""
    from raptorflow_bus import Settings

    bus = Bus(Settings(broker_url=redis_url)).connect()
    bus.redis.flushdb()
    store = bus.store
    assert isinstance(store, RedisStore)
    batch = 5_000
    for start in range(0, CAPACITY + 10, batch):
        store.dlq_put_many((letter(n) for n in range(start, start + batch)), CAPACITY)
    yield bus
    bus.redis.flushdb()
    bus.close()


def test_eviction_at_capacity_keeps_the_groups_equal_to_the_queue(full: Bus) -> None:
    assert full.dlq.count() == CAPACITY
    groups = full.dlq.groups(limit=100).groups
    assert len(groups) == len(FAILURES)
    assert sum(g.count for g in groups) == CAPACITY
    assert all(len(g.workspaces) == WORKSPACES for g in groups)
    assert {g.count for g in groups} == {CAPACITY // len(FAILURES)}


def test_each_console_page_reads_a_bounded_number_of_letters(full: Bus) -> None:
    reads = Reads(full)
    first = full.dlq.page(limit=1).letters[0]
    app = create_app(full, TOKENS)
    with api_client(app) as api, logged_in(str(api.base_url), "tok-ops") as ops:
        pages: dict[str, str] = {}

        def get(path: str, **params: str) -> Callable[[], None]:
            def fetch() -> None:
                answer = ops.get(CONSOLE + path, params=params)
                assert answer.status_code == 200, answer.text[:500]
                pages[path] = answer.text

            return fetch

        groups = reads(get("/"))
        assert reads.letters == [] and groups["hgetall"] == len(FAILURES) <= GROUP_SCAN_BATCH
        assert sum(groups.values()) < 20, groups
        assert len(re.findall(r"data-group=", pages["/"])) == len(FAILURES)
        assert f"{CAPACITY} letters in the queue" in pages["/"]

        scoped = reads(get("/", workspace_id="ws-3"))
        assert reads.letters == [] and sum(scoped.values()) < 20, scoped

        listing = reads(get("/letters"))
        assert sum(reads.letters) <= PAGE_SIZE and sum(listing.values()) < 20, listing
        assert len(re.findall(r"data-letter=", pages["/letters"])) == PAGE_SIZE
        cursor = re.search(r'rel="next" href="[^"]*cursor=([^"&]+)', pages["/letters"])
        assert cursor
        reads(get("/letters", cursor=cursor[1]))
        assert sum(reads.letters) <= PAGE_SIZE

        gid = re.findall(r'data-group="([0-9a-f]+)"', pages["/"])[0]
        group = reads(get(f"/groups/{gid}"))
        assert sum(reads.letters) <= PAGE_SIZE and sum(group.values()) < 20, group
        assert len(re.findall(r"data-letter=", pages[f"/groups/{gid}"])) == PAGE_SIZE

        reads(get(f"/groups/{gid}", workspace_id="ws-7"))
        assert sum(reads.letters) <= PAGE_SIZE

        reads(get(f"/letters/{first.id}"))
        assert reads.letters == []  # one HGET

        # A filter the index cannot serve scans a bounded budget, never the queue.
        reads(get("/letters", event_type="agent.error"))
        assert sum(reads.letters) <= SCAN_BUDGET
