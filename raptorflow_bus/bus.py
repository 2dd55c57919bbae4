"""The ``Bus``: the one object that holds a deployment's connections and state.

It validates and publishes events, owns the Celery app whose tasks are the
registered handlers, and exposes the dead-letter queue and the counters. There
is no module state: ``get_bus()`` in ``raptorflow_bus.default`` is a thin
accessor over one instance built from the environment."""

from __future__ import annotations

import asyncio
import importlib
import logging
import re
import socket
import ssl
import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

import redis
from celery import Celery
from kombu.exceptions import OperationalError
from redis.backoff import NoBackoff
from redis.retry import Retry

from raptorflow_bus import keys, tracing
from raptorflow_bus.aio_wire import AsyncWire
from raptorflow_bus.backoff import Backoff
from raptorflow_bus.bindings import Redeclare
from raptorflow_bus.breaker import Breaker
from raptorflow_bus.broker_address import BrokerAddress, close_client
from raptorflow_bus.catalogue import Catalogue
from raptorflow_bus.context import correlation_id_var, current_envelope_var, workspace_id_var
from raptorflow_bus.dlq import DeadLetterQueue
from raptorflow_bus.embedded import EmbeddedRedis
from raptorflow_bus.envelope import Envelope, Priority, routing_key_for, utcnow
from raptorflow_bus.errors import (
    BatchInterrupted,
    BrokerUnavailable,
    BusError,
    ConfigurationError,
    HandlerError,
    InvalidEnvelope,
    InvalidPayload,
    MissingWorkspace,
    PayloadTooLarge,
    Unroutable,
)
from raptorflow_bus.execution import HandlerTask, run_handler
from raptorflow_bus.group_commit import Committers
from raptorflow_bus.handlers import HandlerFunc, HandlerGroup, HandlerSpec, make_spec
from raptorflow_bus.health import read_health
from raptorflow_bus.ids import uuid4_string
from raptorflow_bus.logs import log
from raptorflow_bus.memory_store import MemoryStore
from raptorflow_bus.metrics import Metrics
from raptorflow_bus.outbox import Outbox, target_for
from raptorflow_bus.publisher import EagerPublisher, Prepared, Publisher, RedisPublisher
from raptorflow_bus.redis_store import RedisStore
from raptorflow_bus.relay import Relay
from raptorflow_bus.replica_acks import ReplicaAcks
from raptorflow_bus.send_policy import SendPolicy, log_published
from raptorflow_bus.sent import Sent, SentBatch
from raptorflow_bus.settings import Settings, mask_url
from raptorflow_bus.signing import Signer
from raptorflow_bus.store import Store
from raptorflow_bus.topology import Topology

HANDLER_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PRIORITIES = {p: Priority(p) for p in [*Priority, *(p.value for p in Priority)]}
EventItem = tuple[str, Any] | Mapping[str, Any]

# A broker that has not answered within these bounds counts as unreachable: the
# emit spools (the outbox's first write costs about a millisecond). A pooled
# connection that died with a restart fails at once and is retried once on a
# new one; a timeout is never retried, so an emit is bounded by connect + read,
# 2 s, even on a connection that went silent. Strict mode has no outbox to fall
# back on, so it bounds the whole connect-and-ping to 1 s.
CONNECT_TIMEOUT_SECONDS = 0.5
READ_TIMEOUT_SECONDS = 1.5
STRICT_TIMEOUT_SECONDS = 0.5
WAIT_MARGIN_SECONDS = 0.25
# Probe an idle connection after 5 s, give up after 3 probes 2 s apart (types-redis
# types the keys as str; redis-py takes the socket option numbers).
KEEPALIVE_OPTIONS: Any = {socket.TCP_KEEPIDLE: 5, socket.TCP_KEEPINTVL: 2, socket.TCP_KEEPCNT: 3}


__all__ = ["Bus", "Sent", "SentBatch", "make_celery_app"]


def make_celery_app(settings: Settings, overrides: Mapping[str, Any] | None) -> Celery:
    app = Celery("raptorflow", set_as_current=False)
    app.config_from_object(settings.celery_config_module)
    if settings.eager:
        app.conf.update(
            task_always_eager=True, task_eager_propagates=False, task_store_eager_result=False
        )
    if settings.retry_base_seconds is not None:
        app.conf.update(raptorbus_retry_base_seconds=settings.retry_base_seconds)
    if overrides:
        app.conf.update(overrides)
    return app


