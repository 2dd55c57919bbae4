"""Every Redis key the bus writes, named in one place (the README's table
"Where things live in Redis" lists them with their types and lifetimes)."""

from __future__ import annotations

PREFIX = "raptorbus:"

# Counters and the bus's own records (redis_store).
METRICS = PREFIX + "metrics"
DLQ_ENTRIES = PREFIX + "dlq:entries"
DLQ_INDEX = PREFIX + "dlq:index"
# Failure groups (dlq_groups.py, lua/dlq_groups.lua): kept by dlq_put/dlq_remove.
DLQ_PREFIX = PREFIX + "dlq:"
DLQ_CELLS = DLQ_PREFIX + "cells"
DLQ_GROUPS = DLQ_PREFIX + "groups"
DONE_PREFIX = PREFIX + "done:"
# Events whose handler tasks the event hop wrote (lua/dispatch_events.lua).
DISPATCHED_PREFIX = PREFIX + "dispatched:"

# The transport: wake tokens, and messages nobody can parse.
WAKE_PREFIX = PREFIX + "wake:"
MALFORMED = PREFIX + "transport:malformed"

# A batch split into several publish calls: how many of them ran (publish.lua).
BATCH_PREFIX = PREFIX + "batch:"

# Kombu's own unacked records (its default names, shared with stock Kombu).
UNACKED = "unacked"
UNACKED_INDEX = "unacked_index"

# The exchange's binding table is Kombu's own set (shared with stock Kombu);
# the version counter beside it is bumped by every bind, unbind and queue
# delete that goes through the bus's transport, so a publisher's cached copy
# of the table is checked in the same script call as the fan-out.
BINDING_TABLE_PREFIX = "_kombu.binding."
BINDINGS_VERSION_PREFIX = PREFIX + "bindings:version:"

# Worker liveness: who holds which delivery, and who still beats.
HEARTBEATS = PREFIX + "workers:heartbeats"
OWNED_PREFIX = PREFIX + "workers:owned:"
REAPER_LOCK = PREFIX + "workers:reaper-lock"


def wake(queue: str) -> str:
    """The list a consumer of ``queue`` blocks on; at most one token long."""
    return WAKE_PREFIX + queue


def owned(worker_id: str) -> str:
    """The deliveries ``worker_id`` holds unacked: a hash of tag -> queue."""
    return OWNED_PREFIX + worker_id


def binding_table(exchange: str) -> str:
    """Kombu's set of ``routing_key SEP regex SEP queue`` members for ``exchange``."""
    return BINDING_TABLE_PREFIX + exchange


def bindings_version(exchange: str) -> str:
    """The counter every binding change made through the bus's transport bumps."""
    return BINDINGS_VERSION_PREFIX + exchange


def dlq_group(group_id: str) -> str:
    """A failure group's aggregates: a hash (fields in ``lua/dlq_groups.lua``)."""
    return f"{DLQ_PREFIX}group:{group_id}"


def dlq_workspace_groups(workspace: str) -> str:
    """The groups with letters of ``workspace`` ("" for none), by last seen."""
    return f"{DLQ_PREFIX}wsgroups:{workspace}"


def dlq_members(group_id: str, workspace: str | None = None) -> str:
    """A group's letters by their position in the DLQ index: all of them, or
    those of one workspace ("" for none)."""
    if workspace is None:
        return f"{DLQ_PREFIX}members:{group_id}"
    return f"{DLQ_PREFIX}wsmembers:{group_id}:{workspace}"


def dispatched(handler_queue: str, event_id: str) -> str:
    """Set when the event hop writes ``event_id``'s tasks into ``handler_queue``,
    for as long as a done record lives: a second copy of the event (an emit
    spooled though its write landed, a stock producer's resend) then writes no
    second copy of the tasks, which two pool children could run at once."""
    return f"{DISPATCHED_PREFIX}{handler_queue}:{event_id}"


def batch_marker(batch_id: str) -> str:
    """How many calls of the split batch ``batch_id`` ran; expires a minute on."""
    return BATCH_PREFIX + batch_id
