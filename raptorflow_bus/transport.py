"""Kombu's Redis transport with the pop and the unacked record made one step.

Stock Kombu BRPOPs a message and records it as unacked in a second round trip.
A worker killed between the two loses the message: Redis hands it to a socket
nobody reads, and it is in no queue and no unacked hash. Emitting right after
a SIGKILL lost one event in three that way. Here a consumer blocks on a wake
list instead, and a Lua script pops the message and records it as unacked
atomically, so at every instant a message is in its queue or in the unacked
hash, from which Kombu's own visibility-timeout restore brings it back.

Every writer that goes through this transport (publish, restore) pushes a wake
token; a message written by anyone else is found at the next BRPOP timeout
(``brpop_timeout``, 1 s). Kombu's non-blocking ``basic_get`` keeps the stock
path. ``global_keyprefix`` is not supported.

In the same run (``bench/throughput.py``) plain Celery drains as fast on this
transport as on the stock one: the Lua pop costs what Kombu's second round
trip cost."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from queue import Empty
from time import monotonic, time
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads

# Kombu's type stubs omit most of the Redis channel's attributes.
_RedisQoS: Any = kombu_redis.QoS
_RedisChannel: Any = kombu_redis.Channel
_RedisTransport: Any = kombu_redis.Transport
_VirtualQoS: Any = virtual.QoS

WAKE_PREFIX = "raptorbus:wake:"
MALFORMED_KEY = "raptorbus:transport:malformed"

logger = logging.getLogger("bus")


def wake_key(queue: str) -> str:
    """The list a consumer of ``queue`` blocks on; at most one token long."""
    return WAKE_PREFIX + queue


_POP = """
local item
for i = 5, #KEYS do
  item = redis.call('RPOP', KEYS[i])
  if item then break end
end
local remaining = 0
for i = 5, #KEYS do remaining = remaining + redis.call('LLEN', KEYS[i]) end
if remaining > 0 then
  redis.call('LPUSH', KEYS[1], '1')
  redis.call('LTRIM', KEYS[1], 0, 0)
else
  redis.call('DEL', KEYS[1])
end
if not item then return false end
if ARGV[2] ~= '1' then return {item, ''} end
local ok, msg = pcall(cjson.decode, item)
if not ok or type(msg) ~= 'table' or type(msg.properties) ~= 'table'
    or type(msg.properties.delivery_tag) ~= 'string' then
  redis.call('LPUSH', KEYS[4], item)
  return {'', ''}
end
local info = msg.properties.delivery_info
if type(info) ~= 'table' then info = {} end
local tag = msg.properties.delivery_tag
redis.call('HSET', KEYS[2], tag, '[' .. item .. ',' .. cjson.encode(info.exchange or '')
  .. ',' .. cjson.encode(info.routing_key or '') .. ']')
redis.call('ZADD', KEYS[3], ARGV[1], tag)
return {item, tag}
"""


class QoS(_RedisQoS):  # type: ignore[misc]
    """Skips the unacked write for a message the pop script already recorded."""

    def append(self, message: Any, delivery_tag: Any) -> None:
        if self.channel.take_recorded(delivery_tag):
            _VirtualQoS.append(self, message, delivery_tag)
        else:
            super().append(message, delivery_tag)


class Channel(_RedisChannel):  # type: ignore[misc]
    QoS = QoS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.global_keyprefix:
            raise ChannelError("raptorflow_bus.transport does not support global_keyprefix")
        self._recorded: set[str] = set()
        self._no_ack_tags: set[str] = set()
        self._pop_script: Any = None
        self._sync_client: Any = None

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
        self._no_ack_tags.discard(consumer_tag)
        return super().basic_cancel(consumer_tag)

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

    def _pop(self, queue: str) -> tuple[bytes, str] | None:
        keys = [wake_key(queue), self.unacked_key, self.unacked_index_key, MALFORMED_KEY]
        keys += [self._q_for_pri(queue, pri) for pri in self.priority_steps]
        with self.conn_or_acquire() as client:
            if self._pop_script is None:
                self._pop_script = client.register_script(_POP)
            result = self._pop_script(
                keys=keys, args=[time(), "1" if self._acks(queue) else "0"], client=client
            )
        if not result:
            return None
        item, tag = result
        if not item:
            logger.error(f"unparseable message on queue {queue!r} moved to {MALFORMED_KEY}")
            return None
        return item, tag.decode() if isinstance(tag, bytes) else str(tag)

    def _brpop_start(self, timeout: float | None = None) -> None:
        if timeout is None:
            timeout = self.brpop_timeout
        queues = self._queue_cycle.consume(len(self.active_queues))
        if not queues:
            return
        self._in_poll = self.client.connection
        self._brpop_sent_at = monotonic()
        self.client.connection.send_command("BRPOP", *[wake_key(q) for q in queues], timeout or 0)

    def _brpop_read(self, **options: Any) -> bool:
        try:
            try:
                woken = self.client.parse_response(self.client.connection, "BRPOP", **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            if woken:
                queues = [bytes_to_str(woken[0])[len(WAKE_PREFIX) :]]
            else:
                queues = self._queue_cycle.consume(len(self.active_queues))
            for queue in queues:
                if queue not in self.active_queues:
                    continue
                popped = self._pop(queue)
                if popped is None:
                    continue
                item, tag = popped
                if tag:
                    self._recorded.add(tag)
                self._queue_cycle.rotate(queue)
                self.connection._deliver(loads(bytes_to_str(item)), queue)
                return True
            raise Empty()
        finally:
            self._in_poll = None
            self._flush_brpop_reauth()

    def _put(self, queue: str, message: Any, **kwargs: Any) -> None:
        batch = kwargs.get("_publish_batch")
        if self._expires and queue in self._expires:
            super()._put(queue, message, **kwargs)
            self._wake(queue, batch)
            return
        key = self._q_for_pri(queue, self._get_message_priority(message, reverse=False))
        if batch is not None:
            batch.add("lpush", key, dumps(message))
            self._wake(queue, batch)
            return
        with self.conn_or_acquire() as client, client.pipeline(transaction=False) as pipe:
            pipe.lpush(key, dumps(message))
            pipe.lpush(wake_key(queue), "1").ltrim(wake_key(queue), 0, 0)
            pipe.execute()

    def _wake(self, queue: str, batch: Any) -> None:
        if batch is not None:
            batch.add("lpush", wake_key(queue), "1")
            batch.add("ltrim", wake_key(queue), 0, 0)
            return
        with self.conn_or_acquire() as client, client.pipeline(transaction=False) as pipe:
            pipe.lpush(wake_key(queue), "1").ltrim(wake_key(queue), 0, 0).execute()

    def _do_restore_message(
        self, payload: Any, exchange: str, routing_key: str, pipe: Any, leftmost: bool = False
    ) -> None:
        super()._do_restore_message(payload, exchange, routing_key, pipe, leftmost)
        try:
            for queue in self._lookup(exchange, routing_key):
                pipe.lpush(wake_key(queue), "1").ltrim(wake_key(queue), 0, 0)
        except Exception:
            logger.exception(f"could not wake consumers of {routing_key!r} after a restore")


class Transport(_RedisTransport):  # type: ignore[misc]
    Channel = Channel
