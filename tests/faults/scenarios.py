"""The fault scenarios, each a plain function: build a stage in ``workdir``, do
the damage, wait (bounded) for the bus to recover, return the row. pytest
asserts on the rows; ``bench/faults.py`` prints them. 1 to 10 are issue 9's
(processes and the broker failing), 11 to 13 issue 14's (the network between
them going silent or slow, through ``tests.netproxy.SilentProxy``), 14 to 16
also issue 14's (Redis failing over under Sentinel, ``tests.faults.sentinel_stage``).

Recovery is timed from the fault to the moment every accepted event's handler
has finished and the guild has nothing queued or unacked. Timings are reported,
never asserted: the counts are what must hold."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from raptorflow_bus import Bus, BusError
from raptorflow_bus.dispatch import dispatch
from raptorflow_bus.kombu_messages import kombu_message, wake
from raptorflow_bus.queues import UNACKED_KEY
from raptorflow_bus.topology import PRIORITY_STEPS, priority_list
from raptorflow_bus.transport import MALFORMED_KEY
from tests.faults.garbage import NORMAL, Garbage, for_queue, push
from tests.faults.harness import (
    HANDLERS_MODULE,
    READY_SECONDS,
    SETTLE_SECONDS,
    Emitted,
    Emitter,
    Stage,
    stage,
)
from tests.faults.processes import GUILD, wait_for
from tests.faults.sentinel_stage import SentinelStage, sentinel_stage
from tests.faults.table import Row
from tests.payloads import VALID

METRICS = VALID["system.metrics"]
HEALTH = VALID["bus.health"]
ERRORS = VALID["system.error_aggregation"]
SIGNAL = VALID["signal.detected"]
COUNTING = f"{GUILD}.count_run"
# Issue 14: a worker whose connections went silent is consuming again within this.
RESUME_SECONDS = 15.0


def _since(fault: float, elapsed: float | None) -> float | None:
    return None if elapsed is None else time.monotonic() - fault


def _first(errors: list[BaseException]) -> str:
    return f"{type(errors[0]).__name__}: {str(errors[0])[:160]}" if errors else "-"


def _first_started(st: Stage, ids: list[str]) -> tuple[str, int]:
    """The event whose handler started first, and the pid running it."""
    if wait_for(lambda: bool(st.ledger.pids(ids)), READY_SECONDS) is None:
        raise RuntimeError("no handler started")
    return next(iter(st.ledger.pids(ids).items()))


def pool_child_killed(workdir: Path) -> Row:
    """The pool child running a handler is SIGKILLed; the run comes back and
    completes once, and the worker's main process carries on."""
    with stage(workdir) as st:
        worker = st.ready(st.worker("a", sleep=2.0))
        emitter = Emitter(st.bus, "bus.health", HEALTH).run(4, rate=100)
        ids = emitter.accepted_ids
        victim, pid = _first_started(st, ids)
        in_pool = pid in worker.children()
        os.kill(pid, signal.SIGKILL)
        fault = time.monotonic()
        recover = _since(fault, st.settle(ids))
        return st.row(
            SCENARIOS[1][0],
            emitter.sent,
            ids,
            emitter.spooled,
            recover,
            victim_in_pool=in_pool,
            victim_runs=st.ledger.runs([victim])[victim],
            worker_alive=worker.alive,
        )


def worker_killed_under_backlog(workdir: Path) -> Row:
    """Main process and pool SIGKILLed with 500 events queued, a new worker
    started at once: what the dead one held must come back within 30 s."""
    with stage(workdir) as st:
        emitter = Emitter(st.bus, "system.metrics", METRICS).run(500, rate=5000)
        ids = emitter.accepted_ids
        first = st.worker("a")
        wait_for(lambda: sum(st.ledger.done(ids).values()) >= 100, READY_SECONDS)
        first.kill()
        fault = time.monotonic()
        done_at_kill = sum(st.ledger.done(ids).values())
        st.worker("b")
        recover = _since(fault, st.settle(ids, 30.0))
        return st.row(
            SCENARIOS[2][0],
            emitter.sent,
            ids,
            emitter.spooled,
            recover,
            done_at_kill=done_at_kill,
            unacked_left=int(st.bus.redis.hlen(UNACKED_KEY)),
        )


