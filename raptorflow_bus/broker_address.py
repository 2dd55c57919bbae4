"""Where the broker is: one Redis, or the master a set of Sentinels points at.

The broker URL is parsed here once, so that every part that opens a Redis
connection (the emit path, a worker's heartbeat and reaper, the CLI, Celery's
transport) reaches the same server. On Sentinel each of them holds a
``Sentinel.master_for`` client, which asks the Sentinels for the master at every
new connection and drops a connection that finds itself on a demoted master
(READONLY), so a failover is followed without anybody restarting anything.

``sentinel://h1:26379;sentinel://h2:26379`` is Celery's and Kombu's spelling: a
password in the URL is the master's, the Sentinels' own password comes apart
(``RAPTORBUS_SENTINEL_PASSWORD``), and ``ssl_*`` query options (as on a
``rediss://`` URL) turn TLS on for the Sentinels and the master alike."""

from __future__ import annotations

import itertools
import ssl
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import redis
import redis.asyncio
import redis.asyncio.sentinel
from redis.sentinel import (
    Sentinel,
    SentinelConnectionPool,
    SentinelManagedConnection,
    SentinelManagedSSLConnection,
)

from raptorflow_bus.errors import ConfigurationError
from raptorflow_bus.silence import guarded

SENTINEL_SCHEME = "sentinel"
PLAIN_SCHEMES = ("redis", "rediss", "unix")
DEFAULT_SENTINEL_PORT = 26379
TLS_OPTIONS = ("ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_check_hostname")
_CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}

# Celery's name for our transport, and its Sentinel twin: the scheme of a
# sentinel:// URL must not make Kombu fall back to its stock Sentinel transport.
TRANSPORTS = {
    "raptorflow_bus.transport:Transport": "raptorflow_bus.transport:SentinelTransport",
    "redis": "sentinel",
}


