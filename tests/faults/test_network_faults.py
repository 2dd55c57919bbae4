"""The network between the bus and Redis failing without closing anything:
connections that go silent (a NAT or load balancer forgot the flow) and a
broker that answers slowly (issue 14, scenarios 11, 12 and 13), through
``tests.netproxy.SilentProxy``. Counts are asserted exactly; the only times
checked are bounds the issue sets: an emit's 2 s, and a worker consuming again
within 15 s of its connections going silent (a bounded wait)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.faults.table import Row

pytestmark = pytest.mark.faults

RunScenario = Callable[[int], Row]

# The emit bound is 2 s (connect 0.5 + read 1.5); the margin is for a busy CI box.
EMIT_LIMIT_SECONDS = 2.5


@pytest.mark.timeout(180)
def test_a_worker_whose_connections_go_silent_reconnects_and_runs_each_event_once(
    run_scenario: RunScenario,
) -> None:
    row = run_scenario(11)
    assert row.facts["frozen_connections"] > 0
    facts = ("emit_errors", "emitter_finished", "worker_alive")
    assert {**row.view(*facts), "resumed_within_15s": row.facts["resumed_s"] is not None} == {
        "sent": 300,
        "accepted": 300,
        "spooled": 0,
        "once": 300,
        "twice": 0,
        "lost": 0,
        "dead": 0,
        "emit_errors": 0,
        "emitter_finished": True,
        "worker_alive": True,
        "resumed_within_15s": True,
    }


@pytest.mark.timeout(150)
def test_emits_on_silent_connections_return_within_2s_and_spooled_events_arrive(
    run_scenario: RunScenario,
) -> None:
    row = run_scenario(12)
    assert row.facts["frozen_connections"] > 0
    assert row.spooled > 0
    assert row.facts["longest_emit_s"] <= EMIT_LIMIT_SECONDS
    assert row.view("emit_errors", "outbox_left", "emitter_finished") == {
        "sent": 300,
        "accepted": 300,
        "spooled": row.spooled,
        "once": 300,
        "twice": 0,
        "lost": 0,
        "dead": 0,
        "emit_errors": 0,
        "outbox_left": 0,
        "emitter_finished": True,
    }


@pytest.mark.timeout(150)
def test_a_slow_broker_neither_fails_emits_nor_runs_handlers_twice(
    run_scenario: RunScenario,
) -> None:
    """+200 ms per reply is slow, not down: nothing spools. Throughput coming
    back is the last 100 events all handled within the bounded wait."""
    row = run_scenario(13)
    assert row.facts["longest_emit_s"] <= EMIT_LIMIT_SECONDS
    assert {
        **row.view("emit_errors", "emitter_finished"),
        "throughput_back": row.facts["handled_per_s_after"] is not None,
    } == {
        "sent": 240,
        "accepted": 240,
        "spooled": 0,
        "once": 240,
        "twice": 0,
        "lost": 0,
        "dead": 0,
        "emit_errors": 0,
        "emitter_finished": True,
        "throughput_back": True,
    }