def warm_shutdown_under_load(workdir: Path) -> Row:
    """SIGTERM while events pour in: running handlers finish, prefetched ones
    go back, and the next worker runs each exactly once."""
    with stage(workdir) as st:
        first = st.ready(st.worker("a", sleep=0.05))
        emitter = Emitter(st.bus, "bus.health", HEALTH).start(200, rate=100)
        wait_for(lambda: st.ledger.total_runs() >= 30, READY_SECONDS)
        first.terminate()
        fault = time.monotonic()
        exit_code = first.wait(60)
        st.worker("b", sleep=0.05)
        emitter.join(60)
        ids = emitter.accepted_ids
        recover = _since(fault, st.settle(ids))
        return st.row(
            SCENARIOS[3][0],
            emitter.sent,
            ids,
            emitter.spooled,
            recover,
            first_exit=exit_code,
            emit_errors=len(emitter.errors),
        )


def broker_restarted_during_emits(workdir: Path) -> Row:
    """redis-server SIGKILLed 1 s into 200 emits/s and restarted from its AOF
    2 s later: the worker must ride it out alone and every emit be accepted."""
    with stage(workdir) as st:
        worker = st.ready(st.worker("a"))
        emitter = Emitter(st.bus, "system.metrics", METRICS).start(800, rate=200)
        time.sleep(1.0)
        st.broker.kill()
        fault = time.monotonic()
        time.sleep(2.0)
        st.broker.start()
        finished = emitter.join(60)
        ids = emitter.accepted_ids
        recover = _since(fault, st.settle(ids))
        return st.row(
            SCENARIOS[4][0],
            emitter.sent,
            ids,
            emitter.spooled,
            recover,
            emit_errors=len(emitter.errors),
            first_error=_first(emitter.errors),
            emitter_finished=finished,
            worker_alive=worker.alive,
        )


def broker_silent(workdir: Path) -> Row:
    """The broker stops answering for 10 s (SIGSTOP: sockets stay open, so only
    timeouts notice). Every emit started meanwhile must spool rather than hang,
    and a solo worker must then run the events in the order they were emitted."""
    with stage(workdir) as st:
        st.ready(st.worker("a", pool="solo", concurrency=1))
        emitter = Emitter(st.bus, "system.metrics", METRICS).start(420, rate=30)
        time.sleep(2.0)
        st.broker.pause()
        fault = time.monotonic()
        try:
            time.sleep(10.0)
        finally:
            st.broker.resume()
        back = time.monotonic()
        finished = emitter.join(90)
        ids = emitter.accepted_ids
        recover = _since(fault, st.settle(ids, 60.0))
        during = [r for r in emitter.records if fault <= r.started < back]
        accepted = set(ids)
        return st.row(
            SCENARIOS[5][0],
            emitter.sent,
            ids,
            emitter.spooled,
            recover,
            emit_errors=len(emitter.errors),
            emits_during_outage=len(during),
            spooled_during_outage=sum(r.spooled for r in during),
            longest_emit_s=round(max(r.ended - r.started for r in emitter.records), 1),
            order_kept=[i for i in st.ledger.order() if i in accepted] == ids,
            emitter_finished=finished,
        )


def _queued_ids(bus: Bus, queue: str) -> set[str]:
    ids = set()
    for step in PRIORITY_STEPS:
        for raw in bus.redis.lrange(priority_list(queue, step), 0, -1):
            ids.add(json.loads(json.loads(raw)["body"])["id"])
    return ids


def broker_out_of_memory(workdir: Path) -> Row:
    """Redis at ``maxmemory`` with ``noeviction`` while no worker drains: each
    emit is accepted or refused with a clear ``BusError``, and a ``signal``
    (research and council) is in both queues or in neither."""
    with stage(workdir) as st:
        st.broker.limit_memory(1_000_000)
        payload = {**SIGNAL, "summary": "x" * 3_900}
        emitter = Emitter(st.bus, "signal.detected", payload, workspace_id="ws-faults")
        emitter.run(300, rate=1000)
        research, council = _queued_ids(st.bus, "research"), _queued_ids(st.bus, "council")
        refused = emitter.errors
        unclear = [e for e in refused if not isinstance(e, BusError) or "memory" not in str(e)]
        ids = emitter.accepted_ids
        st.broker.limit_memory(None)
        fault = time.monotonic()
        st.ready(st.worker("a"))
        recover = _since(fault, st.settle(ids))
        return st.row(
            SCENARIOS[6][0],
            emitter.sent,
            ids,
            emitter.spooled,
            recover,
            refused=len(refused),
            unclear_refusals=len(unclear),
            first_refusal=_first(refused),
            half_published=len(research ^ council),
            queued_not_accepted=len((research | council) - set(ids)),
        )


