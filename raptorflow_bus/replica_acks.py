"""Writes that count only once replicas hold them (``RAPTORBUS_MIN_REPLICA_ACKS``).

Redis replicates asynchronously: a master that dies a moment after it answered
can take the write with it, and Sentinel then promotes a replica that never saw
it. ``WAIT n timeout`` blocks until ``n`` replicas have processed every earlier
write of the connection, so it goes in the same pipeline as the write it
guards (it is refused inside a Lua script). When fewer confirm in time the
write is reported as ``NotReplicated``, a ``BrokerUnavailable``. An emit then
spools and a dead letter's task is requeued; the event step and a handler's
done record, whose writes are already on the master and must not be made
twice, wait for the replicas instead (``confirm``).

A replica confirms once it has the write in memory, not on disk: the guard is
against losing the master, not against losing both servers at once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from raptorflow_bus.errors import NotReplicated


@dataclass(frozen=True)
class ReplicaAcks:
    replicas: int = 0
    timeout_seconds: float = 0.25

    @property
    def timeout_ms(self) -> int:
        return max(int(self.timeout_seconds * 1000), 1)

    def execute(self, pipe: Any) -> list[Any]:
        """``pipe.execute()``, followed by WAIT when replicas are required; the
        results are those of the pipeline's own commands."""
        if not self.replicas:
            return list(pipe.execute())
        pipe.execute_command("WAIT", self.replicas, self.timeout_ms)
        return self.checked(list(pipe.execute()))

    def checked(self, results: list[Any]) -> list[Any]:
        """``results`` of some writes followed by WAIT's reply: the writes' own,
        or ``NotReplicated`` carrying them."""
        acked = int(results.pop())
        if acked < self.replicas:
            raise NotReplicated(
                f"{acked} of {self.replicas} replicas confirmed the write within "
                f"{self.timeout_ms} ms; a failover could lose it",
                results,
            )
        return results

    def confirm(
        self, client: redis.Redis[bytes], write: Callable[[Any], object], go_on: Callable[[], bool]
    ) -> bool:
        """After ``NotReplicated``: until replicas confirm or ``go_on`` says stop,
        send ``write`` (a harmless, idempotent write that ``write(pipe)`` queues)
        and WAIT. WAIT counts a connection's own writes, so a write of its own
        makes the answer true of everything the master took before it, even on
        another pooled connection. Whether the replicas confirmed. A connection
        error propagates: the server may then no longer be the one that took
        the unconfirmed write."""
        while go_on():
            pipe = client.pipeline(transaction=False)
            write(pipe)
            try:
                self.execute(pipe)
                return True
            except NotReplicated:
                continue
        return False
