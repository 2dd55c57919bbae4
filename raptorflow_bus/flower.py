"""The Celery settings Flower runs with, so that its Broker page and
``/api/queues/length`` show every guild's queue depths.

Flower reads queue depths itself: ``flower.utils.broker.Broker`` picks a Redis
reader by the scheme of ``app.connection().as_uri()``. Kombu spells that URI
with the transport's name, so under ``broker_transport =
"raptorflow_bus.transport:Transport"`` the URI is
``raptorflow_bus.transport:Transport://host:port/0``, whose scheme
``urlparse`` reads as empty; Flower's factory raises ``NotImplementedError``
and both pages answer "'redis' broker is not supported" (the name in that
message is the transport's ``driver_type``, which is why it looks absurd).

The fix is in what Flower is given, not in Flower: its process runs on the
stock Kombu transport that the broker URL itself names (``redis``, ``rediss``
or ``sentinel``), so the URI Kombu spells has a scheme Flower knows. Flower
consumes no task or event queue, and that is all our transport changes (the
atomic pop and the owner records a consumer needs): Flower receives task events
over PUB/SUB, broadcasts inspect and control commands and reads their replies,
and may send a task from its API. A stock Kombu client on the bus's Redis is
supported (DESIGN section 8, ``tests/test_interop.py``); the one cost is that
a task sent from Flower carries no wake token, so a worker finds it at its next
BRPOP timeout (1 s) instead of at once. Everything else stays as the workers
have it: the transport options (``sep`` and ``priority_steps``, with which
Flower sums a queue's priority lists; ``master_name`` and ``sentinel_kwargs``
on Sentinel; the timeouts) and the TLS settings. Patching Flower's broker
factory or its app class instead would tie the bus to Flower internals that
change between releases; the broker URL and Celery settings are Flower's
documented input.

Which queues Flower lists is its own choice: the queues named in the
``active_queues`` replies of every worker it has inspected (kept after that
worker stops; a guild worker names both its queues, see
``raptorflow_bus.worker.active_queues``), or, while no inspected worker names
any, ``task_default_queue`` plus ``task_queues``; for that case ``task_queues``
here holds every guild's event and handler queue. Flower has no other source
of queue names: a guild whose worker this Flower process never heard from,
while it heard from others, is missing from its list (``raptorbus stats``
lists every queue of the routing table)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from kombu.utils.url import parse_url

from raptorflow_bus.broker_address import BrokerAddress
from raptorflow_bus.topology import Topology

if TYPE_CHECKING:
    from raptorflow_bus.bus import Bus

#: Kombu's own transport for each broker URL scheme the bus accepts. A
#: ``unix://`` broker keeps the bus's transport (Flower has no reader for it).
STOCK_TRANSPORTS = {"redis": "redis", "rediss": "rediss"}


def flower_conf(
    address: BrokerAddress, transport_options: Mapping[str, Any], topology: Topology
) -> dict[str, Any]:
    """Celery settings to lay over a connected bus's for the app Flower runs
    on: the stock transport for ``address``, and every guild's queues."""
    conf: dict[str, Any] = {
        "task_queues": [
            queue
            for consumer in topology.consumers
            for queue in (
                topology.kombu_event_queue(consumer),
                topology.kombu_handler_queue(consumer),
            )
        ]
    }
    if address.is_sentinel:
        # "redis" maps to Kombu's stock SentinelTransport for a sentinel:// URL.
        conf.update(address.celery_conf("redis", transport_options))
        return conf
    transport = STOCK_TRANSPORTS.get(urlsplit(address.url).scheme)
    if transport is None:
        return conf
    conf.update(address.celery_conf(transport, transport_options), broker_transport=transport)
    # Kombu takes a rediss:// URL's ssl_* query options over broker_use_ssl, so
    # that is how the workers connect; Flower's reader sees only broker_use_ssl.
    url_tls = parse_url(address.url).get("ssl")
    if url_tls:
        conf["broker_use_ssl"] = url_tls
    return conf


def configure(bus: Bus) -> Bus:
    """Make a connected bus's Celery app the one Flower runs on (``raptorbus
    flower``). Its emit path, on its own Redis client, is untouched."""
    if bus.address is None:
        raise RuntimeError("Flower needs a connected bus")
    conf = bus.app.conf
    conf.update(flower_conf(bus.address, conf.broker_transport_options, bus.topology))
    return bus
