"""Worker processes dying, or stopping, while they hold deliveries
(issue 9, scenarios 1, 2, 3 and 7)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.faults.table import Row

pytestmark = pytest.mark.faults

RunScenario = Callable[[int], Row]


@pytest.mark.timeout(150)
def test_a_pool_child_killed_mid_handler_is_run_again_and_completes_once(
    run_scenario: RunScenario,
) -> None:
    row = run_scenario(1)
    assert row.view("victim_in_pool", "victim_runs", "worker_alive") == {
        "sent": 4,
        "accepted": 4,
        "spooled": 0,
        "once": 4,
        "twice": 0,
        "lost": 0,
        "dead": 0,
        "victim_in_pool": True,
        "victim_runs": 2,
        "worker_alive": True,
    }


@pytest.mark.timeout(150)
def test_a_worker_killed_under_a_backlog_loses_nothing_once_restarted(
    run_scenario: RunScenario,
) -> None:
    """A kill between a handler's own write and its done record may run it
    twice; the bus promises no loss here, not that."""
    row = run_scenario(2)
    assert {**row.view(), "twice": None, "handled": row.once + row.twice} == {
        "sent": 500,
        "accepted": 500,
        "spooled": 0,
        "once": row.once,
        "twice": None,
        "handled": 500,
        "lost": 0,
        "dead": 0,
    }


@pytest.mark.timeout(150)
def test_a_warm_shutdown_under_load_loses_and_repeats_nothing(run_scenario: RunScenario) -> None:
    row = run_scenario(3)
    assert row.view("first_exit", "emit_errors") == {
        "sent": 200,
        "accepted": 200,
        "spooled": 0,
        "once": 200,
        "twice": 0,
        "lost": 0,
        "dead": 0,
        "first_exit": 0,
        "emit_errors": 0,
    }


@pytest.mark.timeout(150)
def test_a_handler_longer_than_the_reclaim_interval_on_a_live_worker_runs_once(
    run_scenario: RunScenario,
) -> None:
    row = run_scenario(7)
    assert row.view("runs", "second_worker_up_mid_handler") == {
        "sent": 1,
        "accepted": 1,
        "spooled": 0,
        "once": 1,
        "twice": 0,
        "lost": 0,
        "dead": 0,
        "runs": 1,
        "second_worker_up_mid_handler": True,
    }
