"""The fault table of the README, re-run: each scenario of tests/faults with real
redis-servers and real `raptorbus worker` processes, one row per scenario.
Prints counts; asserts nothing (the tests do, on the same rows).

    python bench/faults.py [--only 1,4,5] [--json]

A scenario whose set-up breaks (a worker that never starts) is reported with
its error and the others still run; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import tempfile
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.faults.scenarios import SCENARIOS
from tests.faults.table import Row, format_table


def parse_only(text: str) -> list[int]:
    numbers = [int(n) for n in text.split(",") if n.strip()]
    unknown = sorted(set(numbers) - set(SCENARIOS))
    if unknown:
        raise argparse.ArgumentTypeError(f"no scenario {unknown}; they are 1 to {len(SCENARIOS)}")
    return numbers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", type=parse_only, default=list(SCENARIOS), metavar="N[,N...]")
    parser.add_argument("--json", action="store_true", help="one JSON object per row")
    args = parser.parse_args()
    # Spooled emits log a WARNING each; the table says how many there were.
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    rows: list[Row] = []
    broken = 0
    for number in args.only:
        title, scenario = SCENARIOS[number]
        print(f"running {title} ...", file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory(prefix=f"raptorbus-fault{number}-") as workdir:
            try:
                rows.append(scenario(Path(workdir)))
            except Exception:
                broken += 1
                print(f"{title}: set-up failed\n{traceback.format_exc()}", file=sys.stderr)
    if args.json:
        for row in rows:
            print(json.dumps(dataclasses.asdict(row), default=str))
    else:
        print(format_table(rows))
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
