"""Configuration read once from the environment into an explicit object, so a
test or a second bus can be built with other values without touching os.environ."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from raptorflow_bus.broker_address import BrokerAddress
from raptorflow_bus.errors import ConfigurationError
from raptorflow_bus.signing import Signer

DEFAULT_MAX_PAYLOAD_BYTES = 256 * 1024
# WAIT's timeout must leave room inside the emit path's 1.5 s read timeout, so
# that a missing replica makes the emit spool rather than time out.
DEFAULT_REPLICA_ACK_TIMEOUT_SECONDS = 0.25
MAX_REPLICA_ACK_TIMEOUT_SECONDS = 1.0
# The seed's heartbeat channel: each worker says how the bus looks from where it is.
DEFAULT_HEALTH_EVENT_SECONDS = 30.0

# Every environment variable the bus and its CLI read (docker-compose is tested against it).
ENV_VARS = frozenset(
    {
        "RAPTORBUS_BROKER_URL",
        "REDIS_URL",
        "UPSTASH_REDIS_URL",
        "UPSTASH_REDIS_TOKEN",
        "RAPTORBUS_EAGER",
        "RAPTORBUS_MAX_PAYLOAD_BYTES",
        "RAPTORBUS_ROUTING",
        "RAPTORBUS_CELERY_CONFIG",
        "RAPTORBUS_HANDLERS",
        "RAPTORBUS_HOME",
        "RAPTORBUS_RETRY_BASE_SECONDS",
        "RAPTORBUS_RECLAIM_SECONDS",
        "RAPTORBUS_APPENDFSYNC",
        "RAPTORBUS_REDIS_SERVER",
        "RAPTORBUS_OUTBOX",
        "RAPTORBUS_SENTINEL_MASTER",
        "RAPTORBUS_SENTINEL_PASSWORD",
        "RAPTORBUS_MIN_REPLICA_ACKS",
        "RAPTORBUS_REPLICA_ACK_TIMEOUT_SECONDS",
        "RAPTORBUS_METRICS_PER_WORKSPACE",
        "RAPTORBUS_HEALTH_EVENT_SECONDS",
        "RAPTORBUS_SIGNING_KEYS",
        "FLOWER_BASIC_AUTH",
    }
)


def _upstash_url(url: str, token: str | None) -> str:
    parts = urlsplit(url)
    if parts.scheme in ("http", "https"):
        raise ConfigurationError(
            "UPSTASH_REDIS_URL is Upstash's REST endpoint; the bus needs the Redis "
            "endpoint (rediss://default:<token>@<host>:6379)"
        )
    if parts.scheme not in ("redis", "rediss"):
        raise ConfigurationError(f"UPSTASH_REDIS_URL has unsupported scheme {parts.scheme!r}")
    if token and not parts.password:
        netloc = f"default:{token}@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        parts = parts._replace(netloc=netloc)
    return urlunsplit(parts)


def broker_url_from_env(env: Mapping[str, str]) -> str | None:
    """The configured broker, or None for the embedded one."""
    explicit = env.get("RAPTORBUS_BROKER_URL") or env.get("REDIS_URL")
    if explicit:
        return explicit
    if env.get("UPSTASH_REDIS_URL"):
        return _upstash_url(env["UPSTASH_REDIS_URL"], env.get("UPSTASH_REDIS_TOKEN"))
    if env.get("UPSTASH_REDIS_TOKEN"):
        raise ConfigurationError("UPSTASH_REDIS_TOKEN is set but UPSTASH_REDIS_URL is not")
    return None


def mask_url(url: str) -> str:
    """``url`` without its password; each URL of a Sentinel list is masked."""
    if ";" in url:
        return ";".join(mask_url(part) for part in url.split(";"))
    parts = urlsplit(url)
    if parts.password:
        user = parts.username or ""
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        parts = parts._replace(netloc=f"{user}:***@{host}{port}")
    return urlunsplit(parts)


def _positive_seconds(env: Mapping[str, str], name: str) -> float | None:
    text = env.get(name)
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ConfigurationError(f"{name} must be a number of seconds, got {text!r}") from None
    if value <= 0:
        raise ConfigurationError(f"{name} must be above 0 seconds, got {text!r}")
    return value


def _switch(name: str, text: str | None, default: bool) -> bool:
    value = (text or "").strip().lower()
    if not value:
        return default
    if value in ("1", "on", "true", "yes"):
        return True
    if value in ("0", "off", "false", "no"):
        return False
    raise ConfigurationError(f"{name} must be 'on' or 'off', got {text!r}")


def _appendfsync(env: Mapping[str, str]) -> str:
    value = env.get("RAPTORBUS_APPENDFSYNC", "everysec")
    if value not in ("everysec", "always"):
        raise ConfigurationError(
            f"RAPTORBUS_APPENDFSYNC must be 'everysec' or 'always', got {value!r}"
        )
    return value


def _replica_acks(env: Mapping[str, str]) -> int:
    text = env.get("RAPTORBUS_MIN_REPLICA_ACKS") or "0"
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise ConfigurationError(
            f"RAPTORBUS_MIN_REPLICA_ACKS must be a whole number of replicas (0 or more), "
            f"got {text!r}"
        )
    return value


def _seconds_or_off(env: Mapping[str, str], name: str) -> float:
    text = env.get(name)
    if not text:
        return DEFAULT_HEALTH_EVENT_SECONDS
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value < 0:
        raise ConfigurationError(
            f"{name} must be a number of seconds (0 turns it off), got {text!r}"
        )
    return value


def _default_home() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "raptorbus"


@dataclass(frozen=True)
class Settings:
    broker_url: str | None = None
    eager: bool = False
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    routing_module: str = "routing"
    celery_config_module: str = "celeryconfig"
    handler_modules: tuple[str, ...] = ("tasks",)
    retry_base_seconds: float | None = None
    reclaim_seconds: float | None = None
    appendfsync: str = "everysec"
    # Spool to the local outbox when the broker is unreachable; off: raise BrokerUnavailable.
    outbox: bool = True
    home: Path = field(default_factory=_default_home)
    # The master's name on Sentinel (broker_url = "sentinel://h1:26379;sentinel://h2:26379"),
    # and the Sentinels' own password if they have one.
    sentinel_master: str | None = None
    sentinel_password: str | None = None
    # An event is accepted only once WAIT confirmed it reached this many replicas.
    min_replica_acks: int = 0
    replica_ack_timeout_seconds: float = DEFAULT_REPLICA_ACK_TIMEOUT_SECONDS
    # Counters per workspace id too (a label value and a hash field per workspace).
    metrics_per_workspace: bool = False
    # How often each worker emits ``bus.health``; 0 turns it off.
    health_event_seconds: float = DEFAULT_HEALTH_EVENT_SECONDS
    # "id:secret,..." (first signs, all verify); set, every envelope must carry a seal.
    signing_keys: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        """Bad broker settings fail here, when the process starts, not at the first emit."""
        if self.broker_url is not None:
            self.address_of(self.broker_url)
        elif self.sentinel_master:
            raise ConfigurationError(
                "RAPTORBUS_SENTINEL_MASTER is set but no sentinel:// broker URL is"
            )
        Signer.parse(self.signing_keys)
        if self.min_replica_acks < 0:
            raise ConfigurationError(
                f"min_replica_acks must be 0 or more, got {self.min_replica_acks}"
            )
        timeout = self.replica_ack_timeout_seconds
        if not 0 < timeout <= MAX_REPLICA_ACK_TIMEOUT_SECONDS:
            raise ConfigurationError(
                f"the replica ack timeout must be above 0 and at most "
                f"{MAX_REPLICA_ACK_TIMEOUT_SECONDS} s (an emit is bounded by 2 s), got {timeout}"
            )

    def address_of(self, url: str) -> BrokerAddress:
        """``url`` (the configured broker, or the embedded one's) with this
        deployment's Sentinel settings."""
        return BrokerAddress.parse(url, self.sentinel_master, self.sentinel_password)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        try:
            max_bytes = int(env.get("RAPTORBUS_MAX_PAYLOAD_BYTES", DEFAULT_MAX_PAYLOAD_BYTES))
        except ValueError:
            raise ConfigurationError(
                f"RAPTORBUS_MAX_PAYLOAD_BYTES must be an integer, "
                f"got {env['RAPTORBUS_MAX_PAYLOAD_BYTES']!r}"
            ) from None
        handlers = env.get("RAPTORBUS_HANDLERS", "tasks")
        retry_base = env.get("RAPTORBUS_RETRY_BASE_SECONDS")
        try:
            retry_base_seconds = float(retry_base) if retry_base else None
        except ValueError:
            raise ConfigurationError(
                f"RAPTORBUS_RETRY_BASE_SECONDS must be a number, got {retry_base!r}"
            ) from None
        ack_timeout = _positive_seconds(env, "RAPTORBUS_REPLICA_ACK_TIMEOUT_SECONDS")
        return cls(
            sentinel_master=env.get("RAPTORBUS_SENTINEL_MASTER") or None,
            sentinel_password=env.get("RAPTORBUS_SENTINEL_PASSWORD") or None,
            min_replica_acks=_replica_acks(env),
            replica_ack_timeout_seconds=ack_timeout or DEFAULT_REPLICA_ACK_TIMEOUT_SECONDS,
            reclaim_seconds=_positive_seconds(env, "RAPTORBUS_RECLAIM_SECONDS"),
            metrics_per_workspace=_switch(
                "RAPTORBUS_METRICS_PER_WORKSPACE",
                env.get("RAPTORBUS_METRICS_PER_WORKSPACE"),
                default=False,
            ),
            health_event_seconds=_seconds_or_off(env, "RAPTORBUS_HEALTH_EVENT_SECONDS"),
            signing_keys=env.get("RAPTORBUS_SIGNING_KEYS", ""),
            appendfsync=_appendfsync(env),
            outbox=_switch("RAPTORBUS_OUTBOX", env.get("RAPTORBUS_OUTBOX"), default=True),
            broker_url=broker_url_from_env(env),
            eager=env.get("RAPTORBUS_EAGER", "") in ("1", "true", "yes"),
            max_payload_bytes=max_bytes,
            routing_module=env.get("RAPTORBUS_ROUTING", "routing"),
            celery_config_module=env.get("RAPTORBUS_CELERY_CONFIG", "celeryconfig"),
            handler_modules=tuple(m for m in handlers.split(",") if m),
            retry_base_seconds=retry_base_seconds,
            home=Path(env["RAPTORBUS_HOME"]) if env.get("RAPTORBUS_HOME") else _default_home(),
        )
