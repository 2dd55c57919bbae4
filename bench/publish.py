"""Publishing: ``emit``, ``emit_many`` and async ``publish`` at concurrency 1,
10 and 100, against the anchors of ``bench.anchors``, all to the two queues
that hear ``signal.detected`` (research and council).

The one-at-a-time figures (concurrency 1) and their anchors take turns for
``rounds`` rounds and keep their median, so a neighbour's burst of load does
not land on one side of a ratio only; the concurrent figures then take turns
for as many rounds, and keep their median too. Concurrency is threads for ``emit`` and
``emit_many`` (each sends its share, all released together by a barrier) and
asyncio tasks of one event loop for ``publish``. The broker is emptied between
variants so that no variant pushes onto longer lists than another. The
topology is routing.py's with the queue limits lifted (the biggest variant
queues 100,000 events in each queue, over the research limit): the Lua script
checks the same lists' lengths either way."""

from __future__ import annotations

import asyncio
import importlib
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import replace

from bench import anchors
from bench.context import Context
from bench.report import Target
from bench.sides import EVENT, SIGNAL, WORKSPACE, new_bus, spooled, wait_unspooled
from raptorflow_bus import Bus, Settings, Topology
from raptorflow_bus.kombu_messages import kombu_message
from raptorflow_bus.queues import queue_states

SECTION = "publish"
UNLIMITED = 10**9


def lifted(topology: Topology) -> Topology:
    """The same channels, consumers and bindings, without queue limits."""
    channels = [replace(c, max_queue_length=UNLIMITED) for c in topology.channels.values()]
    return Topology.build(
        channels,
        topology.consumers.values(),
        exchange=topology.exchange,
        dlq_capacity=topology.dlq_capacity,
    )


def in_threads(c: int, work: Callable[[], None]) -> float:
    """Seconds for ``c`` threads to each run ``work`` once, started together."""
    barrier = threading.Barrier(c + 1)
    errors: list[BaseException] = []

    def run() -> None:
        barrier.wait()
        try:
            work()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, daemon=True) for _ in range(c)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    if errors:
        raise errors[0]
    return seconds


def in_tasks(c: int, bus: Bus, per_task: int) -> float:
    """Seconds for ``c`` asyncio tasks to each ``await bus.publish`` ``per_task`` times."""

    async def task() -> None:
        for _ in range(per_task):
            await bus.publish(EVENT, SIGNAL, workspace_id=WORKSPACE)

    async def run() -> float:
        # A new loop gets a new connection: made before the clock starts, as
        # the sync emit's connection is.
        await bus.publish(EVENT, SIGNAL, workspace_id=WORKSPACE)
        start = time.perf_counter()
        await asyncio.gather(*(task() for _ in range(c)))
        return time.perf_counter() - start

    return asyncio.run(run())