def long_handler_on_live_worker(workdir: Path) -> Row:
    """A 12 s handler on a solo worker (its main process busy all along) with a
    2 s reclaim interval, and a second worker starting meanwhile, its reaper
    with it: the live worker's delivery must not be taken from it."""
    reclaim, sleep = 2.0, 12.0
    with stage(workdir, reclaim=reclaim) as st:
        st.ready(st.worker("a", pool="solo", concurrency=1, sleep=sleep))
        emitter = Emitter(st.bus, "bus.health", HEALTH).run(1, rate=1)
        ids = emitter.accepted_ids
        _first_started(st, ids)
        started = time.monotonic()
        st.ready(st.worker("b", sleep=sleep))
        mid_handler = not any(st.ledger.done(ids).values())
        recover = _since(started, st.settle(ids))
        wait_for(lambda: st.ledger.total_runs() > 1, 3 * reclaim)
        return st.row(
            SCENARIOS[7][0],
            emitter.sent,
            ids,
            emitter.spooled,
            recover,
            runs=st.ledger.total_runs(),
            second_worker_up_mid_handler=mid_handler,
        )


def failing_handlers_replayed(workdir: Path) -> Row:
    """100 events whose handler always fails: 4 runs each, 100 dead letters.
    Then the cause is fixed and an operator replays them all from the CLI."""
    with stage(workdir) as st:
        st.ready(st.worker("a"))
        emitter = Emitter(st.bus, "system.error_aggregation", ERRORS).run(100, rate=1000)
        ids = emitter.accepted_ids
        wait_for(lambda: st.bus.dlq.count() >= len(ids) and st.idle(), SETTLE_SECONDS)
        dead, runs_before = st.bus.dlq.count(), st.ledger.total_runs()
        st.ledger.fix()
        fault = time.monotonic()
        replay = st.cli("dlq", "replay", "--all", "--yes")
        recover = _since(fault, wait_for(lambda: st.bus.dlq.count() == 0 and st.settled(ids), 60))
        return st.row(
            SCENARIOS[8][0],
            emitter.sent,
            ids,
            emitter.spooled,
            recover,
            dead=dead,
            runs_before_fix=runs_before,
            runs_total=st.ledger.total_runs(),
            replay_exit=replay.returncode,
            dlq_after_replay=st.bus.dlq.count(),
        )


def _redeliver(bus: Bus, emitter: Emitter) -> None:
    """A second copy of each event in the guild's queue (what a restore writes)
    and a second copy of each handler task (what a reclaim of a finished run writes)."""
    for env in emitter.accepted:
        pipe = bus.redis.pipeline(transaction=False)
        pipe.lpush(priority_list(GUILD, NORMAL), kombu_message(env.to_json(), GUILD, NORMAL))
        wake(pipe, GUILD)
        pipe.execute()
        dispatch(bus, env, GUILD)


def same_event_twice(workdir: Path) -> Row:
    """20 events handled, then each delivered again as an event and as a
    handler task: every copy is a counted duplicate, no handler runs again."""
    with stage(workdir) as st:
        st.ready(st.worker("a"))
        emitter = Emitter(st.bus, "system.metrics", METRICS).run(20, rate=1000)
        ids = emitter.accepted_ids
        st.settle(ids)
        st.bus.load_handlers([HANDLERS_MODULE])
        fault = time.monotonic()
        _redeliver(st.bus, emitter)

        def duplicates() -> int:
            counts = st.bus.get_metrics()["handlers"].get(COUNTING, {})
            return int(counts.get("duplicates", 0))

        copies = 2 * len(ids)
        recover = _since(fault, wait_for(lambda: duplicates() >= copies and st.idle(), 60))
        return st.row(
            SCENARIOS[9][0],
            emitter.sent + copies,
            ids,
            emitter.spooled,
            recover,
            copies=copies,
            duplicates_counted=duplicates(),
            most_runs=max(st.ledger.runs(ids).values()),
        )


