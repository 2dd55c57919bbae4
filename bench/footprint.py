"""Memory of an idle ``raptorbus up`` stack: the supervisor, the five guild
workers (prefork, concurrency 2, as ``up`` starts them by default, with
RaptorFlow's own handlers) and Flower, on the bench's broker.

RSS is summed over the process tree read from /proc (each process's parent
in ``/proc/<pid>/stat``), so pages shared between a prefork parent and its
children count once per process; PSS (``smaps_rollup``) shares them out and is
given beside it. The broker is not part of the tree (the bench runs it). The
anchor is one idle plain ``celery -A bench.plain_app worker -E`` with the same
pool and concurrency."""

from __future__ import annotations

import secrets
import socket
import sys
import time
from pathlib import Path
from typing import Any

from bench.context import Context, WorkerFailed
from bench.sides import CelerySide, warm_up
from bench.workers import Process, worker_env
from raptorflow_bus.embedded import free_port

SECTION = "footprint"
MB = 1024 * 1024
UP_READY = "[up] running"


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def parents() -> dict[int, int]:
    """pid -> parent pid of every process visible in /proc."""
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _read(f"/proc/{entry.name}/stat")
            # The command name (field 2) is in parentheses and may hold spaces.
            fields = stat.rpartition(")")[2].split()
            if len(fields) > 1:
                table[int(entry.name)] = int(fields[1])
    return table


def tree(root: int) -> list[int]:
    table = parents()
    found, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, ppid in table.items() if ppid in frontier]
        found += frontier
    return found


def _kib_field(text: str, name: str) -> int:
    for line in text.splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1]) * 1024
    return 0


def process_memory(pid: int) -> dict[str, Any]:
    cmdline = _read(f"/proc/{pid}/cmdline").replace("\0", " ").strip()
    return {
        "pid": pid,
        "cmd": cmdline[:160],
        "rss": _kib_field(_read(f"/proc/{pid}/status"), "VmRSS"),
        "pss": _kib_field(_read(f"/proc/{pid}/smaps_rollup"), "Pss"),
    }


def tree_memory(root: int) -> list[dict[str, Any]]:
    return [m for m in (process_memory(pid) for pid in tree(root)) if m["rss"]]


ROLES = {"worker": "guild worker", "flower": "flower", "up": "supervisor"}


def role(cmd: str) -> str:
    """From the raptorbus command a process runs (a prefork child keeps its
    parent's command line)."""
    words = cmd.split()
    if "raptorflow_bus.cli" in words[:-1]:
        return ROLES.get(words[words.index("raptorflow_bus.cli") + 1], "other")
    return "other"


def wait_up(proc: Process, flower_port: int, timeout: float = 240.0) -> None:
    """Until ``up`` says its workers answer a ping and Flower takes connections."""
    deadline = time.monotonic() + timeout
    while UP_READY not in proc.tail(200):
        if not proc.alive():
            raise WorkerFailed(f"raptorbus up exited:\n{proc.tail()}")
        if time.monotonic() > deadline:
            raise WorkerFailed(f"raptorbus up not ready after {timeout:.0f}s:\n{proc.tail()}")
        time.sleep(0.5)
    while True:
        try:
            socket.create_connection(("127.0.0.1", flower_port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise WorkerFailed(f"Flower not listening on {flower_port}") from None
            time.sleep(0.5)


def up_stack(ctx: Context) -> list[dict[str, Any]]:
    port = free_port()
    env = worker_env(ctx.url, ctx.home / "up", FLOWER_BASIC_AUTH=f"bench:{secrets.token_hex(8)}")
    env.pop("RAPTORBUS_HANDLERS")  # RaptorFlow's own handlers, as users run it
    argv = [sys.executable, "-m", "raptorflow_bus.cli", "up", f"--flower-port={port}"]
    with Process("raptorbus up", argv, env, ctx.log("up")) as proc:
        wait_up(proc, port)
        time.sleep(ctx.sizes.settle_seconds)
        memory = tree_memory(proc.pid)
        proc.stop(timeout=90)
    return memory


def celery_worker(ctx: Context) -> list[dict[str, Any]]:
    ctx.fresh()
    side = CelerySide(ctx)
    try:
        with side.worker("prefork", 2, tag="-footprint") as proc:
            warm_up(ctx, side, proc)
            time.sleep(ctx.sizes.settle_seconds)
            return tree_memory(proc.pid)
    finally:
        side.close()


def run(ctx: Context) -> None:
    res = ctx.results
    ctx.fresh()
    stack = up_stack(ctx)
    plain = celery_worker(ctx)
    by_role: dict[str, list[dict[str, Any]]] = {}
    for m in stack:
        by_role.setdefault(role(m["cmd"]), []).append(m)
    workers = [m for m in stack if role(m["cmd"]) == "guild worker"]
    # Each guild's tree: its main process and its pool children (same command line).
    guilds = {m["cmd"] for m in workers}
    per_guild = sum(m["rss"] for m in workers) / max(1, len(guilds))
    res.add(
        SECTION,
        "raptorbus up stack RSS",
        sum(m["rss"] for m in stack) / MB,
        "MB",
        note=f"{len(stack)} processes",
    )
    res.add(SECTION, "raptorbus up stack PSS", sum(m["pss"] for m in stack) / MB, "MB")
    for name in ("supervisor", "flower"):
        res.add(SECTION, f"{name} RSS", sum(m["rss"] for m in by_role.get(name, [])) / MB, "MB")
    res.add(
        SECTION,
        "guild worker (prefork c=2) RSS",
        per_guild / MB,
        "MB",
        note=f"mean of {len(guilds)}, main + pool children",
    )
    res.add(
        SECTION,
        "celery -E worker (prefork c=2) RSS",
        sum(m["rss"] for m in plain) / MB,
        "MB",
        note=f"{len(plain)} processes",
    )
    # The broker is not in the stack; its RSS is kept for reference (it holds
    # what the sections before this one left: a high-water mark, not idle).
    res.detail(
        SECTION, "redis-server used_memory_rss", ctx.client.info("memory").get("used_memory_rss")
    )
    res.ratio(
        SECTION,
        "guild worker / celery worker",
        f"{SECTION}/guild worker (prefork c=2) RSS",
        f"{SECTION}/celery -E worker (prefork c=2) RSS",
    )
    res.detail(SECTION, "up processes", stack)
    res.detail(SECTION, "celery worker processes", plain)
