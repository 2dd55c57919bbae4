"""Kombu's Redis transport with the pop and the unacked record made one step.

Stock Kombu BRPOPs a message and records it as unacked in a second round trip.
A worker killed between the two loses the message: Redis hands it to a socket
nobody reads, and it is in no queue and no unacked hash. Emitting right after
a SIGKILL lost one event in three that way (``bench/kill_loss.py``: 10 of 30
with stock Kombu, 0 of 30 here). Here a consumer blocks on a wake
list instead, and a Lua script pops the message and records it as unacked
atomically, so at every instant a message is in its queue or in the unacked
hash, from which Kombu's own visibility-timeout restore brings it back.

Every writer that goes through this transport (publish, restore) pushes a wake
token, and every pop re-arms the token of each queue still holding messages;
a message written by anyone else is found at the next wake or BRPOP timeout
(``brpop_timeout``, 1 s). Kombu's non-blocking ``basic_get`` keeps the stock
path. ``global_keyprefix`` is not supported.

A popped delivery is recorded as unacked against the anonymous exchange and
the queue it came from, whatever exchange it was published to, so every
restore puts it back on that queue only (a stock producer's message names the
topic exchange, and Kombu would fan it out to every bound queue again). Every
bind, unbind and queue delete bumps the exchange's binding version, which the
bus's publishers check their cached binding table against (``publisher``).

The Lua pop costs what Kombu's second round trip cost; with one Redis client
kept per channel, plain Celery drains about 1,000 no-op tasks/s on this
transport against 700-770 on the stock one (``bench/throughput.py``).

A backlog costs one round trip per message: while the last pop left messages
queued, the next pop script goes out in place of the BRPOP (its token stays
for other consumers), and the ack of the message just handled rides on it
instead of a pipeline of its own (a crash in between leaves a finished run
unacked, and its redelivery finds the run's done record). An idle BRPOP
timeout costs one EXISTS over the queues' lists, not a pop."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from queue import Empty
from time import monotonic, time
from typing import Any, ClassVar

import redis
import redis.sentinel
from kombu.exceptions import ChannelError
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads
from kombu.utils.url import _parse_url

from raptorflow_bus import keys, scripts
from raptorflow_bus.holders import CONNECTION_ERRORS as _CONNECTION_ERRORS
from raptorflow_bus.holders import HOLDERS, NEEDS_SWEEP, sweep
from raptorflow_bus.kombu_messages import queue_command, wake, wake_key
from raptorflow_bus.silence import guarded

# Kombu's type stubs omit most of the Redis channel's attributes.
_RedisQoS: Any = kombu_redis.QoS
_RedisChannel: Any = kombu_redis.Channel
_RedisTransport: Any = kombu_redis.Transport
_RedisSentinelChannel: Any = kombu_redis.SentinelChannel
_VirtualQoS: Any = virtual.QoS

MALFORMED_KEY = keys.MALFORMED
OWNER_OPTION = "raptorbus_owner"

logger = logging.getLogger("bus")


class QoS(_RedisQoS):  # type: ignore[misc]
    """Skips the unacked write for a message the pop script already recorded,
    and keeps the owner's record of each delivery in step with the unacked hash."""

    def append(self, message: Any, delivery_tag: Any) -> None:
        if self.channel.take_recorded(delivery_tag):
            _VirtualQoS.append(self, message, delivery_tag)
        else:
            super().append(message, delivery_tag)

    def ack(self, delivery_tag: Any) -> None:
        """While a backlog drains, the next pop script follows at once and carries
        this ack (one round trip less per message); else Kombu's own ack. A crash
        in between leaves the delivery unacked: its redelivery finds the done
        record of the run that finished."""
        if self.channel.defer_ack(delivery_tag):
            _VirtualQoS.ack(self, delivery_tag)
        else:
            super().ack(delivery_tag)

    def _remove_from_indices(self, delivery_tag: Any, pipe: Any = None) -> Any:
        """Kombu wraps an ack's two deletes in MULTI/EXEC (four commands); they are
        idempotent, and the unacked record goes first: a connection lost after it
        leaves index and owner entries that every restore path skips for want of
        the record. A restore's transaction passes its own pipeline."""
        if pipe is None:
            with self.channel.conn_or_acquire() as client:
                pipe = client.pipeline(transaction=False)
        pipe.hdel(self.unacked_key, delivery_tag).zrem(self.unacked_index_key, delivery_tag)
        owner = self.channel.owner
        return pipe.hdel(keys.owned(owner), delivery_tag) if owner else pipe

    def restore_unacked(self, client: Any = None) -> None:
        """Kombu hands a closing channel's deliveries back at once; when the channel
        closes because Redis went away that fails, and a later connection of this
        worker hands them back instead (the running ones among them complete once
        through their done records, as after any restore)."""
        try:
            super().restore_unacked(client)
        except _CONNECTION_ERRORS as exc:
            tags = [str(t) for t in self._delivered]
            self._delivered.clear()
            self.channel.defer_restore(tags, exc)


