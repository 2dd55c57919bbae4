"""Ports for servers a test starts later: never the same one twice in a run.

``free_port()`` binds port 0 and closes the socket at once, so two calls made
before either server listens may name the same port. That happened: a
Sentinel topology's replica was given its master's port, could not listen,
and the Sentinels never saw a replica. Every server a test describes before
starting it takes its port from here."""

from __future__ import annotations

from raptorflow_bus.embedded import free_port

_handed_out: set[int] = set()


def unused_port() -> int:
    """A free port this test run has not handed out before."""
    while True:
        port = free_port()
        if port not in _handed_out:
            _handed_out.add(port)
            return port
