"""The broker URL parsed once: a plain Redis, or Sentinels and a master name,
and what each part of the bus (redis-py clients, Celery's transport) is given.
No server is needed: nothing here connects."""

from __future__ import annotations

import ssl

import pytest
from redis.sentinel import SentinelConnectionPool

from raptorflow_bus import Bus, ConfigurationError, Settings
from raptorflow_bus.broker_address import BrokerAddress
from raptorflow_bus.settings import mask_url

SENTINELS = "sentinel://10.0.0.1:26379;sentinel://10.0.0.2:26380;sentinel://10.0.0.3"
OUR_TRANSPORT = "raptorflow_bus.transport:Transport"
OPTIONS = {"socket_timeout": 10, "socket_connect_timeout": 5, "visibility_timeout": 3600}


def test_a_plain_url_is_one_server_and_celery_gets_it_as_it_is() -> None:
    address = BrokerAddress.parse("rediss://default:pw@cache.example:6380/2")
    assert not address.is_sentinel
    assert address.uses_tls
    assert address.celery_conf(OUR_TRANSPORT, OPTIONS) == {
        "broker_url": "rediss://default:pw@cache.example:6380/2"
    }


def test_a_sentinel_list_names_every_sentinel_and_the_master() -> None:
    address = BrokerAddress.parse(
        "sentinel://:s3cret@10.0.0.1:26379/1;sentinel://:s3cret@10.0.0.2:26380/1",
        master_name="raptor",
        sentinel_password="sentinel-pw",
    )
    assert address.sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26380))
    assert (address.master_name, address.password, address.db) == ("raptor", "s3cret", 1)
    assert address.sentinel_password == "sentinel-pw"
    assert not address.uses_tls


def test_a_sentinel_without_a_port_is_on_26379() -> None:
    address = BrokerAddress.parse(SENTINELS, master_name="raptor")
    assert address.sentinels[-1] == ("10.0.0.3", 26379)


def test_celery_gets_the_sentinel_twin_of_the_configured_transport() -> None:
    address = BrokerAddress.parse(SENTINELS, master_name="raptor", sentinel_password="pw")
    conf = address.celery_conf(OUR_TRANSPORT, OPTIONS)
    assert conf["broker_transport"] == "raptorflow_bus.transport:SentinelTransport"
    assert address.celery_conf("redis", OPTIONS)["broker_transport"] == "sentinel"
    options = conf["broker_transport_options"]
    assert options["master_name"] == "raptor"
    assert options["visibility_timeout"] == 3600
    # The Sentinels get the same socket timeouts as the master, and their password.
    assert options["sentinel_kwargs"] == {
        "socket_timeout": 10,
        "socket_connect_timeout": 5,
        "password": "pw",
    }
    assert conf["broker_url"].split(";") == [
        "sentinel://10.0.0.1:26379/0",
        "sentinel://10.0.0.2:26380/0",
        "sentinel://10.0.0.3:26379/0",
    ]


def test_a_failed_connect_does_not_swap_in_kombus_stock_sentinel_transport() -> None:
    """Kombu moves to the next URL of a list after a failed connect and takes the
    transport from its scheme; on Sentinel it must stay on ours."""
    bus = Bus(Settings(eager=True))
    address = BrokerAddress.parse(SENTINELS, master_name="raptor")
    bus.app.conf.update(address.celery_conf(OUR_TRANSPORT, bus.app.conf.broker_transport_options))
    connection = bus.app.connection_for_read()
    for _ in range(4):
        connection.maybe_switch_next()
        assert connection.transport_cls == "raptorflow_bus.transport:SentinelTransport"
    assert connection.alt == bus.app.conf.broker_url.split(";")


def test_the_client_follows_the_sentinels_with_the_callers_timeouts() -> None:
    address = BrokerAddress.parse(
        "sentinel://:master-pw@10.0.0.1:26379/3", master_name="raptor", sentinel_password="s-pw"
    )
    client = address.client(socket_timeout=1.5, socket_connect_timeout=0.5)
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.service_name == "raptor"
    master = pool.connection_kwargs
    assert (master["socket_timeout"], master["password"], master["db"]) == (1.5, "master-pw", 3)
    sentinel = pool.sentinel_manager.sentinels[0].connection_pool.connection_kwargs
    assert (sentinel["socket_timeout"], sentinel["socket_connect_timeout"]) == (1.5, 0.5)
    assert sentinel["password"] == "s-pw"
    client.close()