def _where(item: Garbage, quarantined: list[bytes], letters: list[tuple[str, str]]) -> str:
    """Where a garbage message ended up; ``letters`` are (JSON, exception type)."""
    for text, exception_type in letters:
        if any(m in text for m in item.markers):
            return f"dlq: {exception_type}"
    if any(m.encode() in raw for raw in quarantined for m in item.markers):
        return "quarantine"
    return "nowhere"


def garbage_on_the_wire(workdir: Path) -> Row:
    """Five kinds of garbage in the handler queue and five in the event queue,
    then five good events: the worker lives on, every reject is quarantined
    or dead-lettered with its reason, and no handler runs on any of it."""
    with stage(workdir) as st:
        worker = st.ready(st.worker("a"))
        items = for_queue(st.bus, st.bus.topology.handler_queue(GUILD), COUNTING)
        items += for_queue(st.bus, GUILD, None)
        push(st.bus, items)
        fault = time.monotonic()
        emitter = Emitter(st.bus, "system.metrics", METRICS).run(5, rate=1000)
        ids = emitter.accepted_ids
        recover = _since(fault, st.settle(ids))
        quarantined = st.bus.redis.lrange(MALFORMED_KEY, 0, -1)
        letters = [(d.model_dump_json(), d.exception_type) for d in st.bus.dlq.list()]
        where = {g.label: _where(g, quarantined, letters) for g in items}
        return st.row(
            SCENARIOS[10][0],
            emitter.sent + len(items),
            ids,
            emitter.spooled,
            recover,
            dead=sum(w != "nowhere" for w in where.values()),
            worker_alive=worker.alive,
            handler_runs_on_garbage=sum(st.ledger.runs([g.marker for g in items]).values()),
            **where,
        )


def _done_count(st: Stage, ids: list[str]) -> int:
    return sum(1 for n in st.ledger.done(ids).values() if n)


def _longest(records: list[Emitted]) -> float:
    return round(max((r.ended - r.started for r in records), default=0.0), 2)


def worker_connections_dropped(workdir: Path) -> Row:
    """A worker reaches Redis through a proxy that, 2 s into 300 emits at 30/s,
    stops forwarding on every open connection without closing any (a NAT that
    forgot the flows); new connections pass. At that rate a pool child is as
    often between two runs (its next claim goes out on a dead connection) as in
    one (its done record does). The worker's timeouts must notice, it must
    reconnect by itself, and every event run once, those it held when the
    connections died included. ``resumed_s``: from the freeze to the first event
    emitted after it being handled, waited for until 15 s after the freeze."""
    with stage(workdir) as st:
        proxy = st.proxy()
        worker = st.ready(st.worker("a", sleep=0.02, broker_url=proxy.url))
        emitter = Emitter(st.bus, "bus.health", HEALTH).start(300, rate=30)
        wait_for(lambda: emitter.sent >= 60, 30)
        frozen = proxy.freeze()
        fault = time.monotonic()
        before = emitter.accepted_ids
        connections = proxy.connections
        unfinished = len(before) - _done_count(st, before)
        finished = emitter.join(30)
        ids = emitter.accepted_ids
        after = [r.envelope.id for r in emitter.records if r.envelope and r.started >= fault]
        left = RESUME_SECONDS - (time.monotonic() - fault)
        resumed = _since(fault, wait_for(lambda: _done_count(st, after) > 0, left))
        recover = _since(fault, st.settle(ids, 30.0))
        return st.row(
            SCENARIOS[11][0],
            emitter.sent,
            ids,
            emitter.spooled,
            recover,
            frozen_connections=frozen,
            unfinished_at_freeze=unfinished,
            resumed_s=None if resumed is None else round(resumed, 1),
            new_connections=proxy.connections - connections,
            most_runs=max(st.ledger.runs(ids).values(), default=0),
            emit_errors=len(emitter.errors),
            emitter_finished=finished,
            worker_alive=worker.alive,
        )


