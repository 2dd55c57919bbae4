"""``raptorbus bench``: the bus and its anchors side by side, in one run on one
broker, as a table and a JSON file with every figure and ratio.

    raptorbus bench [--events N] [--json PATH] [--only publish,drain,...,floor] [--quick]
    python bench/run.py [same options]

The broker is an embedded redis-server started for the run, or REDIS_URL /
RAPTORBUS_BROKER_URL; the bench empties its database between runs (FLUSHDB),
so it refuses a database that holds anything when it starts. Workers are real
processes (``raptorbus worker``, ``celery worker -E``) started and stopped by
the bench. On a shared machine the absolute figures move with the neighbours'
load: read the ratios, which compare figures taken minutes apart at most."""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: python bench/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis

from bench import drain, fanout_width, floor, footprint, latency, publish, redis_work
from bench.context import Context, Sizes
from bench.report import Results, table, to_json, write_json
from raptorflow_bus.embedded import EmbeddedRedis
from raptorflow_bus.settings import broker_url_from_env, mask_url

SECTIONS: dict[str, Callable[[Context], None]] = {
    "publish": publish.run,
    "drain": drain.run,
    "latency": latency.run,
    "fanout": fanout_width.run,
    "redis": redis_work.run,
    "footprint": footprint.run,
    "floor": floor.run,
}
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def parse_only(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in SECTIONS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown section(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(SECTIONS)}"
        )
    return names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--events",
        type=int,
        default=None,
        metavar="N",
        help="events per publish variant and per drain run (default 3000; --quick 200); "
        "the other sections scale from it",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        metavar="PATH",
        help="where to write the results (default artifacts/bench-<time>.json)",
    )
    parser.add_argument(
        "--only",
        type=parse_only,
        default=None,
        metavar="SECTION[,SECTION...]",
        help=f"run these sections only: {', '.join(SECTIONS)}",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes: every figure is produced, none is meaningful (a smoke test)",
    )


def versions() -> dict[str, str]:
    out = {}
    for dist in ("raptorflow-bus", "celery", "kombu", "redis", "pydantic"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "?"
    return out


def machine(client: redis.Redis[bytes]) -> dict[str, Any]:
    server: dict[str, Any] = client.info("server")
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "redis_version": server.get("redis_version"),
        "loadavg_start": list(os.getloadavg()),
        "versions": versions(),
    }


class DropPerEventSpools(logging.Filter):
    """The bus logs one warning per spooled event; a run that spools thousands
    would bury the table. The bench counts and reports them itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("spooled event")


def run_bench(
    *,
    events: int | None = None,
    json_path: Path | str | None = None,
    only: Sequence[str] | str | None = None,
    quick: bool = False,
    command: Sequence[str] | None = None,
) -> int:
    """Run the chosen sections (all by default) and report; 1 if any failed.
    ``only`` may be the command line's comma-separated text."""
    if isinstance(only, str):
        try:
            only = parse_only(only)
        except argparse.ArgumentTypeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
    if events is not None and events < 10:
        print("error: --events must be at least 10", file=sys.stderr)
        return EXIT_BAD_INPUT
    # In the canonical order whatever --only says: drain's plain-Celery capacity
    # sets latency's rates (latency measures one itself when drain is not run).
    sections = [name for name in SECTIONS if name in (only or SECTIONS)]
    sizes = Sizes.for_run(events, quick)
    started = time.time()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = Path(json_path) if json_path else Path("artifacts") / f"bench-{stamp}.json"
    spool_filter = DropPerEventSpools()
    logging.getLogger("bus").addFilter(spool_filter)
    home = Path(tempfile.mkdtemp(prefix="raptorbus-bench-"))
    url = broker_url_from_env(os.environ)
    embedded = None
    if url is None:
        embedded = EmbeddedRedis(home / "broker")
        url = embedded.acquire()
    ctx = Context(url=url, home=home, sizes=sizes)
    try:
        if embedded is None and ctx.client.dbsize():
            print(
                f"error: the database of {mask_url(url)} is not empty; the bench flushes it "
                "between runs, so point REDIS_URL at an empty database (e.g. /15)",
                file=sys.stderr,
            )
            return EXIT_BAD_INPUT
        header: dict[str, Any] = {
            "command": list(command if command is not None else sys.argv),
            "started_at": datetime.fromtimestamp(started, UTC).isoformat(),
            "machine": machine(ctx.client),
            "settings": {
                "sections": sections,
                "quick": quick,
                "broker": "embedded redis-server" if embedded else mask_url(url),
                "sizes": asdict(sizes),
            },
        }
        for name in sections:
            print(f"[bench] {name} ...", file=sys.stderr, flush=True)
            section_start = time.monotonic()
            try:
                SECTIONS[name](ctx)
            except Exception as exc:
                ctx.results.errors[name] = f"{type(exc).__name__}: {exc}"
                traceback.print_exc()
            seconds = time.monotonic() - section_start
            ctx.results.detail("timing", name, round(seconds, 1))
            print(f"[bench] {name} done in {seconds:.0f}s", file=sys.stderr, flush=True)
        return report(ctx.results, header, sections, path, started)
    finally:
        ctx.close()
        if embedded is not None:
            embedded.release()
        shutil.rmtree(home, ignore_errors=True)
        logging.getLogger("bus").removeFilter(spool_filter)


def report(
    results: Results, header: dict[str, Any], sections: list[str], path: Path, started: float
) -> int:
    results.resolve()
    header["duration_seconds"] = round(time.time() - started, 1)
    header["machine"]["loadavg_end"] = list(os.getloadavg())
    m = header["machine"]
    print(
        f"raptorbus bench: {m['cpus']} cpus, python {m['python']}, redis {m['redis_version']}, "
        f"load {m['loadavg_start'][0]:.2f} -> {m['loadavg_end'][0]:.2f}, "
        f"{header['duration_seconds']:.0f}s"
    )
    print(table(results, sections))
    write_json(path, to_json(results, header))
    print(f"JSON: {path}")
    return EXIT_FAILED if results.errors else EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run_bench(events=args.events, json_path=args.json, only=args.only, quick=args.quick)


if __name__ == "__main__":
    sys.exit(main())