class Bus:
    def __init__(
        self,
        settings: Settings | None = None,
        *,
        topology: Topology | None = None,
        catalogue: Catalogue | None = None,
        store: Store | None = None,
        celery_config: Mapping[str, Any] | None = None,
        outbox: bool | None = None,
    ) -> None:
        """``outbox=False`` (or ``RAPTORBUS_OUTBOX=off``) is strict mode: an emit
        while the broker is unreachable raises ``BrokerUnavailable`` within 1 s
        instead of spooling. Eager buses never use an outbox."""
        self.settings = settings or Settings.from_env()
        self.topology = topology or Topology.from_module(
            importlib.import_module(self.settings.routing_module)
        )
        self.catalogue = catalogue or Catalogue.default()
        self.app = make_celery_app(self.settings, celery_config)
        conf = self.app.conf
        self.eager = bool(conf.task_always_eager)
        self.max_retries = int(conf.get("raptorbus_max_retries", 3))
        self.backoff = Backoff(
            float(conf.get("raptorbus_retry_base_seconds", 2.0)),
            float(conf.get("raptorbus_retry_cap_seconds", 300.0)),
            bool(conf.get("raptorbus_retry_jitter", True)),
        )
        self.dedup_ttl = int(conf.get("raptorbus_dedup_ttl_seconds", 7200))
        self.reclaim_seconds = self.settings.reclaim_seconds or float(
            conf.get("raptorbus_reclaim_seconds", 15.0)
        )
        self._check_timeouts()
        self.app.conf.task_queues = [
            self.topology.kombu_handler_queue(c) for c in self.topology.consumers
        ]
        self._specs: dict[str, HandlerSpec] = {}
        self._routes: dict[tuple[str, str], list[HandlerSpec]] = {}
        self._store = store
        self._publisher: Publisher | None = None
        self._client: redis.Redis[bytes] | None = None
        self._embedded: EmbeddedRedis | None = None
        self._lock = threading.RLock()
        self.outbox: Outbox | None = None
        self.breaker = Breaker("broker")
        self._relay: Relay | None = None
        if not self.eager:
            self.outbox = Outbox(self.settings.home, target_for(self.settings.broker_url))
            if self.settings.outbox if outbox is None else outbox:
                self._relay = Relay(self.outbox, self.breaker, self._connected_publisher)
        self.policy = SendPolicy(self._relay, self.breaker)
        self._committers = Committers(self)
        self._timeouts = (CONNECT_TIMEOUT_SECONDS, READ_TIMEOUT_SECONDS)
        self.dlq = DeadLetterQueue(self)
        self.signer = Signer.parse(self.settings.signing_keys)
        self.broker_url: str | None = None
        self.address: BrokerAddress | None = None
        self.replica_acks = ReplicaAcks(
            self.settings.min_replica_acks, self.settings.replica_ack_timeout_seconds
        )

    def _check_timeouts(self) -> None:
        visibility = float(self.app.conf.broker_transport_options.get("visibility_timeout", 3600))
        limit = self.app.conf.task_time_limit
        if self.backoff.cap_seconds >= visibility:
            raise ConfigurationError(
                f"retry cap {self.backoff.cap_seconds}s must be below the visibility timeout "
                f"{visibility}s, or a delayed retry is restored and runs twice"
            )
        if limit is not None and float(limit) >= visibility:
            raise ConfigurationError(
                f"task_time_limit {limit}s must be below the visibility timeout {visibility}s"
            )

    # connection ---------------------------------------------------------

    def connect(self) -> Bus:
        """Open the broker (embedded if none is configured) and declare the topology.

        With the outbox on, an unreachable broker is not an error here: the bus
        comes up anyway, its emits spool, and its relay thread connects and
        drains once the broker answers. Strict and eager buses raise
        ``BrokerUnavailable``. A bus that connects also drains what earlier
        processes of this host left in the outbox for this broker."""
        if self._publisher is not None:
            return self
        try:
            self._open()
        except BrokerUnavailable as exc:
            if self._relay is None:
                raise
            self.breaker.failure(str(exc))
        if self._relay is not None:
            self._relay.start()
        return self

    def _connected_publisher(self) -> Publisher:
        """The publisher, connecting first if needed; raises ``BrokerUnavailable``."""
        if self._publisher is None:
            self._open()
        publisher = self._publisher
        assert publisher is not None
        return publisher

    def _open(self) -> None:
        """Connect and install the publisher. The network steps (and starting
        the embedded server) hold no lock, so a worker's pool child forked
        meanwhile never inherits a lock held by a thread that is not there;
        two threads racing here both dial, and the slower one's client is closed."""
        embedded = None
        with self._lock:
            if self._publisher is not None:
                return
            if self.eager:
                self._store = self._store or MemoryStore()
                self._publisher = EagerPublisher(self)
                return
            if self.settings.broker_url is None:
                self._embedded = self._embedded or EmbeddedRedis(
                    self.settings.home, self.settings.appendfsync
                )
                embedded = self._embedded
        url = embedded.acquire() if embedded is not None else self.settings.broker_url
        assert url is not None
        address = self.settings.address_of(url)
        self.broker_url = url
        self.address = address
        conf = self.app.conf
        conf.update(address.celery_conf(conf.broker_transport, conf.broker_transport_options))
        if url.startswith("rediss://") and not conf.broker_use_ssl:
            # The custom transport is not picked by URL scheme, so Kombu
            # would not turn TLS on by itself; verify certificates.
            conf.update(broker_use_ssl={"ssl_cert_reqs": ssl.CERT_REQUIRED})
        strict = self._relay is None
        read_timeout = STRICT_TIMEOUT_SECONDS if strict else READ_TIMEOUT_SECONDS
        if self.replica_acks.replicas:
            # WAIT must run out first, so a missing replica reads as
            # NotReplicated (the write is known) rather than a timeout.
            read_timeout = max(
                read_timeout, self.replica_acks.timeout_seconds + WAIT_MARGIN_SECONDS
            )
        connect_timeout = STRICT_TIMEOUT_SECONDS if strict else CONNECT_TIMEOUT_SECONDS
        self._timeouts = (connect_timeout, read_timeout)
        client = address.client(
            health_check_interval=30,
            socket_connect_timeout=connect_timeout,
            socket_timeout=read_timeout,
            socket_keepalive=True,
            socket_keepalive_options=KEEPALIVE_OPTIONS,
            retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
        )
        try:
            client.ping()
            self.declare_topology()
        except (redis.RedisError, OSError, OperationalError) as exc:
            close_client(client)
            raise BrokerUnavailable(f"cannot reach broker {mask_url(url)}: {exc}") from exc
        with self._lock:
            if self._publisher is not None:
                close_client(client)
                return
            self._client = client
            self._store = self._store or RedisStore(client, self.replica_acks)
            self._publisher = RedisPublisher(
                client,
                self.topology,
                self.replica_acks,
                per_workspace=self.settings.metrics_per_workspace,
                on_missing=Redeclare(self.declare_topology),
            )
        if embedded is not None:
            log(logging.INFO, f"using embedded redis broker {mask_url(url)}")
        else:
            log(logging.INFO, f"using broker {mask_url(url)}")
        self.breaker.success()

    @property
    def redis_publisher(self) -> RedisPublisher | None:
        """The broker's publisher once connected (None on an eager bus)."""
        publisher = self._publisher
        return publisher if isinstance(publisher, RedisPublisher) else None

    def connected_redis_publisher(self) -> RedisPublisher:
        """Connect if needed; raises ``BrokerUnavailable``."""
        publisher = self._connected_publisher()
        if not isinstance(publisher, RedisPublisher):
            raise BusError("an eager bus has no Redis publisher")
        return publisher

    def async_wire(self) -> AsyncWire:
        """A connection to the broker for the running event loop's publishes,
        with an emit's bounds (``aio_wire.AsyncWire``)."""
        address = self.address
        if address is None:
            raise BrokerUnavailable("the bus is not connected")
        connect_timeout, read_timeout = self._timeouts
        client = address.async_client(
            health_check_interval=30,
            socket_connect_timeout=connect_timeout,
            socket_timeout=None,
            socket_keepalive=True,
            socket_keepalive_options=KEEPALIVE_OPTIONS,
        )
        return AsyncWire(client, connect_timeout=connect_timeout, read_timeout=read_timeout)

    def declare_topology(self) -> None:
        """Declare exchange, queues and bindings; idempotent (trap 1). Bumps the
        binding table's version, so every publisher reads the table again (the
        bus's transport bumps it per binding too; a stock one would not)."""
        with self.app.connection_for_write() as conn:
            # Fail rather than retry forever if the broker went away since the ping.
            conn.ensure_connection(max_retries=1)
            channel: Any = conn.default_channel
            self.topology.kombu_exchange(channel).declare()
            for consumer in self.topology.consumers:
                self.topology.kombu_event_queue(consumer)(channel).declare()
                self.topology.kombu_handler_queue(consumer)(channel).declare()
            with channel.conn_or_acquire() as client:
                client.incr(keys.bindings_version(self.topology.exchange))

    @property
    def redis(self) -> redis.Redis[bytes]:
        """The broker's client; raises ``BrokerUnavailable`` while it is unreachable."""
        if self.eager:
            raise BusError("an eager bus has no Redis connection")
        self._connected_publisher()
        assert self._client is not None
        return self._client

    def current_master(self) -> str | None:
        """``host:port`` of the master the Sentinels name now (it changes with a
        failover); None when the broker is not on Sentinel."""
        if self.address is None or not self.address.is_sentinel:
            return None
        try:
            return self.address.current_master(self.redis)
        except redis.RedisError as exc:
            raise BrokerUnavailable(f"no master: {exc}") from exc

    @property
    def store(self) -> Store:
        if self._store is None:
            self._connected_publisher()
        assert self._store is not None
        return self._store

    @property
    def metrics(self) -> Metrics:
        return Metrics(self.store, per_workspace=self.settings.metrics_per_workspace)

    def _release_embedded(self) -> None:
        if self._embedded is not None:
            self._embedded.release()
            self._embedded = None

    def close(self) -> None:
        """Disconnect. Events still in the outbox stay there, for the next bus
        process of this host (or ``raptorbus outbox drain``) to publish."""
        if self._relay is not None:
            self._relay.stop()
        self._committers.close()
        with self._lock:
            publisher, self._publisher = self._publisher, None
            if isinstance(publisher, RedisPublisher):
                publisher.close()
            if isinstance(self._store, RedisStore):
                self._store.close()
            if self._client is not None:
                close_client(self._client)
                self._client = None
            self._release_embedded()

    def __enter__(self) -> Bus:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # handlers -----------------------------------------------------------

    def subscribe(
        self,
        event_type: str,
        handler: HandlerFunc,
        guild: str | None = None,
        *,
        name: str | None = None,
    ) -> HandlerSpec:
        """Run ``handler`` for every ``event_type`` event that reaches ``guild``'s queue.

        Without a guild the handler joins the first consumer in routing.py that
        hears the event, so it runs once per event rather than once per queue."""
        self.catalogue.spec(event_type)
        hearing = self.topology.consumers_for(routing_key_for(event_type))
        if guild is None:
            if not hearing:
                raise Unroutable(f"no consumer hears {event_type!r}; add a binding in routing.py")
            guild = hearing[0]
        self.topology.consumer(guild)
        if guild not in hearing:
            raise HandlerError(
                f"guild {guild!r} does not hear {event_type!r}: its queue is not bound to "
                f"{routing_key_for(event_type)!r} (it is heard by {', '.join(hearing) or 'nobody'})"
            )
        handler_name = str(name or getattr(handler, "__name__", ""))
        if not HANDLER_NAME_RE.match(handler_name):
            raise HandlerError(
                f"handler name {handler_name!r} is not an identifier; pass name='...'"
            )
        task_name = f"{guild}.{handler_name}"
        with self._lock:
            spec = self._specs.get(task_name)
            if spec is None:
                spec = make_spec(handler_name, guild, handler)
                self.app.task(
                    name=task_name,
                    bind=True,
                    base=HandlerTask,
                    bus=self,
                    max_retries=self.max_retries,
                    shared=False,
                    lazy=False,
                )(run_handler)
                self._specs[task_name] = spec
            elif spec.func is not handler:
                raise HandlerError(
                    f"another handler is already registered as {task_name!r}; pass name='...'"
                )
            if event_type not in spec.event_types:
                spec.event_types.add(event_type)
                self._routes.setdefault((guild, event_type), []).append(spec)
        return spec

    def on(
        self, event_type: str, guild: str | None = None, *, name: str | None = None
    ) -> Callable[[HandlerFunc], HandlerFunc]:
        def register(func: HandlerFunc) -> HandlerFunc:
            self.subscribe(event_type, func, guild, name=name)
            return func

        return register

    def include(self, *groups: HandlerGroup) -> None:
        for group in groups:
            for sub in group.subscriptions:
                self.subscribe(sub.event_type, sub.func, sub.guild, name=sub.name)

    def load_handlers(self, modules: Iterable[str] | None = None) -> None:
        """Import handler modules and include every ``HandlerGroup`` they list in GROUPS."""
        for module_name in modules if modules is not None else self.settings.handler_modules:
            module = importlib.import_module(module_name)
            groups = getattr(module, "GROUPS", None)
            if groups is None:
                raise ConfigurationError(f"handler module {module_name!r} defines no GROUPS")
            self.include(*groups)

    def handlers_for(self, consumer: str, event_type: str) -> list[HandlerSpec]:
        return self._routes.get((consumer, event_type), [])

    def handler(self, task_name: str) -> HandlerSpec:
        try:
            return self._specs[task_name]
        except KeyError:
            raise HandlerError(f"no handler registered as {task_name!r}") from None

    @property
    def handler_specs(self) -> list[HandlerSpec]:
        return list(self._specs.values())

    def is_expired(self, envelope: Envelope, consumer: str) -> bool:
        now = utcnow()
        if envelope.expires_at is not None and now > envelope.expires_at:
            return True
        return now > envelope.timestamp + self.topology.retention(envelope.type, consumer)

    # emitting -----------------------------------------------------------

    def prepare(
        self,
        event_type: str,
        payload: Any = None,
        *,
        workspace_id: str | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        priority: Priority | str = Priority.NORMAL,
        source_agent_id: str | None = None,
        expires_at: datetime | None = None,
    ) -> Prepared:
        """Validate and wrap one event without publishing it."""
        spec = self.catalogue.spec(event_type)
        data = self.catalogue.to_wire(event_type, {} if payload is None else payload)
        current = current_envelope_var.get()
        workspace = workspace_id if workspace_id is not None else workspace_id_var.get()
        if spec.workspace_scoped and not workspace:
            raise MissingWorkspace(
                f"event {event_type!r} is workspace-scoped: pass workspace_id= or emit inside "
                "bus_context(workspace_id=...)"
            )
        correlation = correlation_id or correlation_id_var.get() or uuid4_string()
        try:
            checked_priority = _PRIORITIES[priority]
        except (KeyError, TypeError):
            raise InvalidEnvelope(
                f"priority {priority!r} is not one of {', '.join(p.value for p in Priority)}"
            ) from None
        try:
            envelope = Envelope(
                type=event_type,
                payload=data,
                priority=checked_priority,
                workspace_id=workspace,
                correlation_id=correlation,
                request_id=correlation,
                causation_id=causation_id or (current.id if current else None),
                source_agent_id=source_agent_id,
                expires_at=expires_at,
                trace_context=tracing.carrier(),
            )
        except ValueError as exc:
            raise InvalidEnvelope(f"invalid envelope for {event_type!r}: {exc}") from exc
        envelope = self.seal(envelope)
        body = envelope.to_json()
        size = len(body) if body.isascii() else len(body.encode())
        if size > self.settings.max_payload_bytes:
            raise PayloadTooLarge(
                f"event {event_type!r} is {size} bytes, over the limit of "
                f"{self.settings.max_payload_bytes} bytes"
            )
        if not self.topology.consumers_for(envelope.routing_key):
            raise Unroutable(f"no queue is bound to {envelope.routing_key!r}; it would be dropped")
        return envelope, body

    def seal(self, envelope: Envelope) -> Envelope:
        """``envelope`` signed with the deployment's current key (as is, unsigned,
        when no keys are configured). Anything that changes an envelope after
        ``prepare`` (an edit before a replay) must seal it again."""
        return envelope if self.signer is None else self.signer.seal(envelope)

    def verify(self, envelope: Envelope) -> None:
        """Raises ``signing.BadSignature`` when keys are configured and no listed
        key made ``envelope``'s seal (unsigned, unknown key, or tampered)."""
        if self.signer is not None:
            self.signer.verify(envelope)

    def emit(self, event_type: str, payload: Any = None, **options: Any) -> Envelope:
        """Validate, publish to every bound queue (or spool), and return the envelope."""
        return self.send(event_type, payload, **options).envelope

    @tracing.traced_send
    def send(self, event_type: str, payload: Any = None, **options: Any) -> Sent:
        """``emit`` that also says whether the event was spooled to the outbox.

        Either way the event is accepted (DESIGN.md section 8); a spooled one
        reaches its queues when the outbox drains. Bad input raises before
        anything is published or spooled."""
        prepared = self.prepare(event_type, payload, **options)
        return Sent(prepared[0], self._send([prepared]) > 0)

    def emit_many(self, events: Iterable[EventItem], **common: Any) -> list[Envelope]:
        """Every event is validated before any is published; then the batch is
        published whole or refused whole (``Backpressure``, a broker error).

        A batch over one call's bounds (``publish_call.MAX_COPIES`` copies, about
        5 ms of Redis time) goes as several calls, sent together and run in
        order; the first checks every queue's room for the whole batch. If the
        broker fails after the first of them ran, the published events are a
        prefix of the batch: with the outbox on, the rest is spooled (the batch
        is accepted); in strict mode ``BatchInterrupted`` says which events were
        published. ``send_many`` returns how many were."""
        return self.send_many(events, **common).envelopes

    @tracing.traced_send_many
    def send_many(self, events: Iterable[EventItem], **common: Any) -> SentBatch:
        """``emit_many`` that also says whether the batch was spooled, and how many
        of its events (from the start) were published rather than spooled."""
        prepared = []
        for item in events:
            if isinstance(item, Mapping):
                fields = dict(item)
                event_type = fields.pop("type", None)
                payload = fields.pop("payload", None)
                if not isinstance(event_type, str):
                    raise InvalidPayload(f"event item {item!r} has no 'type'")
                prepared.append(self.prepare(event_type, payload, **{**common, **fields}))
            else:
                event_type, payload = item
                prepared.append(self.prepare(event_type, payload, **common))
        spooled = self._send(prepared) if prepared else 0
        envelopes = [envelope for envelope, _ in prepared]
        return SentBatch(envelopes, spooled > 0, len(prepared) - spooled)

    async def publish(self, event_type: str, payload: Any = None, **options: Any) -> Envelope:
        """``emit`` for asyncio code. It validates in the calling task, then the
        event loop's group commit sends it, with every other publish of the same
        tick, in one script call (``group_commit``); the loop never blocks."""
        return (await self.asend(event_type, payload, **options)).envelope

    async def asend(self, event_type: str, payload: Any = None, **options: Any) -> Sent:
        """``publish`` that also says whether the event was spooled (``send``)."""
        if self.eager:
            return await asyncio.to_thread(self.send, event_type, payload, **options)
        prepared = self.prepare(event_type, payload, **options)
        return await self._committers.for_running_loop().submit(prepared)

    def _send(self, prepared: list[Prepared]) -> int:
        """Publish, or spool to the outbox (``send_policy``); return how many of
        ``prepared`` were spooled (all or none, but for an interrupted split batch)."""
        policy = self.policy
        if policy.spool_first(prepared):
            return len(prepared)
        try:
            self._connected_publisher().publish(prepared)
        except BrokerUnavailable as exc:
            policy.unreachable(prepared, exc)
            return len(prepared)
        except BatchInterrupted as exc:
            return policy.interrupted(prepared, exc)
        except BusError:
            policy.answered()
            raise
        policy.answered()
        log_published(prepared)
        return 0

    @property
    def spooling(self) -> bool:
        """Whether an emit now would go to the outbox: the broker is unreachable,
        or this bus's spooled events have not all drained yet."""
        relay = self._relay
        return relay is not None and (relay.behind or not self.breaker.allow())

    def drain_outbox(self) -> int:
        """Publish what this host's outbox holds for this broker, now; return how
        many. Raises ``BrokerUnavailable`` if the broker is unreachable; returns 0
        if another process is draining."""
        if self.outbox is None:
            return 0
        return self.outbox.drain(self._connected_publisher().publish)

    def outbox_stats(self) -> dict[str, Any]:
        """Read from the local file, so it works while the broker is down."""
        if self.outbox is None:
            return {"depth": 0, "oldest_age_seconds": None, "spooled": 0, "drained": 0}
        return self.outbox.stats()

    def health(self) -> dict[str, Any]:
        """Per guild: workers alive, depth, oldest age, handler counts and p50/p99
        delivery latency, flagged ``stalled`` when messages wait and no worker
        lives; what ``raptorbus stats`` shows and the ``bus.health`` event carries."""
        if self.eager:
            raise ConfigurationError("health() reads the broker's queues; an eager bus has none")
        return read_health(self)

    def get_metrics(self) -> dict[str, Any]:
        """The counters (kept in the broker) plus this host's outbox."""
        return {**self.metrics.snapshot(), "outbox": self.outbox_stats()}
