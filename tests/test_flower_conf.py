"""What Flower is given, so that it can read queue depths: for every broker URL
the bus takes (redis://, rediss://, sentinel://), the URI Flower derives from
its Celery app picks Flower's Redis reader, on the right server, with the
bus's priority lists. Flower's own classes, Celery and Kombu, and no server:
nothing here connects (``test_flower.py`` and ``test_sentinel.py`` read real
depths)."""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any

import pytest
from celery import Celery
from flower.utils.broker import Redis, RedisSentinel, RedisSsl

import routing
from raptorflow_bus import Topology
from raptorflow_bus.broker_address import BrokerAddress
from raptorflow_bus.flower import flower_conf
from raptorflow_bus.topology import PRIORITY_SEP, PRIORITY_STEPS
from tests.flower_view import flower_broker

SENTINELS = "sentinel://:master-pw@10.0.0.1:26379/2;sentinel://:master-pw@10.0.0.2:26380/2"
TOPOLOGY = Topology.from_module(routing)
TLS_QUERY = "ssl_cert_reqs=required&ssl_ca_certs=/etc/raptor/ca.pem"


def workers_app(address: BrokerAddress, extra: Mapping[str, Any] | None = None) -> Celery:
    """A Celery app with the settings a guild worker has on ``address``."""
    app = Celery("workers", set_as_current=False)
    app.config_from_object("celeryconfig")
    conf = app.conf
    conf.update(address.celery_conf(conf.broker_transport, conf.broker_transport_options))
    conf.update(extra or {})
    return app


def flower_app(address: BrokerAddress, extra: Mapping[str, Any] | None = None) -> Celery:
    """The same app with what ``raptorbus flower`` lays over it."""
    app = workers_app(address, extra)
    conf = app.conf
    conf.update(flower_conf(address, conf.broker_transport_options, TOPOLOGY))
    return app


def test_on_the_bus_transport_flower_cannot_tell_the_broker_and_says_redis_is_unsupported() -> None:
    app = workers_app(BrokerAddress.parse("redis://127.0.0.1:6390/0"))
    with app.connection() as conn:
        # Kombu names the scheme after the configured transport...
        assert conn.as_uri().startswith("raptorflow_bus.transport:Transport://")
        # ...and Flower's message names the driver: "'redis' broker is not supported".
        assert conn.transport.driver_type == "redis"
    with pytest.raises(NotImplementedError):
        flower_broker(app)


@pytest.mark.parametrize(
    ("url", "extra", "reader", "where"),
    [
        ("redis://:pw@10.0.0.9:6390/3", None, Redis, ("10.0.0.9", 6390, 3, "pw")),
        (
            f"rediss://default:pw@cache.example:6380/1?{TLS_QUERY}",
            {"broker_use_ssl": {"ssl_cert_reqs": ssl.CERT_REQUIRED}},
            RedisSsl,
            ("cache.example", 6380, 1, "pw"),
        ),
        (f"{SENTINELS}", None, RedisSentinel, ("10.0.0.1", 26379, 2, "master-pw")),
    ],
)
def test_flower_gets_its_redis_reader_on_the_same_server_with_the_bus_priority_lists(
    url: str, extra: Mapping[str, Any] | None, reader: type, where: tuple[Any, ...]
) -> None:
    address = BrokerAddress.parse(url, "raptor" if url.startswith("sentinel") else None)
    broker = flower_broker(flower_app(address, extra))
    assert type(broker) is reader
    assert (broker.host, broker.port, broker.vhost, broker.password) == where
    # Flower sums LLEN over <queue> and <queue>\x06\x16<step> for these steps.
    assert list(broker.priority_steps) == list(PRIORITY_STEPS)
    assert broker.sep == PRIORITY_SEP


def test_over_tls_flower_verifies_the_server_as_the_workers_do() -> None:
    """Kombu takes a rediss:// URL's ssl_* options over broker_use_ssl; Flower's
    reader reads only broker_use_ssl, so it is given the URL's."""
    address = BrokerAddress.parse(f"rediss://cache.example:6380/0?{TLS_QUERY}")
    extra = {"broker_use_ssl": {"ssl_cert_reqs": ssl.CERT_REQUIRED}}
    with workers_app(address, extra).connection() as conn:
        workers_tls = conn.ssl
    app = flower_app(address, extra)
    assert app.conf.broker_use_ssl == workers_tls
    assert workers_tls["ssl_ca_certs"] == "/etc/raptor/ca.pem"
    with app.connection() as conn:
        assert conn.ssl == workers_tls


def test_on_sentinel_flower_asks_the_sentinels_with_their_password_over_tls() -> None:
    address = BrokerAddress.parse(
        ";".join(f"{part}?{TLS_QUERY}" for part in SENTINELS.split(";")),
        master_name="raptor",
        sentinel_password="sentinel-pw",
    )
    app = flower_app(address)
    assert flower_broker(app).master_name == "raptor"
    options = app.conf.broker_transport_options
    assert options["sentinel_kwargs"]["password"] == "sentinel-pw"
    assert options["sentinel_kwargs"]["ssl_ca_certs"] == "/etc/raptor/ca.pem"
    assert app.conf.broker_use_ssl["ssl_ca_certs"] == "/etc/raptor/ca.pem"


def test_with_no_worker_to_ask_flower_falls_back_to_every_guilds_two_queues() -> None:
    app = flower_app(BrokerAddress.parse("redis://127.0.0.1:6390/0"))
    names = [queue.name for queue in app.conf.task_queues]
    assert names == list(TOPOLOGY.all_queue_names())
    assert {"research", "research.handlers", "council", "council.handlers"} <= set(names)