def emitter_connections_dropped(workdir: Path) -> Row:
    """A bus emitting at 50/s through a proxy whose open connections go silent
    1 s in, and again 3 s in (catching the connections opened since, the outbox
    relay's among them). Each emit must return within its 2 s bound, spooling
    what the broker did not take, and the outbox drain through a new connection."""
    with stage(workdir) as st:
        st.ready(st.worker("a"))
        proxy = st.proxy()
        bus = st.bus_at(proxy.url)
        emitter = Emitter(bus, "system.metrics", METRICS).start(300, rate=50)
        wait_for(lambda: emitter.sent >= 50, 30)
        frozen = proxy.freeze()
        fault = time.monotonic()
        wait_for(lambda: emitter.sent >= 150, 30)
        frozen += proxy.freeze()
        finished = emitter.join(60)
        ids = emitter.accepted_ids
        drained = wait_for(lambda: bus.outbox_stats()["depth"] == 0, SETTLE_SECONDS)
        recover = None if drained is None else _since(fault, st.settle(ids))
        return st.row(
            SCENARIOS[12][0],
            emitter.sent,
            ids,
            emitter.spooled,
            recover,
            frozen_connections=frozen,
            longest_emit_s=_longest(emitter.records),
            emit_errors=len(emitter.errors),
            first_error=_first(emitter.errors),
            outbox_left=bus.outbox_stats()["depth"],
            emitter_finished=finished,
        )


def _handled_per_s(st: Stage, ids: list[str], start: float, seconds: float) -> float | None:
    """Events per second from ``start`` until all of ``ids`` were handled."""
    if wait_for(lambda: _done_count(st, ids) == len(ids), seconds) is None:
        return None
    return round(len(ids) / max(time.monotonic() - start, 1e-3), 1)


def slow_broker(workdir: Path) -> Row:
    """Every reply from Redis to the emitting bus and to the worker comes 200 ms
    late for 10 s. 100 events at 100/s before, 40 at 4/s during, 100 at 100/s
    after: no emit may raise or spool, no handler run twice, and the rate after
    must be the rate before again (reported, not asserted)."""
    with stage(workdir) as st:
        proxy = st.proxy()
        st.ready(st.worker("a", broker_url=proxy.url))
        bus = st.bus_at(proxy.url)
        first = Emitter(bus, "system.metrics", METRICS)
        start = time.monotonic()
        rate_before = _handled_per_s(st, first.run(100, rate=100).accepted_ids, start, 30)
        proxy.delay = 0.2
        fault = time.monotonic()
        slow = Emitter(bus, "system.metrics", METRICS).start(40, rate=4)
        time.sleep(10.0)
        during = _done_count(st, slow.accepted_ids)
        proxy.delay = 0.0
        slow_finished = slow.join(30)
        last = Emitter(bus, "system.metrics", METRICS)
        start = time.monotonic()
        rate_after = _handled_per_s(st, last.run(100, rate=100).accepted_ids, start, 30)
        emitters = (first, slow, last)
        ids = [i for e in emitters for i in e.accepted_ids]
        records = [r for e in emitters for r in e.records]
        recover = _since(fault, st.settle(ids))
        return st.row(
            SCENARIOS[13][0],
            sum(e.sent for e in emitters),
            ids,
            sum(e.spooled for e in emitters),
            recover,
            emit_errors=sum(len(e.errors) for e in emitters),
            first_error=_first([x for e in emitters for x in e.errors]),
            longest_emit_s=_longest(records),
            slow_emits_handled_during=during,
            handled_per_s_before=rate_before,
            handled_per_s_after=rate_after,
            emitter_finished=slow_finished,
        )


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 1)


def _stats_master(st: SentinelStage) -> str:
    """The master ``raptorbus stats --json`` names, as an operator would read it."""
    stats = st.cli("stats", "--json")
    if stats.returncode not in (0, 1):  # 1: a guild is stalled, which is not this row's concern
        return f"exit {stats.returncode}: {stats.stderr[-200:]}"
    return str(json.loads(stats.stdout)["master"])