class Channel(_RedisChannel):  # type: ignore[misc]
    QoS = QoS

    needs_sweep: ClassVar[set[str]] = NEEDS_SWEEP
    _in_poll: Any
    _closing: bool
    _qos: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._params: dict[bool, dict[str, Any]] = {}
        super().__init__(*args, **kwargs)
        if self.global_keyprefix:
            raise ChannelError("raptorflow_bus.transport does not support global_keyprefix")
        self._recorded: set[str] = set()
        self._no_ack_tags: set[str] = set()
        self._pop_script: Any = None
        # The last pop left messages queued: the next one goes without a BRPOP.
        self._pop_next = False
        # The queues of a pop script sent in place of a BRPOP, awaiting its reply.
        self._popping: tuple[list[str], list[str]] | None = None
        # Acks held back for that next pop script to carry.
        self._pending_acks: list[str] = []
        self._sync_client: Any = None
        options = self.connection.client.transport_options
        self.owner: str | None = options.get(OWNER_OPTION) or None
        HOLDERS.add(self)

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        """Kombu reads these from the connection, which a lost connection has
        already dropped by the time the channel restores or acks its deliveries
        (the "'NoneType' object has no attribute 'hostname'" crash); the broker's
        address does not change, so keep the first answer."""
        transport = self.connection
        if transport is not None and transport.client is not None:
            params = super()._connparams(asynchronous)
            # The guard reconnects at send time; Kombu's BRPOP connection is
            # registered with the event loop by socket, and has its own check.
            if not asynchronous and "connection_class" in params:
                params["connection_class"] = guarded(params["connection_class"])
            self._params[asynchronous] = params
        return dict(self._params[asynchronous])

    def defer_restore(self, tags: list[str], error: BaseException) -> None:
        if not tags:
            return
        if self.owner is None:
            logger.warning(
                f"could not hand back {len(tags)} deliveries ({error}); they return "
                "after the visibility timeout"
            )
            return
        self.needs_sweep.add(self.owner)
        logger.warning(
            f"could not hand back {len(tags)} deliveries ({error}); they go back as soon "
            "as Redis is reachable"
        )

    def held_tags(self) -> list[str]:
        """What this channel holds: its deliveries in hand, those popped but not
        yet delivered, and those acked but not yet written (read from other
        threads: each copied in one step)."""
        qos, popping = self._qos, self._popping
        tags = [str(tag) for tag in (list(qos._delivered) if qos is not None else [])]
        tags += list(self._recorded) + list(self._pending_acks)
        return tags + (list(popping[1]) if popping else [])

    def _queue_bind(self, exchange: str, routing_key: str, pattern: str, queue: str) -> None:
        """Kombu's bind, then the version bump that tells every bus publisher its
        cached copy of the table is stale (``publisher``)."""
        super()._queue_bind(exchange, routing_key, pattern, queue)
        self._bump_bindings(exchange)

    def _delete(self, queue: str, exchange: str, *args: Any, **kwargs: Any) -> None:
        super()._delete(queue, exchange, *args, **kwargs)
        self._bump_bindings(exchange, kwargs.get("client"))

    def queue_unbind(
        self,
        queue: str,
        exchange: str | None = None,
        routing_key: str = "",
        arguments: Any = None,
        **kwargs: Any,
    ) -> None:
        """Stock Kombu forgets the binding in this process only: the member stays
        in Redis and every producer goes on routing to the queue. Remove it there
        too (whatever regex it was stored with)."""
        super().queue_unbind(queue, exchange, routing_key, arguments, **kwargs)
        if not exchange:
            return
        table = self.keyprefix_queue % (exchange,)
        with self.conn_or_acquire() as client:
            members = [
                m
                for m in client.smembers(table)
                if (parts := bytes_to_str(m).split(self.sep))[0] == (routing_key or "")
                and parts[-1] == queue
            ]
            with client.pipeline() as pipe:
                if members:
                    pipe.srem(table, *members)
                    pipe.srem(self.keyprefix_binding_permanent % (exchange,), *members)
                pipe.incr(keys.bindings_version(exchange))
                pipe.execute()

    def _bump_bindings(self, exchange: str, client: Any = None) -> None:
        with self.conn_or_acquire(client) as conn:
            conn.incr(keys.bindings_version(exchange))

    def queue_delete(self, queue: str, *args: Any, **kwargs: Any) -> Any:
        """Closing deletes the channel's auto-delete fanout queues (Celery's pidbox
        and gossip); with Redis gone that fails, and must not cut the rest of the
        close short (the deliveries' hand-back above all). The binding left behind
        is what a killed process leaves too."""
        try:
            return super().queue_delete(queue, *args, **kwargs)
        except _CONNECTION_ERRORS as exc:
            if not self._closing:
                raise
            logger.info(f"could not delete queue {queue!r} while closing: {exc}")
            return 0

    def close(self) -> None:
        """A BRPOP still in flight is read and dropped, never turned into a
        delivery on a closing channel; a dead socket is no reason to fail the close."""
        HOLDERS.discard(self)
        try:
            self._flush_acks()
        except _CONNECTION_ERRORS:
            # Unacked in Redis, done in fact: their redelivery finds the done records.
            if self.owner:
                NEEDS_SWEEP.add(self.owner)
        if self._in_poll:
            popping, self._popping = self._popping, None
            try:
                reply = self.client.parse_response(self.client.connection, "BRPOP")
                if popping is not None and reply and reply[1]:
                    # A pop sent in place of a BRPOP took a message: hand it back.
                    self.qos.restore_by_tag(bytes_to_str(reply[1]))
            except _CONNECTION_ERRORS:
                with contextlib.suppress(*_CONNECTION_ERRORS):
                    self.client.connection.disconnect()
                if popping is not None and self.owner:
                    NEEDS_SWEEP.add(self.owner)
            except redis.exceptions.ResponseError:
                pass  # a pop the server refused took nothing
            finally:
                self._in_poll = None
        super().close()

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        """Kombu builds a new ``redis.Redis`` per call (a fifth of a handler run's
        time, measured with py-spy); a client is thread-safe, so keep one."""
        if client:
            yield client
            return
        if self._sync_client is None or self._sync_client.connection_pool is not self.pool:
            self._sync_client = self._create_client()
        yield self._sync_client

    def basic_consume(
        self, queue: str, no_ack: bool, callback: Any, consumer_tag: str, **kwargs: Any
    ) -> Any:
        if no_ack:
            self._no_ack_tags.add(consumer_tag)
        return super().basic_consume(queue, no_ack, callback, consumer_tag, **kwargs)

    def basic_cancel(self, consumer_tag: str) -> Any:
        self._flush_acks()
        result = super().basic_cancel(consumer_tag)
        if consumer_tag not in self._consumers:
            self._no_ack_tags.discard(consumer_tag)
        return result

    def take_recorded(self, delivery_tag: Any) -> bool:
        try:
            self._recorded.remove(delivery_tag)
        except KeyError:
            return False
        return True

    def _acks(self, queue: str) -> bool:
        """False when every consumer of ``queue`` is no_ack (e.g. a pidbox reply):
        recording those would restore them after the visibility timeout."""
        tags = [t for t, q in self._tag_to_queue.items() if q == queue]
        return not tags or any(t not in self._no_ack_tags for t in tags)

    def defer_ack(self, delivery_tag: Any) -> bool:
        """Hold an ack back for the next pop, if one follows at once (the last pop
        left messages queued and no read is pending)."""
        if self._pop_next and self._in_poll is None and not self._closing:
            self._pending_acks.append(str(delivery_tag))
            return True
        return False

    def _take_acks(self) -> list[str]:
        acks, self._pending_acks = self._pending_acks, []
        return acks

    def _flush_acks(self) -> None:
        """Write the acks held back, when no pop will carry them."""
        acks = self._take_acks()
        if not acks:
            return
        with self.conn_or_acquire() as client:
            pipe = client.pipeline(transaction=False)
            pipe.hdel(self.unacked_key, *acks).zrem(self.unacked_index_key, *acks)
            if self.owner:
                pipe.hdel(keys.owned(self.owner), *acks)
            pipe.execute()

    def _pop_call(self, queues: list[str]) -> tuple[list[str], list[Any]]:
        """The pop script's keys and arguments for ``queues``, with the acks held
        back for it."""
        owned = keys.owned(self.owner) if self.owner else ""
        script_keys = [self.unacked_key, self.unacked_index_key, MALFORMED_KEY, owned]
        script_keys += [wake_key(q) for q in queues]
        script_keys += [self._q_for_pri(q, pri) for pri in self.priority_steps for q in queues]
        acks = ["1" if self.ack_emulation and self._acks(q) else "0" for q in queues]
        held = self._take_acks()
        return script_keys, [time(), len(queues), *acks, *queues, len(held), *held]

    def _pop(self, queues: list[str]) -> tuple[str, bytes, str] | None:
        """One message from ``queues``, priority first across all of them as stock
        Kombu's BRPOP key order does; re-arms the wake token of every queue that
        still holds messages, so a token lost with a dead connection is repaired
        by the next pop of any consumer."""
        script_keys, args = self._pop_call(queues)
        with self.conn_or_acquire() as client:
            if self.owner in NEEDS_SWEEP:
                sweep(client, self.owner, self.priority_steps, self.sep)
            if self._pop_script is None:
                self._pop_script = scripts.register(client, "pop")
            try:
                result = self._pop_script(keys=script_keys, args=args, client=client)
            except _CONNECTION_ERRORS:
                if self.owner:
                    self.needs_sweep.add(self.owner)
                raise
        return self._popped(result, queues)

    def _popped(self, result: Any, queues: list[str]) -> tuple[str, bytes, str] | None:
        """The pop script's reply as (queue, message, tag), or None."""
        if not result:
            self._pop_next = False
            return None
        item, tag, index, more = result
        self._pop_next = bool(int(more))
        queue = queues[int(index) - 1]
        if not item:
            logger.error(f"unparseable message on queue {queue!r} moved to {MALFORMED_KEY}")
            return None
        return queue, item, bytes_to_str(tag)

    def _any_waiting(self, queues: list[str]) -> bool:
        """Whether any priority list of ``queues`` holds a message (a message
        written without a wake token, by a stock Kombu producer for one)."""
        lists = [self._q_for_pri(q, pri) for pri in self.priority_steps for q in queues]
        with self.conn_or_acquire() as client:
            return bool(client.exists(*lists))

    def _brpop_start(self, timeout: float | None = None) -> None:
        if timeout is None:
            timeout = self.brpop_timeout
        queues = self._queue_cycle.consume(len(self.active_queues))
        pop_now = self._pop_next and self._pop_script is not None and self.owner not in NEEDS_SWEEP
        if not (queues and pop_now):
            self._flush_acks()
        if not queues:
            return
        self._in_poll = self.client.connection
        self._brpop_sent_at = monotonic()
        if pop_now:
            # The last pop left messages queued: pop at once, in the round trip
            # the BRPOP would have cost (its token stays for other consumers),
            # carrying the acks held back meanwhile.
            acks = list(self._pending_acks)
            script_keys, args = self._pop_call(queues)
            self._popping = (queues, acks)
            sha, count = self._pop_script.sha, len(script_keys)
            self.client.connection.send_command("EVALSHA", sha, count, *script_keys, *args)
            return
        # Never block forever: the timeout is the fallback for a message written
        # without a wake token.
        wait = timeout if timeout and timeout > 0 else 1
        self.client.connection.send_command("BRPOP", *[wake_key(q) for q in queues], wait)

    def _brpop_read(self, **options: Any) -> bool:
        """Read the reply of the BRPOP (or of the pop sent in its place), then
        deliver. Nothing is in flight once the reply is read: a handler run by a
        solo pool inside the delivery may ack, and the channel may close."""
        popping, self._popping = self._popping, None
        command = "BRPOP" if popping is None else "EVALSHA"
        try:
            try:
                reply = self.client.parse_response(self.client.connection, command, **options)
            finally:
                self._in_poll = None
                self._flush_brpop_reauth()
        except redis.exceptions.NoScriptError:
            # A restarted server forgot the script: the BRPOP path loads it,
            # after writing the acks this call did not carry.
            self._pop_next = False
            self._pending_acks[:0] = popping[1] if popping else []
            raise Empty() from None
        except self.connection_errors:
            self.client.connection.disconnect()
            if popping is not None and self.owner:
                NEEDS_SWEEP.add(self.owner)  # the pop may have run
            raise
        if popping is not None:
            queues = popping[0]
            popped = self._popped(reply, queues)
        else:
            queues = self._queue_cycle.consume(len(self.active_queues))
            if reply is None and queues and not self._any_waiting(queues):
                # A timeout with nothing queued: one EXISTS instead of the pop
                # script (its RPOPs and wake bookkeeping), every idle second.
                raise Empty()
            popped = self._pop(queues) if queues else None
        if popped is None:
            raise Empty()
        queue, item, tag = popped
        if tag:
            self._recorded.add(tag)
        try:
            self._queue_cycle.rotate(queue)
            self.connection._deliver(loads(bytes_to_str(item)), queue)
        finally:
            self._recorded.discard(tag)
        return True

    def _put(self, queue: str, message: Any, **kwargs: Any) -> None:
        batch = kwargs.get("_publish_batch")
        if self._expires and queue in self._expires:
            super()._put(queue, message, **kwargs)
            with self._pipe_or_batch(batch) as pipe:
                wake(pipe, queue, expires_ms=self._expires[queue])
            return
        key = self._q_for_pri(queue, self._get_message_priority(message, reverse=False))
        with self._pipe_or_batch(batch) as pipe:
            queue_command(pipe, "lpush", key, dumps(message))
            wake(pipe, queue)

    @contextmanager
    def _pipe_or_batch(self, batch: Any) -> Iterator[Any]:
        """The producer's publish batch, or a pipeline executed on exit."""
        if batch is not None:
            yield batch
            return
        with self.conn_or_acquire() as client, client.pipeline(transaction=False) as pipe:
            yield pipe
            pipe.execute()

    def _do_restore_message(
        self, payload: Any, exchange: str, routing_key: str, pipe: Any, leftmost: bool = False
    ) -> None:
        super()._do_restore_message(payload, exchange, routing_key, pipe, leftmost)
        try:
            for queue in self._lookup(exchange, routing_key):
                wake(pipe, queue)
        except Exception:
            logger.exception(f"could not wake consumers of {routing_key!r} after a restore")


