"""The bus's Lua scripts, one file each under ``lua/`` (headed by the KEYS and
ARGV it takes), read once per process; Dramatiq's Redis broker is the model.

A line ``-- #include NAME`` is replaced by ``lua/NAME.lua``: Redis scripts
cannot call each other, and two scripts that must keep the same records (the
DLQ's failure groups) share their functions this way."""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

import redis

INCLUDE = "-- #include "


@functools.cache
def source(name: str) -> str:
    text = (resources.files("raptorflow_bus") / "lua" / f"{name}.lua").read_text()
    return "".join(
        source(line[len(INCLUDE) :].strip()) if line.startswith(INCLUDE) else line
        for line in text.splitlines(keepends=True)
    )


def register(client: redis.Redis[bytes], name: str) -> Any:
    """A redis-py ``Script`` for ``lua/<name>.lua``: EVALSHA, reloaded after NOSCRIPT
    (a restarted Redis has forgotten every script)."""
    return client.register_script(source(name))
