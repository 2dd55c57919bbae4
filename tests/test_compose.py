"""There is no Docker here, so docker-compose.yml is checked as data: every
command is a valid raptorbus invocation (the api service: uvicorn on the
example app, built by its factory), every variable is one the code reads,
and every consumer of routing.py has a worker."""

from pathlib import Path
from typing import Any

import pytest
import yaml

import routing
from examples import api
from raptorflow_bus.cli import build_parser
from raptorflow_bus.settings import ENV_VARS

ROOT = Path(__file__).parent.parent
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
BUS_SERVICES = {
    name: s for name, s in SERVICES.items() if s.get("image") == "raptorflow-bus:latest"
}
# The one service of the image that is not a raptorbus command.
API = "api"
CLI_SERVICES = sorted(set(BUS_SERVICES) - {API})


@pytest.mark.parametrize("name", CLI_SERVICES)
def test_each_service_runs_a_valid_raptorbus_command_from_the_repo_image(name: str) -> None:
    service = BUS_SERVICES[name]
    command = service["command"]
    assert command[0] == "raptorbus"
    build_parser().parse_args(command[1:])
    assert service["build"] == "." and (ROOT / "Dockerfile").exists()
    assert service["image"] == "raptorflow-bus:latest"


@pytest.mark.parametrize("name", sorted(BUS_SERVICES))
def test_each_environment_variable_is_one_the_code_reads(name: str) -> None:
    assert set(BUS_SERVICES[name]["environment"]) <= ENV_VARS | api.ENV_VARS
    assert "REDIS_URL" in BUS_SERVICES[name]["environment"]


def test_the_api_service_runs_the_example_app_under_uvicorn_with_required_tokens() -> None:
    service = BUS_SERVICES[API]
    command = service["command"]
    assert command[:3] == ["uvicorn", "examples.api:create_app", "--factory"]
    module, factory = command[1].split(":")
    assert (ROOT / (module.replace(".", "/") + ".py")).exists()
    assert callable(getattr(api, factory))
    port = command[command.index("--port") + 1]
    assert f"{port}:{port}" in service["ports"]
    assert service["environment"][api.TOKENS_ENV].startswith(f"${{{api.TOKENS_ENV}:?")
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "COPY examples ./examples" in dockerfile and ".[fastapi]" in dockerfile


def test_every_consumer_of_routing_py_has_exactly_one_worker() -> None:
    workers = [
        s["command"][2]
        for name, s in BUS_SERVICES.items()
        if name != API and s["command"][1] == "worker"
    ]
    assert sorted(workers) == sorted(c.name for c in routing.CONSUMERS)


def test_redis_is_durable_and_never_evicts() -> None:
    redis = SERVICES["redis"]
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command and "--maxmemory-policy noeviction" in command
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert any(v.endswith(":/data") for v in redis["volumes"])
    for service in BUS_SERVICES.values():
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"


def test_prometheus_scrapes_the_metrics_service_and_grafana_gets_its_config() -> None:
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = [
        t for job in config["scrape_configs"] for c in job["static_configs"] for t in c["targets"]
    ]
    command = SERVICES["metrics"]["command"]
    port = command[command.index("--port") + 1]
    assert targets == [f"metrics:{port}"]
    assert f"{port}:{port}" in SERVICES["metrics"]["ports"]
    for service in ("prometheus", "grafana"):
        for volume in SERVICES[service]["volumes"]:
            assert (ROOT / volume.split(":")[0]).exists(), volume
    password = SERVICES["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
    assert password.startswith("${GRAFANA_ADMIN_PASSWORD:?")


def test_flower_requires_credentials() -> None:
    auth = SERVICES["flower"]["environment"]["FLOWER_BASIC_AUTH"]
    assert auth.startswith("${FLOWER_BASIC_AUTH:?")


def test_every_listed_variable_is_really_read_by_the_code() -> None:
    import inspect
    import re

    from raptorflow_bus import cli, embedded, settings

    source = "".join(inspect.getsource(m) for m in (settings, cli, embedded))
    for var in ENV_VARS:
        assert re.search(rf'(get\(|\[|\(env, )"{var}"', source), var
