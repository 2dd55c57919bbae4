"""The bus's Lua scripts, one file each under ``lua/`` (headed by the KEYS and
ARGV it takes), read once per process; Dramatiq's Redis broker is the model."""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

import redis


@functools.cache
def source(name: str) -> str:
    return (resources.files("raptorflow_bus") / "lua" / f"{name}.lua").read_text()


def register(client: redis.Redis[bytes], name: str) -> Any:
    """A redis-py ``Script`` for ``lua/<name>.lua``: EVALSHA, reloaded after NOSCRIPT
    (a restarted Redis has forgotten every script)."""
    return client.register_script(source(name))
