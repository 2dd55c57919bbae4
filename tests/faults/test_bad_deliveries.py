"""Deliveries that must not run a handler (again): failures past their retries,
duplicates, garbage (issue 9, scenarios 8, 9 and 10)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.faults.table import Row

pytestmark = pytest.mark.faults

RunScenario = Callable[[int], Row]


@pytest.mark.timeout(150)
def test_always_failing_handlers_run_four_times_and_replay_after_the_fix(
    run_scenario: RunScenario,
) -> None:
    row = run_scenario(8)
    facts = ("runs_before_fix", "runs_total", "replay_exit", "dlq_after_replay")
    assert row.view(*facts) == {
        "sent": 100,
        "accepted": 100,
        "spooled": 0,
        "once": 100,
        "twice": 0,
        "lost": 0,
        "dead": 100,
        "runs_before_fix": 400,
        "runs_total": 500,
        "replay_exit": 0,
        "dlq_after_replay": 0,
    }


@pytest.mark.timeout(150)
def test_the_same_event_delivered_again_completes_once(run_scenario: RunScenario) -> None:
    row = run_scenario(9)
    assert row.view("duplicates_counted", "most_runs") == {
        "sent": 60,
        "accepted": 20,
        "spooled": 0,
        "once": 20,
        "twice": 0,
        "lost": 0,
        "dead": 0,
        "duplicates_counted": 40,
        "most_runs": 1,
    }


@pytest.mark.timeout(150)
def test_garbage_is_set_aside_with_its_reason_and_the_worker_lives_on(
    run_scenario: RunScenario,
) -> None:
    row = run_scenario(10)
    nowhere = sorted(label for label, where in row.facts.items() if where == "nowhere")
    assert {**row.view("worker_alive", "handler_runs_on_garbage"), "nowhere": nowhere} == {
        "sent": 15,
        "accepted": 5,
        "spooled": 0,
        "once": 5,
        "twice": 0,
        "lost": 0,
        "dead": 10,
        "worker_alive": True,
        "handler_runs_on_garbage": 0,
        "nowhere": [],
    }