def run(ctx: Context) -> None:
    res, sizes = ctx.results, ctx.sizes
    n, batch, rounds = sizes.events, sizes.batch, sizes.rounds
    per_round = max(10, n // rounds)
    many = max(n, 10 * batch)
    batches_per_round = max(1, many // (rounds * batch))
    ctx.fresh()
    routing = importlib.import_module(Settings.from_env().routing_module)
    bus = new_bus(ctx, lifted(Topology.from_module(routing)))
    events = [(EVENT, SIGNAL)] * batch
    measured: dict[str, float | None] = {}
    counts: dict[str, int] = {}
    samples: dict[str, list[float | None]] = {}
    spooled_by: dict[str, int] = {}
    try:

        def measure(name: str, run: Callable[[], float]) -> float | None:
            """``run``'s rate, or None when some of its events went to the
            outbox instead of the broker (the raw rate is kept in the JSON)."""
            before = spooled(bus)
            value = run()
            n_spooled = spooled(bus) - before
            if not n_spooled:
                return value
            spooled_by[name] = spooled_by.get(name, 0) + n_spooled
            res.detail(SECTION, f"{name} rate with spooling", value)
            wait_unspooled(bus)
            return None

        def reset() -> None:
            ctx.fresh()
            bus.declare_topology()

        body = anchors.body_of(bus)
        message = kombu_message(body, "research", 6)

        def emit() -> None:
            bus.emit(EVENT, SIGNAL, workspace_id=WORKSPACE)

        def emit_batch() -> None:
            bus.emit_many(events, workspace_id=WORKSPACE)

        def prepare() -> None:
            bus.prepare(EVENT, SIGNAL, workspace_id=WORKSPACE)

        # The one-at-a-time figures and their anchors take turns, round by
        # round, and each keeps its median: the ratios between them are the
        # ones the targets are set on.
        paired: dict[str, Callable[[], float]] = {
            "redis-py LPUSH, 1 round trip": lambda: anchors.redis_single(ctx, message, per_round),
            "redis-py 2x LPUSH, 1 round trip": lambda: anchors.redis_fanout(
                ctx, message, per_round, anchors.ANCHOR_QUEUES
            ),
            "kombu topic publish": lambda: anchors.kombu_topic_publish(ctx, bus, body, per_round),
            "celery apply_async": lambda: anchors.celery_apply_async(ctx, per_round),
            "bus.prepare (validation only)": lambda: anchors.timed(per_round, prepare),
            "emit c=1": lambda: anchors.timed(per_round, emit),
            "publish c=1": lambda: anchors.rate(per_round, in_tasks(1, bus, per_round)),
            "redis-py pipelined batch": lambda: anchors.redis_batches(
                ctx, message, batches_per_round * batch, batch
            ),
            "emit_many c=1": lambda: batch * anchors.timed(batches_per_round, emit_batch, warm=1),
        }
        samples.update({name: [] for name in paired})
        for _ in range(rounds):
            for name, run_one in paired.items():
                reset()
                samples[name].append(measure(name, run_one))
        for name, values in samples.items():
            valid = [v for v in values if v is not None]
            measured[name] = statistics.median(valid) if valid else None
        counts.update(dict.fromkeys(paired, per_round))
        counts["redis-py pipelined batch"] = counts["emit_many c=1"] = batches_per_round * batch

        # The concurrent figures, each the median of ``rounds`` runs too (one
        # run of 3,000 events is a fraction of a second on a shared VM).
        concurrent: dict[str, tuple[int, Callable[[], float]]] = {}
        for c in sizes.concurrency:
            if c == 1:
                continue
            per = max(1, n // c)

            def emit_share(per: int = per) -> None:
                for _ in range(per):
                    emit()

            concurrent[f"emit c={c}"] = (
                per * c,
                lambda c=c, per=per, f=emit_share: anchors.rate(per * c, in_threads(c, f)),
            )
            shares = max(1, many // (c * batch))

            def send_batches(shares: int = shares) -> None:
                for _ in range(shares):
                    emit_batch()

            total = shares * c * batch
            concurrent[f"emit_many c={c}"] = (
                total,
                lambda c=c, total=total, f=send_batches: anchors.rate(total, in_threads(c, f)),
            )
            concurrent[f"publish c={c}"] = (
                per * c,
                lambda c=c, per=per: anchors.rate(per * c, in_tasks(c, bus, per)),
            )
        runs: dict[str, list[float | None]] = {name: [] for name in concurrent}
        for _ in range(rounds):
            for name, (_, run_many) in concurrent.items():
                reset()
                runs[name].append(measure(name, run_many))
        for name, (count, _) in concurrent.items():
            valid = [v for v in runs[name] if v is not None]
            measured[name] = statistics.median(valid) if valid else None
            counts[name] = count
        samples.update(runs)
        check_queued(bus)
    finally:
        ctx.fresh()
        bus.close()
    for name in ORDER:
        base = name.split(" c=")[0]
        note = NOTES.get(name, NOTES.get(base, "")).format(batch=batch)
        if name in spooled_by:
            warning = f"{spooled_by[name]} events spooled to the outbox (broker read timeout)"
            res.warnings.append(f"publish {name}: {warning}; runs that spooled are not counted")
            note = f"{note}; {warning}".lstrip("; ")
        res.add(
            SECTION,
            name,
            measured.get(name),
            "tasks/s" if name == "celery apply_async" else "events/s",
            target=TARGETS.get(name),
            note=note,
        )
    res.detail(SECTION, "events per measurement", counts)
    res.detail(SECTION, "rounds (the figure is their median)", samples)
    for name, numerator, denominator, target in RATIOS:
        res.ratio(SECTION, name, f"{SECTION}/{numerator}", f"{SECTION}/{denominator}", target)


ORDER = (
    "redis-py LPUSH, 1 round trip",
    "redis-py 2x LPUSH, 1 round trip",
    "redis-py pipelined batch",
    "kombu topic publish",
    "celery apply_async",
    "bus.prepare (validation only)",
    *(f"{kind} c={c}" for kind in ("emit", "emit_many", "publish") for c in (1, 10, 100)),
)
RATIOS = (
    ("emit / redis-py LPUSH", "emit c=1", "redis-py LPUSH, 1 round trip", Target(">=", 0.65)),
    ("emit / redis-py 2x LPUSH", "emit c=1", "redis-py 2x LPUSH, 1 round trip", None),
    ("emit / kombu topic publish", "emit c=1", "kombu topic publish", None),
    ("emit / celery apply_async", "emit c=1", "celery apply_async", None),
    ("publish c=1 / emit c=1", "publish c=1", "emit c=1", Target(">=", 1.0)),
    ("emit_many c=1 / redis-py batch", "emit_many c=1", "redis-py pipelined batch", None),
)
TARGETS = {"emit_many c=1": Target(">=", 50_000), "publish c=100": Target(">=", 20_000)}
NOTES = {
    "redis-py pipelined batch": "{batch} events x 2 LPUSH per round trip",
    "kombu topic publish": "stock Kombu, same exchange, same 2 bound queues",
    "celery apply_async": "stock Kombu",
    "emit_many": "batches of {batch}",
    "publish": "async, asyncio tasks",
}


def check_queued(bus: Bus) -> None:
    """The last variant's events are all in their queues: what was timed was
    published, not refused or lost on the way."""
    routing_key = bus.prepare(EVENT, SIGNAL, workspace_id=WORKSPACE)[0].routing_key
    queues = bus.topology.consumers_for(routing_key)
    depths = [q.depth for q in queue_states(bus, [bus.topology.event_queue(c) for c in queues])]
    if not depths or min(depths) == 0:
        raise RuntimeError(f"published events are missing from their queues: {depths}")
