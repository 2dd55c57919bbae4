"""The raptorbus CLI against a real Redis: each command, its bad input, its JSON."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from raptorflow_bus import Bus, DeadLetter
from raptorflow_bus.embedded import free_port
from raptorflow_bus.envelope import Envelope, utcnow
from raptorflow_bus.queues import queue_state
from tests.harness import wait_until
from tests.payloads import VALID

pytestmark = pytest.mark.broker
SIGNAL = json.dumps(VALID["signal.detected"])


@pytest.fixture
def env(redis_url: str) -> dict[str, str]:
    return {**os.environ, "RAPTORBUS_BROKER_URL": redis_url}


def cli(
    env: dict[str, str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "raptorflow_bus.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        input=stdin,
    )


def letter(n: int, workspace: str, age: timedelta = timedelta()) -> DeadLetter:
    envelope = Envelope(
        type="campaign.activated",
        payload=VALID["campaign.activated"],
        workspace_id=workspace,
        correlation_id=f"c-{n}",
        request_id=f"c-{n}",
    )
    when = utcnow() - age
    return DeadLetter(
        id=f"letter-{n}",
        envelope=envelope,
        handler="guardian.check_campaign_compliance",
        guild="guardian",
        exception_type="ComplianceViolation",
        message="blocked channel",
        traceback="Traceback ...",
        attempts=4,
        first_failed_at=when,
        last_failed_at=when,
    )


def test_emit_prints_the_envelope_and_the_event_waits_in_its_queues(
    env: dict[str, str], bus: Bus
) -> None:
    result = cli(
        env,
        "emit",
        "signal.detected",
        SIGNAL,
        "--workspace",
        "ws-1",
        "--correlation",
        "corr-1",
        "--priority",
        "high",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    sent = json.loads(result.stdout)
    assert (sent["type"], sent["workspace_id"], sent["correlation_id"], sent["priority"]) == (
        "signal.detected",
        "ws-1",
        "corr-1",
        "high",
    )
    assert queue_state(bus, "research").depth == 1
    assert queue_state(bus, "council").depth == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["signal.detectd", SIGNAL, "--workspace", "w"], "did you mean 'signal.detected'"),
        (["signal.detected", "{not json", "--workspace", "w"], "not valid JSON"),
        (["signal.detected", '{"signal_id": "s"}', "--workspace", "w"], "source"),
        (["signal.detected", SIGNAL], "workspace-scoped"),
        (["signal.*", SIGNAL, "--workspace", "w"], "wildcard"),
        (["signal.detected", SIGNAL, "--workspace", "w", "--priority", "asap"], "priority"),
    ],
)
def test_emit_rejects_bad_input_with_exit_2_and_publishes_nothing(
    env: dict[str, str], bus: Bus, args: list[str], message: str
) -> None:
    result = cli(env, "emit", *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert bus.get_metrics()["totals"]["published"] == 0


def test_topology_lists_channels_and_live_queue_depths(env: dict[str, str], bus: Bus) -> None:
    bus.emit("council.directive", VALID["council.directive"])
    data = json.loads(cli(env, "topology", "--json").stdout)
    assert len(data["channels"]) == 9
    depths = {q["consumer"]: q["depth"] for q in data["queues"]}
    assert depths == {"research": 1, "muse": 1, "matrix": 1, "guardian": 1, "council": 1}
    table = cli(env, "topology")
    assert table.returncode == 0 and "guild_broadcast" in table.stdout


def test_dlq_list_show_filter_and_export(env: dict[str, str], bus: Bus, tmp_path: Path) -> None:
    for n, ws in enumerate(["ws-a", "ws-a", "ws-b"]):
        bus.store.dlq_put(letter(n, ws, age=timedelta(hours=n)), 100)
    rows = json.loads(cli(env, "dlq", "list", "--json").stdout)
    assert [r["id"] for r in rows] == ["letter-0", "letter-1", "letter-2"]
    only_a = json.loads(cli(env, "dlq", "list", "--workspace", "ws-a", "--json").stdout)
    assert [r["id"] for r in only_a] == ["letter-0", "letter-1"]
    old = json.loads(cli(env, "dlq", "list", "--older-than", "90m", "--json").stdout)
    assert [r["id"] for r in old] == ["letter-2"]
    shown = json.loads(cli(env, "dlq", "show", "letter-1", "--json").stdout)
    assert DeadLetter.model_validate(shown) == bus.dlq.get("letter-1")
    missing = cli(env, "dlq", "show", "nope")
    assert missing.returncode == 4 and "no dead letter with id 'nope'" in missing.stderr
    assert cli(env, "dlq", "list", "--older-than", "soon").returncode == 2
    out = tmp_path / "letters.jsonl"
    assert (
        cli(
            env, "dlq", "export", "--handler", "check_campaign_compliance", "-o", str(out)
        ).returncode
        == 0
    )
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == [
        "letter-0",
        "letter-1",
        "letter-2",
    ]


def test_dlq_replay_queues_the_handler_and_bulk_actions_need_confirmation(
    env: dict[str, str], bus: Bus
) -> None:
    for n in range(3):
        bus.store.dlq_put(letter(n, "ws-a"), 100)
    replayed = cli(env, "dlq", "replay", "letter-0", "--json")
    assert json.loads(replayed.stdout) == {"replayed": ["letter-0"]}
    assert queue_state(bus, "guardian.handlers").depth == 1
    assert bus.dlq.count() == 3
    refused = cli(env, "dlq", "purge", "--all", stdin="y\n")
    assert refused.returncode == 1 and "pass --yes" in refused.stderr
    assert bus.dlq.count() == 3
    assert cli(env, "dlq", "purge").returncode == 2
    purged = cli(env, "dlq", "purge", "--workspace", "ws-a", "--yes", "--json")
    assert json.loads(purged.stdout) == {"purged": 3}
    assert bus.dlq.count() == 0


def test_stats_reports_depth_age_and_dlq_per_guild(env: dict[str, str], bus: Bus) -> None:
    bus.emit("signal.detected", VALID["signal.detected"], workspace_id="w")
    bus.store.dlq_put(letter(0, "w"), 100)
    data = json.loads(cli(env, "stats", "--json").stdout)
    assert data["dlq_depth"] == 1
    assert data["guilds"]["research"]["depth"] == 1
    assert data["guilds"]["research"]["oldest_age_seconds"] >= 0
    assert data["guilds"]["muse"]["depth"] == 0
    assert data["guilds"]["muse"]["oldest_age_seconds"] is None


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["worker"],
        ["flower"],
        ["emit"],
        ["topology"],
        ["stats"],
        ["dlq"],
        ["dlq", "list"],
        ["dlq", "show"],
        ["dlq", "replay"],
        ["dlq", "purge"],
        ["dlq", "export"],
        ["up"],
        ["demo"],
    ],
)
def test_every_command_has_help(command: list[str]) -> None:
    from raptorflow_bus.cli import main

    with pytest.raises(SystemExit) as exited:
        main([*command, "--help"])
    assert exited.value.code == 0


def children_of(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    except FileNotFoundError:
        return ""


def dead(pid: int) -> bool:
    """Gone or a zombie (the supervisor has not reaped it yet)."""
    status = Path(f"/proc/{pid}/status")
    try:
        return "State:\tZ" in status.read_text()
    except FileNotFoundError:
        return True


def test_up_restarts_a_killed_worker_and_its_queued_events_are_handled(
    env: dict[str, str], bus: Bus, tmp_path: Path
) -> None:
    log = tmp_path / "up.log"
    up = subprocess.Popen(
        [sys.executable, "-m", "raptorflow_bus.cli", "up", "--no-flower", "--pool=solo"],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_until(
            lambda: len(bus.app.control.ping(timeout=0.5) or []) == 5,
            timeout=90,
            what="five guild workers",
        )
        [research] = [p for p in children_of(up.pid) if "worker research" in cmdline(p)]
        os.kill(research, signal.SIGKILL)
        for n in range(3):
            bus.emit(
                "signal.detected",
                {**VALID["signal.detected"], "signal_id": f"s-{n}"},
                workspace_id="ws-1",
            )
        wait_until(
            lambda: (
                bus.get_metrics()["handlers"].get("research.score_signal", {}).get("succeeded") == 3
            ),
            timeout=90,
            what="the restarted worker to handle the queued signals",
        )
        assert dead(research)
        survivors = children_of(up.pid)
        assert research not in survivors and len(survivors) == 5
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(timeout=90)
    output = log.read_text()
    assert up.returncode == 0, output
    assert "worker research exited with code -9; restarting" in output
    assert "worker research restarted" in output
    time.sleep(0.2)
    assert all(not cmdline(p) for p in survivors)


def start_up(env: dict[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "raptorflow_bus.cli", "up", "--no-flower", "--pool=solo", *args],
        env=env,
        stdout=log.open("a"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def test_ctrl_c_is_a_warm_shutdown_that_loses_nothing(
    env: dict[str, str], bus: Bus, tmp_path: Path
) -> None:
    env = {**env, "RAPTORBUS_HANDLERS": "tests.slow_handlers"}
    log = tmp_path / "up.log"

    def handled(counter: str) -> int:
        return int(bus.get_metrics()["handlers"].get("research.slow_score", {}).get(counter, 0))

    up = start_up(env, log)
    wait_until(
        lambda: len(bus.app.control.ping(timeout=0.5) or []) == 5,
        timeout=90,
        what="five guild workers",
    )
    for n in range(4):
        bus.emit(
            "signal.detected",
            {**VALID["signal.detected"], "signal_id": f"s-{n}"},
            workspace_id="ws-1",
        )
    wait_until(lambda: handled("delivered") >= 1, timeout=30, what="a handler to start")
    up.send_signal(signal.SIGINT)
    assert up.wait(timeout=90) == 0, log.read_text()[-3000:]
    assert "warm shutdown" in log.read_text()
    assert handled("succeeded") == handled("delivered") >= 1
    assert handled("succeeded") < 4

    up = start_up(env, log)
    try:
        wait_until(lambda: handled("succeeded") == 4, timeout=90, what="the rest to be handled")
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(timeout=90)
    assert handled("delivered") == 4 and handled("duplicates") == 0


def test_up_demo_reaches_every_guild_leaves_the_expected_letter_and_cleans_up(
    tmp_path: Path,
) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RAPTORBUS_BROKER_URL", "REDIS_URL", "UPSTASH_REDIS_URL")
    }
    env.update(
        RAPTORBUS_HOME=str(tmp_path / "home"), FLOWER_BASIC_AUTH="admin:demo-pw", COLUMNS="120"
    )
    log = tmp_path / "demo.log"
    demo = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "raptorflow_bus.cli",
            "up",
            "--demo",
            "--demo-seconds=1",
            "--pool=solo",
            f"--flower-port={free_port()}",
        ],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    code = demo.wait(timeout=240)
    output = log.read_text()
    assert code == 0, output[-4000:]
    assert "guilds reached: council, guardian, matrix, muse, research" in output
    assert output.count("dead letter ") == 1
    assert "guardian.check_campaign_compliance ComplianceViolation" in output.replace("\n", " ")
    leftovers = subprocess.run(["pgrep", "-s", str(demo.pid)], capture_output=True, text=True)
    assert leftovers.stdout.strip() == ""
    assert not (tmp_path / "home" / "redis.url").exists()
