"""``raptorbus``: run, watch and repair the bus without writing Python.

Exit codes: 0 success, 1 aborted or failed, 2 bad input, 3 broker unreachable,
4 not found."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import secrets
import signal
import sys
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from raptorflow_bus.bus import Bus
from raptorflow_bus.deadletter import DeadLetter
from raptorflow_bus.dlq import LetterFilter
from raptorflow_bus.errors import BrokerUnavailable, BusError, DeadLetterNotFound
from raptorflow_bus.flower import configure as configure_flower
from raptorflow_bus.health import NO_WORKER, STALLED, stalled_guilds
from raptorflow_bus.outbox import Outbox, target_for
from raptorflow_bus.queues import all_queue_states
from raptorflow_bus.settings import Settings
from raptorflow_bus.topology import Topology

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_BROKER, EXIT_NOT_FOUND = 0, 1, 2, 3, 4
AGE_RE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
AGE_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_age(text: str) -> timedelta:
    match = AGE_RE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"age {text!r} is not like 30s, 15m, 2h or 7d")
    return timedelta(**{AGE_UNITS[match.group(2)]: float(match.group(1))})


def out(data: Any, as_json: bool, render: Callable[[], None]) -> None:
    if as_json:
        print(json.dumps(data, indent=2, default=str))
    else:
        render()


def open_bus() -> Bus:
    """A strict bus: these commands need the broker, so they fail fast (exit 3)."""
    return Bus(outbox=False).connect()


# worker / flower ---------------------------------------------------------


def cmd_worker(args: argparse.Namespace) -> int:
    from raptorflow_bus.worker import build_worker

    bus = Bus()
    bus.topology.consumer(args.guild)
    bus.load_handlers()
    worker = build_worker(
        bus,
        [args.guild],
        pool=args.pool,
        concurrency=args.concurrency,
        loglevel=args.loglevel,
        hostname=args.hostname,
    )
    try:
        worker.start()
    finally:
        bus.close()
    return int(worker.exitcode or 0)


def flower_auth() -> str:
    """Basic auth for Flower from FLOWER_BASIC_AUTH, else a generated password."""
    auth = os.environ.get("FLOWER_BASIC_AUTH", "")
    if auth:
        if ":" not in auth:
            raise BusError("FLOWER_BASIC_AUTH must be 'user:password'")
        return auth
    auth = f"admin:{secrets.token_urlsafe(12)}"
    print(f"Flower login (generated, shown once): {auth}", flush=True)
    return auth


def cmd_flower(args: argparse.Namespace) -> int:
    # On the stock transport, so that Flower shows queue depths (raptorflow_bus.flower).
    bus = configure_flower(open_bus())
    os.environ["FLOWER_BASIC_AUTH"] = flower_auth()
    os.environ.pop("FLOWER_AUTH", None)
    try:
        bus.app.start(["flower", f"--port={args.port}", f"--address={args.address}"])
    finally:
        bus.close()
    return EXIT_OK


# emit / topology / stats -------------------------------------------------


def cmd_emit(args: argparse.Namespace) -> int:
    try:
        payload = json.loads(args.payload)
    except json.JSONDecodeError as exc:
        print(f"error: PAYLOAD_JSON is not valid JSON: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    bus = Bus()  # connects on send, after validation: bad input is exit 2 even offline
    try:
        envelope, spooled = bus.send(
            args.type,
            payload,
            workspace_id=args.workspace,
            correlation_id=args.correlation,
            priority=args.priority,
        )
    finally:
        bus.close()
    if spooled:
        print(
            "broker unreachable: event spooled to this host's outbox; it is published by "
            "`raptorbus outbox drain` or the next bus process to start on this host",
            file=sys.stderr,
        )
    data = envelope.model_dump(mode="json")
    verb = "spooled" if spooled else "emitted"
    out(data, args.json, lambda: print(f"{verb} {envelope.type} id={envelope.id}"))
    return EXIT_OK


def cmd_topology(args: argparse.Namespace) -> int:
    if args.markdown:
        routing = importlib.import_module(Settings.from_env().routing_module)
        print(Topology.from_module(routing).markdown())
        return EXIT_OK
    with open_bus() as bus:
        topo = bus.topology
        depths = {q.name: q.depth for q in all_queue_states(bus)}
        data: dict[str, Any] = {
            "exchange": topo.exchange,
            "dlq_capacity": topo.dlq_capacity,
            "channels": [
                {
                    "name": ch.name,
                    "purpose": ch.purpose,
                    "patterns": list(ch.patterns),
                    "retention_hours": ch.retention_hours,
                    "max_queue_length": ch.max_queue_length,
                }
                for ch in topo.channels.values()
            ],
            "queues": [
                {
                    "consumer": name,
                    "queue": topo.event_queue(name),
                    "handler_queue": topo.handler_queue(name),
                    "channels": list(c.channels),
                    "max_length": topo.max_length(name),
                    "depth": depths[topo.event_queue(name)],
                    "handler_depth": depths[topo.handler_queue(name)],
                }
                for name, c in topo.consumers.items()
            ],
        }

    def render() -> None:
        from rich.console import Console
        from rich.table import Table

        channels = Table(title=f"channels on exchange {data['exchange']}")
        for col in ("channel", "patterns", "retention", "max queue"):
            channels.add_column(col)
        for ch in data["channels"]:
            channels.add_row(
                ch["name"],
                "\n".join(ch["patterns"]),
                f"{ch['retention_hours']} h",
                str(ch["max_queue_length"]),
            )
        queues = Table(title="queues")
        for col in ("consumer", "hears", "depth", "handler tasks", "limit"):
            queues.add_column(col)
        for q in data["queues"]:
            queues.add_row(
                q["consumer"],
                ", ".join(q["channels"]),
                str(q["depth"]),
                str(q["handler_depth"]),
                str(q["max_length"]),
            )
        console = Console()
        console.print(channels)
        console.print(queues)

    out(data, args.json, render)
    return EXIT_OK


def stats_snapshot(bus: Bus) -> dict[str, Any]:
    return bus.health()


def with_rates(now: dict[str, Any], before: dict[str, Any] | None) -> dict[str, Any]:
    elapsed = (now["time"] - before["time"]) if before else 0.0
    for name, guild in now["guilds"].items():
        prev = before["guilds"].get(name) if before else None
        if prev and elapsed > 0:
            guild["succeeded_per_s"] = round((guild["succeeded"] - prev["succeeded"]) / elapsed, 2)
            guild["failed_per_s"] = round((guild["failed"] - prev["failed"]) / elapsed, 2)
        else:
            guild["succeeded_per_s"] = guild["failed_per_s"] = None
    return now


def _seconds(value: float | None, fmt: str = "{:.1f}s") -> str:
    return "-" if value is None else fmt.format(value)


def _millis(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f}ms"


STATUS_STYLE = {STALLED: "bold red", NO_WORKER: "yellow"}


def render_stats(data: dict[str, Any]) -> Any:
    from rich import box
    from rich.table import Table

    outbox = data["outbox"]
    spooled_age = outbox["oldest_age_seconds"]
    master = data.get("master")
    title = f"RaptorFlow Bus - {data['status']}"
    if data.get("error"):
        title += f" - {data['error']}"
    else:
        title += f" - DLQ depth {data['dlq_depth']}"
    caption = f"outbox depth {outbox['depth']}"
    caption += "" if spooled_age is None else f", oldest spooled {spooled_age:.1f}s"
    caption += "" if master is None else f" - master {master}"
    # Fits 80 columns, so a probe's log or a narrow terminal loses nothing.
    table = Table(title=title, caption=caption, box=box.SIMPLE_HEAD, padding=0, pad_edge=False)
    columns: tuple[str, ...] = ("guild", "status", "alive", "depth", "oldest", "ok", "fail")
    columns += ("retry", "dead", "ok/s", "p50", "p99")
    for col in columns:
        words = col in ("guild", "status")
        table.add_column(col, justify="left" if words else "right", no_wrap=words)
    for name, g in data["guilds"].items():
        style = STATUS_STYLE.get(g["status"])
        table.add_row(
            name,
            g["status"],
            str(g["workers_alive"]),
            str(g["depth"]),
            _seconds(g["oldest_age_seconds"]),
            str(g["succeeded"]),
            str(g["failed"]),
            str(g["retried"]),
            str(g["dead_lettered"]),
            _seconds(g["succeeded_per_s"], "{}"),
            _millis(g["latency_p50_seconds"]),
            _millis(g["latency_p99_seconds"]),
            style=style,
        )
    return table


def cmd_stats(args: argparse.Namespace) -> int:
    """Exits 1 when a guild is stalled (messages wait, no worker lives) or the
    broker is down, so a cron job or a probe can run it as a check."""
    from rich.console import Console
    from rich.live import Live

    with open_bus() as bus:
        before = None
        if not args.watch:
            data = with_rates(stats_snapshot(bus), None)
            out(data, args.json, lambda: Console().print(render_stats(data)))
            return EXIT_OK if data["status"] != "down" and not stalled_guilds(data) else EXIT_FAILED
        try:
            with Live(render_stats(with_rates(stats_snapshot(bus), None))) as live:
                while True:
                    data = with_rates(stats_snapshot(bus), before)
                    if args.json:
                        print(json.dumps(data, default=str), flush=True)
                    else:
                        live.update(render_stats(data))
                    before = data
                    time.sleep(args.watch)
        except KeyboardInterrupt:
            return EXIT_OK


def cmd_metrics(args: argparse.Namespace) -> int:
    """Runs until interrupted; every scrape reads the broker afresh."""
    from raptorflow_bus.prometheus import serve

    signal.signal(signal.SIGTERM, _exit_on_signal)
    with open_bus() as bus:
        server, thread = serve(bus, args.port, args.address)
        url = f"http://{args.address}:{args.port}/metrics"
        print(f"serving Prometheus metrics on {url}", flush=True)
        try:
            while thread.is_alive():
                thread.join(timeout=1)
        except KeyboardInterrupt:
            pass
        finally:
            server.shutdown()
    return EXIT_OK


def _exit_on_signal(signum: int, frame: Any) -> None:
    """SIGTERM (a supervisor, ``docker stop``) closes the bus like Ctrl-C does."""
    raise SystemExit(EXIT_OK)


# dlq -----------------------------------------------------------------------


def letter_row(letter: DeadLetter) -> dict[str, Any]:
    return {
        "id": letter.id,
        "event_type": letter.event_type,
        "handler": letter.handler,
        "guild": letter.guild,
        "workspace_id": letter.workspace_id,
        "correlation_id": letter.correlation_id,
        "error": f"{letter.exception_type}: {letter.message}",
        "attempts": letter.attempts,
        "replays": letter.replays,
        "last_failed_at": letter.last_failed_at.isoformat(),
    }


def filters(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "workspace_id": args.workspace,
        "event_type": args.event_type,
        "handler": args.handler,
        "guild": args.guild,
        "older_than": args.older_than,
    }


def has_filter(args: argparse.Namespace) -> bool:
    return any(v is not None for v in filters(args).values())


def confirm(question: str, assume_yes: bool) -> bool:
    if assume_yes:
        return True
    if not sys.stdin.isatty():
        print(f"{question} refused: not a terminal; pass --yes", file=sys.stderr)
        return False
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def cmd_dlq(args: argparse.Namespace) -> int:
    with open_bus() as bus:
        dlq = bus.dlq
        if args.dlq_command == "list":
            letters = dlq.list(**filters(args), limit=args.limit)
            rows = [letter_row(d) for d in letters]

            def render() -> None:
                from rich.console import Console
                from rich.table import Table

                table = Table(title=f"dead letters: {len(rows)} of {dlq.count()}")
                for col in ("id", "event", "handler", "workspace", "error", "attempts"):
                    table.add_column(col)
                for r in rows:
                    table.add_row(
                        r["id"],
                        r["event_type"] or "-",
                        r["handler"],
                        r["workspace_id"] or "-",
                        r["error"][:60],
                        str(r["attempts"]),
                    )
                Console().print(table)

            out(rows, args.json, render)
            return EXIT_OK
        if args.dlq_command == "show":
            letter = dlq.get(args.id)
            data = letter.model_dump(mode="json")
            out(data, args.json, lambda: print(json.dumps(data, indent=2)))
            return EXIT_OK
        if args.dlq_command == "export":
            stream = open(args.output, "w") if args.output else sys.stdout  # noqa: SIM115
            try:
                for letter in dlq.each(LetterFilter(**filters(args))):
                    stream.write(letter.model_dump_json() + "\n")
            finally:
                if stream is not sys.stdout:
                    stream.close()
            return EXIT_OK
        ids = list(args.ids)
        bulk = args.all or has_filter(args)
        if not ids and not bulk:
            print("error: name dead-letter ids, a filter, or --all", file=sys.stderr)
            return EXIT_BAD_INPUT
        matching = dlq.each(LetterFilter(**filters(args))) if bulk else iter(())
        targets = ids + [d.id for d in matching]
        for letter_id in ids:
            dlq.get(letter_id)
        verb = args.dlq_command
        if bulk and not confirm(f"{verb} {len(targets)} dead letter(s)?", args.yes):
            return EXIT_FAILED
        if verb == "replay":
            done = [dlq.replay(i) for i in dict.fromkeys(targets)]
            result: dict[str, Any] = {"replayed": done}
            message = f"replayed {len(done)} dead letter(s)"
        else:
            count = dlq.purge(targets)
            result = {"purged": count}
            message = f"purged {count} dead letter(s)"
        out(result, args.json, lambda: print(message))
        return EXIT_OK


# outbox ----------------------------------------------------------------------


def cmd_outbox(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    if args.outbox_command == "status":
        outbox = Outbox(settings.home, target_for(settings.broker_url))
        data: dict[str, Any] = {
            "path": str(outbox.path),
            "broker": outbox.target,
            "spooling": settings.outbox,
            **outbox.stats(),
            "other_brokers": outbox.other_targets(),
        }

        def render() -> None:
            age = data["oldest_age_seconds"]
            print(f"outbox {data['path']} for {data['broker']}")
            print(f"  waiting: {data['depth']}" + ("" if age is None else f", oldest {age:.1f}s"))
            print(f"  spooled: {data['spooled']}, drained: {data['drained']} (this host)")
            for broker, depth in data["other_brokers"].items():
                print(f"  waiting for another broker {broker}: {depth}")

        out(data, args.json, render)
        return EXIT_OK
    with Bus(settings, outbox=False) as bus:
        drained = bus.drain_outbox()
        left = bus.outbox_stats()["depth"]
    result = {"drained": drained, "left": left}
    out(result, args.json, lambda: print(f"drained {drained} event(s); {left} left"))
    return EXIT_OK


# up ------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    from raptorflow_bus.demo import run_demo

    with open_bus() as bus:
        return run_demo(bus, args.seconds)


def cmd_up(args: argparse.Namespace) -> int:
    from raptorflow_bus.supervisor import run_up

    return int(run_up(args))


def cmd_bench(args: argparse.Namespace) -> int:
    """bench/ lives in the source checkout beside this package, not in the
    installed distribution: it needs the repository's anchors and handlers."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    if not (root / "bench" / "run.py").is_file():
        where = f"no bench/ in {root}"
        print(f"error: raptorbus bench needs a source checkout: {where}", file=sys.stderr)
        return EXIT_FAILED
    sys.path.insert(0, str(root))
    run = importlib.import_module("bench.run")
    options = {"events": args.events, "json_path": args.json, "only": args.only}
    return int(run.run_bench(**options, quick=args.quick, command=sys.argv))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raptorbus", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("worker", help="run one guild's Celery worker")
    p.add_argument("guild", help="a consumer of routing.py (research, muse, matrix, ...)")
    p.add_argument("--pool", default="prefork", choices=["prefork", "threads", "solo"])
    p.add_argument("--concurrency", type=int, default=None)
    p.add_argument("--loglevel", default="INFO")
    p.add_argument("--hostname", default=None)
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("flower", help="run Flower (authentication always on)")
    p.add_argument("--port", type=int, default=5555)
    p.add_argument("--address", default="127.0.0.1")
    p.set_defaults(func=cmd_flower)

    p = sub.add_parser("emit", help="validate and publish one event")
    p.add_argument("type", help="event type, e.g. signal.detected")
    p.add_argument("payload", help="the payload as a JSON object")
    p.add_argument("--workspace", default=None)
    p.add_argument("--correlation", default=None)
    p.add_argument("--priority", default="normal")
    p.add_argument("--json", action="store_true", help="print the envelope as JSON")
    p.set_defaults(func=cmd_emit)

    p = sub.add_parser("topology", help="channels, bindings, queues and live depth")
    p.add_argument("--json", action="store_true")
    p.add_argument("--markdown", action="store_true", help="the routing table, no broker")
    p.set_defaults(func=cmd_topology)

    p = sub.add_parser("stats", help="per guild: depth, oldest message, rates, DLQ depth")
    p.add_argument("--json", action="store_true")
    p.add_argument("--watch", type=float, default=None, metavar="SECONDS")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("metrics", help="serve Prometheus metrics at /metrics")
    p.add_argument("--port", type=int, default=9808)
    p.add_argument("--address", default="127.0.0.1")
    p.set_defaults(func=cmd_metrics)

    dlq = sub.add_parser("dlq", help="inspect, replay, purge or export dead letters")
    dsub = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")

    def add_filters(q: argparse.ArgumentParser) -> None:
        q.add_argument("--workspace", default=None)
        q.add_argument("--event-type", default=None)
        q.add_argument("--handler", default=None)
        q.add_argument("--guild", default=None)
        q.add_argument("--older-than", type=parse_age, default=None, metavar="AGE")

    q = dsub.add_parser("list", help="list dead letters, oldest first")
    add_filters(q)
    q.add_argument("--limit", type=int, default=None)
    q.add_argument("--json", action="store_true")
    q = dsub.add_parser("show", help="one dead letter in full")
    q.add_argument("id")
    q.add_argument("--json", action="store_true")
    q = dsub.add_parser("export", help="dead letters as JSON lines")
    add_filters(q)
    q.add_argument("--output", "-o", default=None)
    for verb in ("replay", "purge"):
        q = dsub.add_parser(verb, help=f"{verb} dead letters by id, filter or --all")
        q.add_argument("ids", nargs="*")
        add_filters(q)
        q.add_argument("--all", action="store_true")
        q.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
        q.add_argument("--json", action="store_true")
    dlq.set_defaults(func=cmd_dlq)

    box = sub.add_parser("outbox", help="events spooled on this host while the broker was down")
    bsub = box.add_subparsers(dest="outbox_command", required=True, metavar="ACTION")
    q = bsub.add_parser("status", help="depth and oldest age (reads the local file only)")
    q.add_argument("--json", action="store_true")
    q = bsub.add_parser("drain", help="publish what waits now (exit 3 if the broker is down)")
    q.add_argument("--json", action="store_true")
    box.set_defaults(func=cmd_outbox)

    p = sub.add_parser("demo", help="drive the demo agent run against running workers")
    p.add_argument("--seconds", type=float, default=6.0)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("up", help="broker, five guild workers and Flower, supervised")
    p.add_argument("--demo", action="store_true", help="drive a demo flow and exit")
    p.add_argument("--demo-seconds", type=float, default=6.0)
    p.add_argument("--no-flower", action="store_true")
    p.add_argument("--flower-port", type=int, default=5555)
    p.add_argument("--pool", default="prefork", choices=["prefork", "threads", "solo"])
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--api", action="store_true", help="also serve examples/api.py (uvicorn)")
    p.add_argument("--api-host", default="127.0.0.1")
    p.add_argument("--api-port", type=int, default=8000)
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("bench", help="the bus against plain redis-py, Kombu and Celery")
    p.add_argument("--events", type=int, default=None, metavar="N")
    p.add_argument("--json", default=None, metavar="PATH", help="results file")
    p.add_argument("--only", default=None, metavar="SECTIONS", help="e.g. publish,drain")
    p.add_argument("--quick", action="store_true", help="tiny sizes, a smoke test")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except BrokerUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BROKER
    except DeadLetterNotFound as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except BusError as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
