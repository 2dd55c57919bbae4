"""Redis failing over under Sentinel (issue 14, scenarios 14, 15 and 16): every
part of the bus must follow the promoted replica by itself, and with replica
acks on, nothing accepted may be lost with the master. Counts are asserted
exactly; with acks 0 what a failover lost is reported, not asserted (on
loopback the replica is rarely behind when the master dies)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.faults.table import Row

pytestmark = pytest.mark.faults

RunScenario = Callable[[int], Row]

FOLLOWED = {
    "emit_errors": 0,
    "master_moved": True,
    "emitter_finished": True,
    "worker_alive": True,
}


def assert_stats_names_the_new_master(row: Row) -> None:
    assert row.facts["stats_master"] == row.facts["master_after"]


@pytest.mark.timeout(150)
def test_with_replica_acks_a_failover_loses_nothing_and_runs_nothing_twice(
    run_scenario: RunScenario,
) -> None:
    row = run_scenario(14)
    assert row.facts["emitted_after_failover"] > 0
    assert_stats_names_the_new_master(row)
    assert row.view(*FOLLOWED, "handled_after_failover") == {
        "sent": 1000,
        "accepted": 1000,
        "spooled": row.spooled,
        "once": 1000,
        "twice": 0,
        "lost": 0,
        "dead": 0,
        **FOLLOWED,
        "handled_after_failover": row.facts["emitted_after_failover"],
    }


@pytest.mark.timeout(150)
def test_without_replica_acks_a_failover_is_followed_and_its_loss_reported(
    run_scenario: RunScenario,
) -> None:
    row = run_scenario(15)
    assert row.once + row.twice + row.lost == row.accepted
    assert_stats_names_the_new_master(row)
    assert row.view(*FOLLOWED) == {
        "sent": 1000,
        "accepted": 1000,
        "spooled": row.spooled,
        "once": row.once,
        "twice": row.twice,
        "lost": row.lost,
        "dead": 0,
        **FOLLOWED,
    }


@pytest.mark.timeout(150)
def test_the_old_master_comes_back_as_a_replica_and_nothing_is_written_to_it(
    run_scenario: RunScenario,
) -> None:
    row = run_scenario(16)
    facts = ("emit_errors", "clients_on_old", "old_holds_what_new_holds", "worker_alive")
    assert row.facts["replica_again_s"] is not None
    assert row.view(*facts, "emitter_finished") == {
        "sent": 600,
        "accepted": 600,
        "spooled": row.spooled,
        "once": 600,
        "twice": 0,
        "lost": 0,
        "dead": 0,
        "emit_errors": 0,
        "clients_on_old": 0,
        "old_holds_what_new_holds": True,
        "worker_alive": True,
        "emitter_finished": True,
    }
