"""The broker itself failing: killed and restarted, silent, out of memory
(issue 9, scenarios 4, 5 and 6). Accepted events must survive all three."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.faults.table import Row

pytestmark = pytest.mark.faults

RunScenario = Callable[[int], Row]


@pytest.mark.timeout(150)
def test_workers_and_emitters_ride_out_a_broker_restart(run_scenario: RunScenario) -> None:
    """A restart may redeliver a run whose done record it cut off: twice is
    reported, not asserted."""
    row = run_scenario(4)
    observed = row.view("emit_errors", "emitter_finished", "worker_alive")
    assert {**observed, "twice": None, "handled": row.once + row.twice} == {
        "sent": 800,
        "accepted": 800,
        "spooled": row.spooled,
        "once": row.once,
        "twice": None,
        "handled": 800,
        "lost": 0,
        "dead": 0,
        "emit_errors": 0,
        "emitter_finished": True,
        "worker_alive": True,
    }


@pytest.mark.timeout(150)
def test_emits_during_a_silent_broker_spool_and_are_handled_in_order_after(
    run_scenario: RunScenario,
) -> None:
    row = run_scenario(5)
    facts = ("emit_errors", "spooled_during_outage", "order_kept", "emitter_finished")
    assert row.facts["emits_during_outage"] > 0
    assert row.view(*facts) == {
        "sent": 420,
        "accepted": 420,
        "spooled": row.spooled,
        "once": 420,
        "twice": 0,
        "lost": 0,
        "dead": 0,
        "emit_errors": 0,
        "spooled_during_outage": row.facts["emits_during_outage"],
        "order_kept": True,
        "emitter_finished": True,
    }


@pytest.mark.timeout(150)
def test_a_full_broker_refuses_clearly_and_never_half_publishes(run_scenario: RunScenario) -> None:
    row = run_scenario(6)
    assert row.accepted + row.facts["refused"] == row.sent == 300
    assert row.view("unclear_refusals", "half_published", "queued_not_accepted") == {
        "sent": 300,
        "accepted": row.accepted,
        "spooled": row.spooled,
        "once": row.accepted,
        "twice": 0,
        "lost": 0,
        "dead": 0,
        "unclear_refusals": 0,
        "half_published": 0,
        "queued_not_accepted": 0,
    }