def _sentinel_failover(workdir: Path, number: int, replica_acks: int) -> Row:
    """One master, two replicas, three Sentinels; the master SIGKILLed 1 s into
    1,000 emits at 200/s. Emits must spool rather than raise while no master
    answers, the worker must follow the promoted replica by itself, and
    ``raptorbus stats`` name it. Two replicas, so that one is left to confirm
    writes after the failover (with one, acks 1 accepts nothing into Redis
    until a replica is back: scenario 16)."""
    with sentinel_stage(workdir, replicas=2, replica_acks=replica_acks) as st:
        topology = st.topology
        before = topology.current_master()
        worker = st.ready(st.worker("a"))
        emitter = Emitter(st.bus, "system.metrics", METRICS).start(1000, rate=200)
        time.sleep(1.0)
        topology.master.kill()
        fault = time.monotonic()
        failover = topology.failed_over(30.0)
        finished = emitter.join(60)
        ids = emitter.accepted_ids
        promoted = fault + (failover or 0.0)
        after = [r.envelope.id for r in emitter.records if r.envelope and r.started >= promoted]
        recover = _since(fault, st.settle(ids))
        master = topology.current_master()
        return st.row(
            SCENARIOS[number][0],
            emitter.sent,
            ids,
            emitter.spooled,
            recover,
            emit_errors=len(emitter.errors),
            first_error=_first(emitter.errors),
            failover_s=_rounded(failover),
            master_moved=master != before,
            master_after=master,
            stats_master=_stats_master(st),
            emitted_after_failover=len(after),
            handled_after_failover=_done_count(st, after),
            emitter_finished=finished,
            worker_alive=worker.alive,
        )


def sentinel_failover_acks_1(workdir: Path) -> Row:
    return _sentinel_failover(workdir, 14, replica_acks=1)


def sentinel_failover_acks_0(workdir: Path) -> Row:
    return _sentinel_failover(workdir, 15, replica_acks=0)


def old_master_comes_back(workdir: Path) -> Row:
    """One master, one replica, acks 1; the master SIGKILLed 1 s into 600 emits
    at 100/s and restarted from its AOF 1 s after the failover, as a supervisor
    would. Until it is back as a replica nothing can confirm a write, so emits
    spool; the Sentinels must make it a replica of the new master, nobody may
    write to it, and no event may be handled twice."""
    with sentinel_stage(workdir, replicas=1, replica_acks=1) as st:
        topology = st.topology
        old = topology.master
        worker = st.ready(st.worker("a"))
        emitter = Emitter(st.bus, "system.metrics", METRICS).start(600, rate=100)
        time.sleep(1.0)
        old.kill()
        fault = time.monotonic()
        failover = topology.failed_over(30.0)
        time.sleep(1.0)
        old.start()
        master = topology.server(topology.current_master())
        rejoined = wait_for(lambda: old.follows(master), 30.0)
        finished = emitter.join(60)
        ids = emitter.accepted_ids
        recover = _since(fault, st.settle(ids))
        return st.row(
            SCENARIOS[16][0],
            emitter.sent,
            ids,
            emitter.spooled,
            recover,
            emit_errors=len(emitter.errors),
            first_error=_first(emitter.errors),
            failover_s=_rounded(failover),
            replica_again_s=_rounded(rejoined),
            writes_refused_by_old=old.refused_writes(),
            clients_on_old=old.other_clients(),
            old_holds_what_new_holds=old.holds_what(master),
            emitter_finished=finished,
            worker_alive=worker.alive,
        )


SCENARIOS: dict[int, tuple[str, Callable[[Path], Row]]] = {
    1: ("1 pool child SIGKILLed mid-handler", pool_child_killed),
    2: ("2 worker+pool SIGKILLed, 500 queued", worker_killed_under_backlog),
    3: ("3 SIGTERM under load", warm_shutdown_under_load),
    4: ("4 redis SIGKILLed+restarted, 200/s", broker_restarted_during_emits),
    5: ("5 broker silent 10 s", broker_silent),
    6: ("6 redis at maxmemory, noeviction", broker_out_of_memory),
    7: ("7 handler longer than reclaim", long_handler_on_live_worker),
    8: ("8 100 always failing, replayed", failing_handlers_replayed),
    9: ("9 same event delivered twice", same_event_twice),
    10: ("10 garbage on the wire", garbage_on_the_wire),
    11: ("11 worker connections dropped silently", worker_connections_dropped),
    12: ("12 emitter connections dropped silently", emitter_connections_dropped),
    13: ("13 slow broker, +200 ms per reply for 10 s", slow_broker),
    14: ("14 sentinel failover, replica acks 1", sentinel_failover_acks_1),
    15: ("15 sentinel failover, replica acks 0", sentinel_failover_acks_0),
    16: ("16 old master comes back", old_master_comes_back),
}