def _tls_options(query: Mapping[str, str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for name, value in query.items():
        if name not in TLS_OPTIONS:
            raise ConfigurationError(
                f"broker URL option {name!r} is not one of {', '.join(TLS_OPTIONS)}"
            )
        if name == "ssl_cert_reqs":
            if value.lower() not in _CERT_REQS:
                raise ConfigurationError(
                    f"ssl_cert_reqs must be none, optional or required, got {value!r}"
                )
            options[name] = _CERT_REQS[value.lower()]
        elif name == "ssl_check_hostname":
            options[name] = value.lower() not in ("false", "0", "no")
        else:
            options[name] = value
    return options


@dataclass(frozen=True)
class BrokerAddress:
    url: str
    sentinels: tuple[tuple[str, int], ...] = ()
    master_name: str | None = None
    sentinel_password: str | None = None
    username: str | None = None
    password: str | None = None
    db: int = 0
    tls: Mapping[str, Any] | None = field(default=None)

    @classmethod
    def parse(
        cls, url: str, master_name: str | None = None, sentinel_password: str | None = None
    ) -> BrokerAddress:
        """Raises ``ConfigurationError`` naming what is wrong with the URL."""
        parts = [p.strip() for p in url.split(";") if p.strip()]
        if not parts:
            raise ConfigurationError("the broker URL is empty")
        schemes = {urlsplit(p).scheme for p in parts}
        if SENTINEL_SCHEME not in schemes:
            if len(parts) > 1:
                raise ConfigurationError(
                    f"broker URL lists {len(parts)} servers; a ';'-separated list is only "
                    "for sentinel:// URLs"
                )
            scheme = urlsplit(parts[0]).scheme
            if scheme not in PLAIN_SCHEMES:
                raise ConfigurationError(
                    f"broker URL scheme {scheme!r} is not one of "
                    f"{', '.join((*PLAIN_SCHEMES, SENTINEL_SCHEME))}"
                )
            if master_name or sentinel_password:
                raise ConfigurationError(
                    "RAPTORBUS_SENTINEL_MASTER / RAPTORBUS_SENTINEL_PASSWORD are set but the "
                    f"broker URL is {scheme}://, not sentinel://"
                )
            return cls(url=url)
        if schemes != {SENTINEL_SCHEME}:
            others = ", ".join(sorted(s + "://" for s in schemes - {SENTINEL_SCHEME}))
            raise ConfigurationError(f"broker URL mixes sentinel:// with {others}")
        if not master_name:
            raise ConfigurationError(
                "a sentinel:// broker URL needs the master's name: set "
                "RAPTORBUS_SENTINEL_MASTER (Settings.sentinel_master)"
            )
        return cls._sentinel(url, parts, master_name, sentinel_password)

    @classmethod
    def _sentinel(
        cls, url: str, parts: list[str], master_name: str, sentinel_password: str | None
    ) -> BrokerAddress:
        sentinels = []
        credentials: set[tuple[str | None, str | None]] = set()
        dbs: set[int] = set()
        tls: dict[str, Any] = {}
        for part in parts:
            split = urlsplit(part)
            try:
                port = split.port or DEFAULT_SENTINEL_PORT
            except ValueError:
                raise ConfigurationError(f"broker URL {part!r} has a bad port") from None
            if not split.hostname:
                raise ConfigurationError(f"broker URL {part!r} names no host")
            sentinels.append((split.hostname, port))
            if split.username or split.password:
                credentials.add((_unquoted(split.username), _unquoted(split.password)))
            path = split.path.strip("/")
            if path:
                if not path.isdigit():
                    raise ConfigurationError(
                        f"broker URL {part!r}: database {path!r} is not a number"
                    )
                dbs.add(int(path))
            tls.update(_tls_options(dict(parse_qsl(split.query))))
        if len(credentials) > 1 or len(dbs) > 1:
            raise ConfigurationError(
                "the sentinel:// URLs disagree on the master's password or database"
            )
        username, password = next(iter(credentials), (None, None))
        return cls(
            url=url,
            sentinels=tuple(sentinels),
            master_name=master_name,
            sentinel_password=sentinel_password,
            username=username,
            password=password,
            db=next(iter(dbs), 0),
            tls=tls or None,
        )

    @property
    def is_sentinel(self) -> bool:
        return bool(self.sentinels)

    @property
    def uses_tls(self) -> bool:
        return self.tls is not None or self.url.startswith("rediss://")

    def client(self, **options: Any) -> redis.Redis[bytes]:
        """A redis-py client with ``options`` (timeouts, keepalive, retry policy).
        On Sentinel the same timeouts and retry policy apply to the Sentinels, so
        asking them for the master is bounded too."""
        if not self.is_sentinel:
            scheme = self.url.partition("://")[0]
            by_scheme = {"redis": redis.Connection, "rediss": redis.SSLConnection}
            if scheme in by_scheme:
                options = {"connection_class": guarded(by_scheme[scheme]), **options}
            return redis.Redis.from_url(self.url, **options)
        master: dict[str, Any] = {**options, "db": self.db}
        master["connection_class"] = guarded(
            SentinelManagedSSLConnection if self.tls is not None else SentinelManagedConnection
        )
        if self.username:
            master["username"] = self.username
        if self.password:
            master["password"] = self.password
        if self.tls is not None:
            master.update(ssl=True, **self.tls)
        sentinel = Sentinel(
            list(self.sentinels), sentinel_kwargs=self.sentinel_kwargs(options), **master
        )
        client: redis.Redis[bytes] = sentinel.master_for(str(self.master_name))
        return client

    def async_client(self, **options: Any) -> redis.asyncio.Redis[bytes]:
        """``client``'s asyncio twin (the async publish's connection), with the
        same address, credentials, TLS and Sentinel lookup."""
        if not self.is_sentinel:
            return redis.asyncio.Redis.from_url(self.url, **options)
        master: dict[str, Any] = {**options, "db": self.db}
        if self.username:
            master["username"] = self.username
        if self.password:
            master["password"] = self.password
        if self.tls is not None:
            master.update(ssl=True, **self.tls)
        sentinel = redis.asyncio.sentinel.Sentinel(
            list(self.sentinels), sentinel_kwargs=self.sentinel_kwargs(options), **master
        )
        client: redis.asyncio.Redis[bytes] = sentinel.master_for(str(self.master_name))
        return client

    def sentinel_kwargs(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """How to talk to the Sentinels themselves: the socket options and retry
        policy of ``options``, their own password, and TLS."""
        kwargs = {k: v for k, v in options.items() if k.startswith("socket_") or k == "retry"}
        if self.sentinel_password:
            kwargs["password"] = self.sentinel_password
        if self.tls is not None:
            kwargs.update(ssl=True, **self.tls)
        return kwargs

    def current_master(self, client: redis.Redis[bytes]) -> str | None:
        """``host:port`` of the master the Sentinels name now; None off Sentinel."""
        pool = client.connection_pool
        if not isinstance(pool, SentinelConnectionPool):
            return None
        host, port = pool.get_master_address()
        return f"{host}:{port}"

    def celery_url(self) -> str:
        """The URL Celery gets: on Sentinel without the TLS query (Celery takes
        TLS from ``broker_use_ssl``), one ``sentinel://`` per Sentinel."""
        if not self.is_sentinel:
            return self.url
        auth = ""
        if self.username or self.password:
            auth = f"{self.username or ''}:{self.password or ''}@"
        return ";".join(f"sentinel://{auth}{h}:{p}/{self.db}" for h, p in self.sentinels)

    def celery_conf(self, transport: str, transport_options: Mapping[str, Any]) -> dict[str, Any]:
        """What Celery's app needs to reach this broker through ``transport``
        (the configured one; its Sentinel twin is picked on Sentinel)."""
        conf: dict[str, Any] = {"broker_url": self.celery_url()}
        if not self.is_sentinel:
            return conf
        options = {
            **transport_options,
            "master_name": self.master_name,
            "sentinel_kwargs": self.sentinel_kwargs(transport_options),
        }
        conf.update(
            broker_transport=TRANSPORTS.get(transport, transport),
            broker_transport_options=options,
            # Kombu moves to the next URL of a ';' list after a failed connect
            # and re-reads the transport from its scheme: the stock Sentinel
            # transport would replace ours. redis-py already asks every
            # Sentinel in turn, so stay on the first.
            broker_failover_strategy=stay_on_first,
        )
        if self.tls is not None:
            conf["broker_use_ssl"] = dict(self.tls)
        return conf


def close_client(client: redis.Redis[bytes]) -> None:
    """Close ``client`` and, on Sentinel, its connections to the Sentinels
    (redis-py's ``Redis.close`` leaves those open)."""
    pool = client.connection_pool
    client.close()
    if isinstance(pool, SentinelConnectionPool):
        for sentinel in pool.sentinel_manager.sentinels:
            sentinel.close()


def stay_on_first(alternates: list[str]) -> Iterator[str]:
    """A Kombu failover strategy that never switches URL: a bare host name
    keeps the transport Kombu was given (a URL would reset it by scheme)."""
    host = urlsplit(alternates[0]).hostname or "localhost"
    return itertools.repeat(host)


def _unquoted(text: str | None) -> str | None:
    return unquote(text) if text else None