class Transport(_RedisTransport):  # type: ignore[misc]
    Channel = Channel


class SentinelChannel(Channel, _RedisSentinelChannel):  # type: ignore[misc]
    """The channel above on the master the Sentinels name: the pool Kombu's
    Sentinel channel builds asks them at every new connection, so after a
    failover the pop script, owner records and sweep run on the new master.

    Kombu rebuilds that pool from the connection's URL list, which a lost
    connection has dropped by the time the channel hands back its deliveries
    (as ``_connparams`` above); the Sentinels' addresses do not change, so they
    are read once."""

    def __init__(self, connection: Any, *args: Any, **kwargs: Any) -> None:
        client = connection.client
        self._sentinels: list[tuple[str, int]] = []
        for url in client.alt or [client.hostname]:
            parts = _parse_url(url) if "://" in url else None
            if parts is not None and parts.scheme == "sentinel":
                self._sentinels.append((str(parts.hostname), parts.port or connection.default_port))
        super().__init__(connection, *args, **kwargs)

    def _sentinel_managed_pool(self, asynchronous: bool = False) -> Any:
        params = self._connparams(asynchronous)
        host, port = params.pop("host", None), params.pop("port", None)
        manager = redis.sentinel.Sentinel(
            self._sentinels or [(host, port)],
            min_other_sentinels=getattr(self, "min_other_sentinels", 0),
            sentinel_kwargs=getattr(self, "sentinel_kwargs", None),
            **params,
        )
        # Kept so that closing the channel closes the Sentinel connections too.
        if asynchronous:
            self._async_sentinel_manager = manager
        else:
            self._sentinel_manager = manager
        master_name = getattr(self, "master_name", None)
        if master_name is None:
            raise ChannelError("the 'master_name' transport option must be set on Sentinel")
        credentials = {k: params[k] for k in ("username", "password") if k in params}
        return manager.master_for(master_name, redis.Redis, **credentials).connection_pool


class SentinelTransport(Transport):
    """Chosen for a ``sentinel://`` broker URL (``raptorflow_bus.broker_address``)."""

    default_port = 26379
    Channel = SentinelChannel