def test_tls_options_on_a_sentinel_url_apply_to_sentinels_master_and_celery() -> None:
    address = BrokerAddress.parse(
        "sentinel://10.0.0.1:26379?ssl_cert_reqs=required&ssl_ca_certs=/etc/ca.pem",
        master_name="raptor",
    )
    tls = {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": "/etc/ca.pem"}
    assert address.tls == tls
    conf = address.celery_conf(OUR_TRANSPORT, {})
    assert conf["broker_use_ssl"] == tls
    assert conf["broker_transport_options"]["sentinel_kwargs"] == {"ssl": True, **tls}
    assert "?" not in conf["broker_url"]
    pool = address.client().connection_pool
    assert pool.connection_kwargs["ssl_ca_certs"] == "/etc/ca.pem"


@pytest.mark.parametrize(
    ("url", "master", "problem"),
    [
        (SENTINELS, None, "RAPTORBUS_SENTINEL_MASTER"),
        ("sentinel://h1:26379;redis://h2:6379", "raptor", "mixes sentinel:// with redis://"),
        ("redis://h1:6379;redis://h2:6379", None, "only for sentinel://"),
        ("redis://h1:6379", "raptor", "not sentinel://"),
        ("amqp://guest@h1//", None, "scheme 'amqp'"),
        ("sentinel://h1:26379/zero", "raptor", "database 'zero'"),
        ("sentinel://h1:port", "raptor", "bad port"),
        ("sentinel://h1:26379?timeout=3", "raptor", "'timeout' is not one of"),
        ("sentinel://:a@h1;sentinel://:b@h2", "raptor", "disagree"),
    ],
)
def test_bad_broker_settings_are_refused_naming_the_problem(
    url: str, master: str | None, problem: str
) -> None:
    with pytest.raises(ConfigurationError, match=problem):
        Settings(broker_url=url, sentinel_master=master)


def test_sentinel_settings_come_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "RAPTORBUS_BROKER_URL": SENTINELS,
            "RAPTORBUS_SENTINEL_MASTER": "raptor",
            "RAPTORBUS_SENTINEL_PASSWORD": "pw",
            "RAPTORBUS_MIN_REPLICA_ACKS": "1",
            "RAPTORBUS_REPLICA_ACK_TIMEOUT_SECONDS": "0.5",
        }
    )
    assert (settings.sentinel_master, settings.sentinel_password) == ("raptor", "pw")
    assert (settings.min_replica_acks, settings.replica_ack_timeout_seconds) == (1, 0.5)
    assert settings.address_of(SENTINELS).sentinel_password == "pw"
    default = Settings.from_env({})
    assert (default.min_replica_acks, default.replica_ack_timeout_seconds) == (0, 0.25)


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"RAPTORBUS_MIN_REPLICA_ACKS": "one"}, "RAPTORBUS_MIN_REPLICA_ACKS"),
        ({"RAPTORBUS_MIN_REPLICA_ACKS": "-1"}, "RAPTORBUS_MIN_REPLICA_ACKS"),
        ({"RAPTORBUS_REPLICA_ACK_TIMEOUT_SECONDS": "2"}, "at most 1.0 s"),
        ({"RAPTORBUS_REPLICA_ACK_TIMEOUT_SECONDS": "0"}, "RAPTORBUS_REPLICA_ACK_TIMEOUT"),
        ({"RAPTORBUS_SENTINEL_MASTER": "raptor"}, "no sentinel:// broker URL"),
    ],
)
def test_bad_replica_and_sentinel_values_are_named(env: dict[str, str], problem: str) -> None:
    with pytest.raises(ConfigurationError, match=problem):
        Settings.from_env(env)


def test_sentinel_passwords_never_reach_the_logs() -> None:
    url = "sentinel://:pw@10.0.0.1:26379;sentinel://:pw@10.0.0.2:26379"
    assert mask_url(url) == "sentinel://:***@10.0.0.1:26379;sentinel://:***@10.0.0.2:26379"
