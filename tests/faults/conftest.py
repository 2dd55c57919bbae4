"""Runs a scenario for a test, prints its row, and prints every row of the
session as one table at the end, so the figures show without ``-s`` too."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.faults.scenarios import SCENARIOS
from tests.faults.table import Row, format_table

ROWS: list[Row] = []


@pytest.fixture
def run_scenario(tmp_path: Path) -> Callable[[int], Row]:
    def run(number: int) -> Row:
        row = SCENARIOS[number][1](tmp_path)
        ROWS.append(row)
        print("\n" + format_table([row]))
        return row

    return run


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if ROWS:
        terminalreporter.section("fault table")
        terminalreporter.write_line(
            format_table(sorted(ROWS, key=lambda r: int(r.scenario.split()[0])))
        )
