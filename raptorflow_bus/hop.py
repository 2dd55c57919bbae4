"""The event hop of a guild worker: events in, handler tasks out, in batches.

A thread of the worker's main process blocks on the wake lists of its event
queues, pops up to ``batch`` events in one Lua step that records each as
unacked and owned by this worker (``lua/pop_events.lua``, the transport's
atomic pop for many), validates every event, and writes all their handler
tasks, the wake token and the acks of the events in a second Lua step
(``lua/dispatch_events.lua``). Two scripts per batch instead of a Kombu
delivery, a pipeline and an ack per event: the hop cost as much as the handler
run it feeds, and Celery's consumer delivered one event per loop turn.

``batch`` adapts by itself: the pop takes what is queued up to the limit, so
a lone event goes alone at once and a backlog goes 50 at a time; while events
remain the next pop follows without waiting for a token.

Crashes: between the two steps the events are recorded against this worker,
whose reaper restores them when it dies; a reply lost with a connection leaves
them recorded against a live worker, so the worker's next contact with Redis
sweeps them back (``holders.sweep``). Their redelivery maps onto the same
task ids, and the commit writes nothing for an event restored meanwhile.

It is a thread, not Celery's event loop: a solo pool runs handlers in that
loop, and events would wait behind every handler run."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import redis

from raptorflow_bus import keys
from raptorflow_bus.errors import NotReplicated
from raptorflow_bus.holders import HOLDERS, NEEDS_SWEEP, sweep
from raptorflow_bus.hop_batch import Plan, Popped, plan_batch
from raptorflow_bus.logs import log
from raptorflow_bus.packed_script import PackedScript, call
from raptorflow_bus.reaper import step_list
from raptorflow_bus.topology import PRIORITY_SEP, PRIORITY_STEPS
from raptorflow_bus.wire import Wire

if TYPE_CHECKING:
    from raptorflow_bus.bus import Bus

logger = logging.getLogger("bus")

DEFAULT_BATCH = 50
# Beyond the blocking pop's own timeout, how long a reply may take.
READ_MARGIN_SECONDS = 3.0
MAX_PAUSE_SECONDS = 1.0


class EventHop:
    """The hop of ``consumers``' event queues for the worker ``owner``: ``run``
    is its loop (``start``/``stop`` in a thread); ``pop``, ``commit`` and
    ``step`` are its parts, for tests and tools."""

    def __init__(
        self,
        bus: Bus,
        consumers: Sequence[str],
        owner: str | None,
        *,
        batch: int = DEFAULT_BATCH,
        wait_seconds: float = 1.0,
        priority_steps: Sequence[int] = PRIORITY_STEPS,
        sep: str = PRIORITY_SEP,
    ) -> None:
        self.bus = bus
        self.consumers = list(consumers)
        self.owner = owner
        self.batch = max(int(batch), 1)
        self.wait_seconds = wait_seconds
        self.steps = sorted(priority_steps)
        self.sep = sep
        queues = [bus.topology.event_queue(c) for c in self.consumers]
        self._queues = queues
        self._wakes = [keys.wake(q) for q in queues]
        # Priority first across all the queues, as Kombu's BRPOP key order is.
        self._lists = [step_list(q, s, self.steps, sep) for s in self.steps for q in queues]
        self._held: list[str] = []
        self._client: redis.Redis[bytes] | None = None
        self._wire: Wire | None = None
        self._pop = PackedScript("pop_events")
        self._commit = PackedScript("dispatch_events")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False
        self._held_back = False
        HOLDERS.add(self)

    def held_tags(self) -> list[str]:
        """The tags of the batch in hand (the sweep of another thread reads it)."""
        return list(self._held)

    # Redis -------------------------------------------------------------

    @property
    def client(self) -> redis.Redis[bytes]:
        """The hop's own client (its rare calls: the sweep, waiting for replicas)."""
        return self._connection()[0]

    @property
    def wire(self) -> Wire:
        """The same client's kept connection, for the calls of every batch."""
        return self._connection()[1]

    def _connection(self) -> tuple[redis.Redis[bytes], Wire]:
        if self._client is None or self._wire is None:
            options = self.bus.app.conf.broker_transport_options
            read = max(READ_MARGIN_SECONDS, self.bus.replica_acks.timeout_seconds + 0.5)
            address = self.bus.address
            assert address is not None, "the event hop needs a broker"
            self._client = address.client(
                socket_timeout=self.wait_seconds + read,
                socket_connect_timeout=float(options.get("socket_connect_timeout") or 5),
                socket_keepalive=True,
                socket_keepalive_options=options.get("socket_keepalive_options") or {},
            )
            self._wire = Wire(self._client, retry=False)
            self._pop.wire = self._commit.wire = self._wire
        return self._client, self._wire

    def wait(self) -> bool:
        """Block until a wake token (or the timeout); whether events may wait.
        On a timeout one EXISTS finds events written without a token (a stock
        Kombu producer's), as the transport's timeout does."""
        wire = self.wire
        if call(wire, "BRPOP", *self._wakes, self.wait_seconds) is not None:
            return True
        return bool(call(wire, "EXISTS", *self._lists))

    def pop(self) -> tuple[list[Popped], bool]:
        """Up to ``batch`` events, now recorded as this worker's; and whether
        more are queued."""
        owned = keys.owned(self.owner) if self.owner else ""
        script_keys = [keys.UNACKED, keys.UNACKED_INDEX, keys.MALFORMED, owned]
        args: list[Any] = [time.time(), len(self._queues), self.batch, *self._queues]
        self.wire  # noqa: B018 (connects first: a failure to connect leaves nothing to sweep)
        try:
            reply = self._pop([*script_keys, *self._wakes, *self._lists], args)
        except (redis.ConnectionError, redis.TimeoutError):
            # The script may have run: what it recorded is swept back.
            self._mark_for_sweep()
            raise
        more = bool(int(reply[0]))
        popped = []
        for i in range(1, len(reply), 3):
            index = int(reply[i]) - 1
            tag = reply[i + 2].decode()
            popped.append(Popped(self.consumers[index], self._queues[index], reply[i + 1], tag))
        self._held = [p.tag for p in popped]
        return popped, more

    def commit(self, plan: Plan) -> None:
        """Write the tasks, wake their queues and ack the events, in one script;
        with replica acks the WAIT follows in the same round trip, and while
        replicas do not confirm the batch the hop waits for them (``_confirm``)."""
        owned = keys.owned(self.owner) if self.owner else ""
        wakes: dict[str, int] = {}
        lists: dict[str, int] = {}
        args: list[Any] = []
        for popped, tasks in zip(plan.popped, plan.tasks, strict=True):
            if tasks is None or not tasks.messages:
                args += [popped.tag, "", 0]
                continue
            wakes.setdefault(keys.wake(tasks.queue), len(wakes))
            index = lists.setdefault(tasks.key, len(lists) + 1)
            args += [popped.tag, keys.dispatched(tasks.queue, tasks.envelope.id), len(tasks)]
            for message in tasks.messages:
                args += [index, message]
        script_keys = [keys.UNACKED, keys.UNACKED_INDEX, owned, *wakes, *lists]
        args = [len(wakes), len(plan.popped), self.bus.dedup_ttl, *args]
        try:
            flags = self._commit(script_keys, args, self.bus.replica_acks)
        except NotReplicated as exc:
            self._confirm(exc)
            flags = exc.replies[0] if exc.replies else []
        except (redis.ConnectionError, redis.TimeoutError):
            self._mark_for_sweep()
            raise
        else:
            self._report_confirmed()
        finally:
            self._held = []
        self._count_copies(plan, flags)

    def _confirm(self, exc: NotReplicated) -> None:
        """The master took the tasks and the acks, but too few replicas confirmed
        them: wait for the replicas, with nothing else to hop meanwhile (a new
        batch could not be confirmed either). If the master dies first, the
        promoted replica still has these events queued or recorded against this
        worker, and the sweep after the lost connection puts them back; their
        tasks, if they did get there, are known by their dispatched markers.

        The write that WAIT then measures is this worker's heartbeat: harmless
        on any server (a stale marker on a new master would drop its events)."""
        self._report_held_back(exc)
        owner = self.owner

        def beat(pipe: Any) -> None:
            if owner:
                pipe.zadd(keys.HEARTBEATS, {owner: time.time()}, xx=True)

        try:
            confirmed = self.bus.replica_acks.confirm(
                self.client, beat, lambda: not self._stop.is_set()
            )
        except (redis.ConnectionError, redis.TimeoutError):
            self._mark_for_sweep()
            raise
        if confirmed:
            self._report_confirmed()

    def _count_copies(self, plan: Plan, flags: Sequence[Any]) -> None:
        """A second copy of an event wrote nothing: count it where a second copy
        of a task is counted, as a duplicate of each of its handlers."""
        counts: dict[tuple[str, str], int] = {}
        metrics = self.bus.metrics
        for tasks, flag in zip(plan.tasks, flags, strict=False):
            if tasks is None or int(flag) != 2:
                continue
            env = tasks.envelope
            for name in tasks.handlers:
                found = metrics.counts(
                    env.type, "duplicates", handler=name, workspace=env.workspace_id
                )
                for field, n in found.items():
                    counts[field] = counts.get(field, 0) + n
            log(logging.INFO, f"skipped a second copy of {env.type}", envelope=env)
        if counts:
            self.bus.store.incr(counts)

    def _mark_for_sweep(self) -> None:
        self._held = []
        if self.owner:
            NEEDS_SWEEP.add(self.owner)

    # one round -----------------------------------------------------------

    def step(self) -> bool:
        """Pop a batch, plan it, commit it; whether more events are queued."""
        popped, more = self.pop()
        if popped:
            try:
                plan = plan_batch(self.bus, popped)
            except BaseException:
                self._mark_for_sweep()
                raise
            self.commit(plan)
        return more

    def _report_held_back(self, exc: NotReplicated) -> None:
        if not self._held_back:
            log(
                logging.WARNING,
                f"dispatch to {'+'.join(self.consumers)!r} waits until replicas confirm: {exc}",
            )
        self._held_back = True

    def _report_confirmed(self) -> None:
        if self._held_back:
            log(
                logging.INFO,
                f"dispatch to {'+'.join(self.consumers)!r} confirmed by replicas again",
            )
        self._held_back = False

    # thread --------------------------------------------------------------

    def run(self) -> None:
        """The loop: until stopped, wait for events and hop them. A broker error
        is logged once per outage and retried with a short backoff; whatever a
        lost reply left recorded against this worker is swept back first."""
        more = True  # events may wait without a token from before this start
        pause = 0.05
        while not self._stop.is_set():
            try:
                if self.owner and self.owner in NEEDS_SWEEP:
                    sweep(self.client, self.owner, self.steps, self.sep)
                if more or self.wait():
                    more = self.step()
                self._recovered()
                pause = 0.05
            except Exception as exc:
                self._failed(exc)
                more = True
                self._stop.wait(pause)
                pause = min(pause * 2, MAX_PAUSE_SECONDS)

    def _failed(self, exc: Exception) -> None:
        if isinstance(exc, NotReplicated):
            return
        if not self._failing:
            if isinstance(exc, redis.RedisError | OSError):
                logger.warning(f"event hop of {'+'.join(self.consumers)} lost the broker: {exc}")
            else:
                logger.exception(f"event hop of {'+'.join(self.consumers)} failed; retrying")
        self._failing = True

    def _recovered(self) -> None:
        if self._failing:
            logger.info(f"event hop of {'+'.join(self.consumers)} reached the broker again")
        self._failing = False

    def start(self) -> None:
        HOLDERS.add(self)
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name="raptorbus-event-hop", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Finish the batch in hand, then stop (within the blocking pop's timeout)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.wait_seconds + READ_MARGIN_SECONDS * 2)
            self._thread = None
        if self._wire is not None:
            self._wire.close()
            self._wire = None
        if self._client is not None:
            self._client.close()
            self._client = None
        HOLDERS.discard(self)
