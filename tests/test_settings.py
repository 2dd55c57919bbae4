import pytest

from raptorflow_bus import ConfigurationError, Settings
from raptorflow_bus.backoff import Backoff
from raptorflow_bus.settings import mask_url


def test_the_broker_comes_from_the_first_configured_variable() -> None:
    assert Settings.from_env({}).broker_url is None
    assert Settings.from_env({"REDIS_URL": "redis://h:1/0"}).broker_url == "redis://h:1/0"
    assert (
        Settings.from_env(
            {"RAPTORBUS_BROKER_URL": "redis://a/0", "REDIS_URL": "redis://b/0"}
        ).broker_url
        == "redis://a/0"
    )


def test_upstash_url_and_token_make_a_tls_redis_url() -> None:
    env = {"UPSTASH_REDIS_URL": "rediss://eu1.upstash.io:6379", "UPSTASH_REDIS_TOKEN": "tok"}
    assert Settings.from_env(env).broker_url == "rediss://default:tok@eu1.upstash.io:6379"
    with pytest.raises(ConfigurationError, match="REST endpoint"):
        Settings.from_env({"UPSTASH_REDIS_URL": "https://eu1.upstash.io"})
    with pytest.raises(ConfigurationError, match="UPSTASH_REDIS_URL is not"):
        Settings.from_env({"UPSTASH_REDIS_TOKEN": "tok"})


def test_bad_numbers_in_the_environment_are_named() -> None:
    with pytest.raises(ConfigurationError, match="RAPTORBUS_MAX_PAYLOAD_BYTES"):
        Settings.from_env({"RAPTORBUS_MAX_PAYLOAD_BYTES": "lots"})


def test_passwords_never_reach_the_logs() -> None:
    assert mask_url("rediss://default:s3cret@host:6379/0") == "rediss://default:***@host:6379/0"
    assert mask_url("redis://localhost:6379/0") == "redis://localhost:6379/0"


def test_backoff_doubles_from_the_base_and_stays_under_the_cap() -> None:
    plain = Backoff(base_seconds=1.0, cap_seconds=5.0, jitter=False)
    assert [plain.countdown(n) for n in range(4)] == [1.0, 2.0, 4.0, 5.0]
    jittered = Backoff(base_seconds=1.0, cap_seconds=100.0)
    for n in range(3):
        assert 2**n <= jittered.countdown(n) <= 2**n * 1.1


def test_a_retry_cap_above_the_visibility_timeout_is_refused() -> None:
    from raptorflow_bus import Bus

    with pytest.raises(ConfigurationError, match="visibility timeout"):
        Bus(Settings(eager=True), celery_config={"raptorbus_retry_cap_seconds": 7200})
