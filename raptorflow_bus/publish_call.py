"""Calls of ``lua/publish.lua`` built as the bytes Redis reads, and their replies.

The emit path is one round trip; what is not the round trip is building it.
Through redis-py's client, one emit's call cost more than the round trip
itself: each of its thirty-odd arguments encoded on its own, two Kombu
messages each re-encoding the envelope JSON, a delivery tag from
``uuid.uuid4()`` each. Here the keys and limits of a set of queues are packed
once and kept, and so is, per kind of event (its queues, priority and metrics
fields), a template of its whole record in the call: every copy's Kombu
message with its RESP framing, with holes for the envelope JSON (escaped once
per event, whatever the number of copies), its length and the delivery tag.
An event's record is then one ``%`` formatting. The message is ASCII, as
``json.dumps`` writes it, so its length in characters is its length in bytes.
``tests/test_publish_call.py`` checks the copies byte for byte against
``kombu_messages.kombu_message``, which a stock Kombu consumer reads.

Delivery tags are opaque to Kombu and must only be unique: 72 random bits per
process, then the copy's number, in uuid4's shape (``_tags``).

A batch bigger than ``MAX_COPIES`` copies or ``MAX_BYTES`` is split into
calls that each stay near 5 ms of Redis time at most (``fanout_job`` says
what that does to all-or-nothing)."""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from raptorflow_bus import keys
from raptorflow_bus.envelope import Priority
from raptorflow_bus.kombu_messages import wake_key
from raptorflow_bus.metrics import WORKSPACE_SCOPE
from raptorflow_bus.redis_store import METRICS_KEY, metric_field
from raptorflow_bus.resp import bulk_text
from raptorflow_bus.topology import PRIORITY_STEPS, PRIORITY_VALUES, priority_list

if TYPE_CHECKING:
    from raptorflow_bus.publisher import Prepared

# One call's bounds. Redis runs a script start to finish, so every other
# client waits for it. SLOWLOG on the 2-core VM (bench/throughput.py prints
# the longest call of a 10,000-event batch) put a copy of 900 bytes at 1.2 to
# 2.5 us of Redis time, depending on what else the VM ran: 2,000 copies (a
# 1,000-event batch to a guild and the council) took 2.4 to 5.3 ms.
MAX_COPIES = 2000
MAX_BYTES = 2 * 1024 * 1024
# How long a split batch's progress marker outlives its last call: the time
# within which sending the batch again (after a lost connection) is safe.
MARKER_TTL_MS = 60_000

ALL, EACH = "all", "each"
# The script's replies, by their first element.
PUBLISHED, REFUSED, STALE, NOT_RUN = 1, 0, 2, 3

_escape = json.encoder.encode_basestring_ascii  # json.dumps(str), without its checks


def _resp_number(i: int) -> bytes:
    text = b"%d" % i
    return b"$%d\r\n%b\r\n" % (len(text), text)


_NUMBERS = [_resp_number(i) for i in range(4096)]


def _num(i: int) -> bytes:
    """``i`` as a RESP bulk string (small ones made once)."""
    return _NUMBERS[i] if 0 <= i < 4096 else _resp_number(i)


_TTL = _num(MARKER_TTL_MS)


_tag_state: tuple[int, bytes, Iterator[int]] = (0, b"", iter(()))


def _tags() -> tuple[bytes, Iterator[int]]:
    """Delivery tags are opaque to Kombu and need only be unique: 72 random bits
    per process, then a number per copy, in uuid4's shape (a forked child
    draws its own bits)."""
    global _tag_state
    pid, prefix, numbers = _tag_state
    if pid != os.getpid():
        h = os.urandom(10).hex()
        text = f"{h[:8]}-{h[8:12]}-4{h[12:15]}-{'89ab'[int(h[15], 16) & 3]}{h[16:19]}-"
        prefix = text.encode()
        numbers = itertools.count()
        _tag_state = (os.getpid(), prefix, numbers)
    return prefix, numbers


def message_parts(queue: str, priority: int) -> tuple[str, str]:
    """The text before the escaped envelope and between it and the delivery
    tag in the copy ``kombu_messages.kombu_message(body, queue, priority)`` writes:
    that message is ``head + json.dumps(body) + tail + tag + '"}}'``."""
    tail = (
        ',"content-encoding":"utf-8","content-type":"application/json","headers":{},'
        f'"properties":{{"delivery_info":{{"exchange":"","routing_key":{json.dumps(queue)}}},'
        f'"priority":{priority},"delivery_mode":2,"delivery_tag":"'
    )
    return '{"body":', tail


@dataclass(frozen=True)
class QueueSet:
    """What every call to one set of queues shares, packed once."""

    queues: tuple[str, ...]
    index: dict[str, int]
    keys: bytes  # the queues' priority lists and wake lists, as RESP
    nkeys: int
    header: bytes  # nq, ns, the first step, the limits, the names


@dataclass(frozen=True)
class Shape:
    """One kind of event (its queues, priority and metrics fields) in calls to
    one set of queues. An event's copies are ``copies % args`` in mode 'all',
    ``record % args`` (the same, framed by its fields and list indexes) in mode
    'each', where ``args`` is (length of the escaped envelope + ``extra[i]``,
    escaped envelope, tag prefix, tag number) for each copy i."""

    fields: tuple[int, ...]
    lists: tuple[int, ...]
    copies: bytes
    record: bytes
    extra: tuple[int, ...]


@dataclass
class Call:
    """One script call: events ``start`` to ``stop`` of its job, packed.

    ``k`` is its place in a split batch (0 when the batch is one call)."""

    start: int
    stop: int
    k: int
    packed: bytes


class CallBuilder:
    """Packs calls for one publisher (its script, its limits, its metrics)."""

    def __init__(
        self,
        sha: str,
        limit_of: Callable[[str], int],
        *,
        per_workspace: bool,
        exchange: str,
        max_copies: int = MAX_COPIES,
        max_bytes: int = MAX_BYTES,
    ) -> None:
        self._sha = bulk_text(sha)
        self._limit_of = limit_of
        self._per_workspace = per_workspace
        self._fixed_keys = b"".join(
            bulk_text(k)
            for k in (METRICS_KEY, keys.bindings_version(exchange), keys.binding_table(exchange))
        )
        self.max_copies = max_copies
        self.max_bytes = max_bytes
        self._sets: dict[tuple[str, ...], QueueSet] = {}
        self._shapes: dict[tuple[Any, ...], Shape] = {}
        self._prologues: dict[tuple[Any, ...], bytes] = {}
        self._kinds: dict[tuple[Any, ...], tuple[Shape, tuple[str, ...]]] = {}
        self._singles: dict[tuple[Any, ...], tuple[bytes, Shape]] = {}
        self._fields: dict[str, str] = {}
        self._steps = {
            p: (PRIORITY_VALUES[p], PRIORITY_STEPS.index(PRIORITY_VALUES[p]) + 1) for p in Priority
        }
        self._unsplit_marker = bulk_text(keys.batch_marker("-"))

    def queue_set(self, queues: tuple[str, ...]) -> QueueSet:
        found = self._sets.get(queues)
        if found is None:
            names = [priority_list(q, s) for q in queues for s in PRIORITY_STEPS]
            names += [wake_key(q) for q in queues]
            header = [_num(len(queues)), _num(len(PRIORITY_STEPS))]
            header += [_num(self._steps[Priority.NORMAL][1])]
            header += [_num(limit) for limit in map(self._limit_of, queues)]
            found = QueueSet(
                queues,
                {q: i for i, q in enumerate(queues, 1)},
                b"".join(bulk_text(n) for n in names),
                len(names),
                b"".join(header) + b"".join(bulk_text(q) for q in queues),
            )
            if len(self._sets) > 1024:
                self._sets.clear()
            self._sets[queues] = found
        return found

    def _field(self, scope: str) -> str:
        field = self._fields.get(scope)
        if field is None:
            if len(self._fields) > 4096:
                self._fields.clear()
            field = self._fields[scope] = metric_field(scope, "published")
        return field

    def _shape(
        self, fields: tuple[int, ...], lists: tuple[int, ...], queues: tuple[str, ...], prio: int
    ) -> Shape:
        key = (fields, lists, queues, prio)
        shape = self._shapes.get(key)
        if shape is None:
            copies, record, extra = [], [_num(len(fields)), *map(_num, fields)], []
            record.append(_num(len(lists)))
            for li, queue in zip(lists, queues, strict=True):
                # '$<length>\r\n{"body":<escaped><tail><prefix><number>"}}\r\n'
                tail = message_parts(queue, prio)[1].encode("ascii")
                copy = b'$%d\r\n{"body":%b' + tail.replace(b"%", b"%%") + b'%b%012x"}}\r\n'
                copies.append(copy)
                record += (_num(li), copy)
                extra.append(len('{"body":') + len(tail) + 36 + len('"}}'))
            shape = Shape(fields, lists, b"".join(copies), b"".join(record), tuple(extra))
            if len(self._shapes) > 4096:
                self._shapes.clear()
            self._shapes[key] = shape
        return shape

    def _kind(self, qset: QueueSet, key: tuple[Any, ...], fields: dict[str, int]) -> Shape:
        """The shape of the events of one kind (``key``: queues, priority, type,
        workspace) in a call to ``qset`` whose metrics fields so far are
        ``fields`` (extended here). The first kind of a call always numbers its
        fields from 1, so that case, every emit's, is kept across calls."""
        first = not fields
        cache_key = (qset.queues, *key)
        if first:
            kept = self._kinds.get(cache_key)
            if kept is not None:
                for i, name in enumerate(kept[1], 1):
                    fields[name] = i
                return kept[0]
        queues, priority_name, event_type, workspace = key
        priority, step = self._steps[priority_name]
        scopes = [event_type]
        if workspace is not None:
            scopes.append(WORKSPACE_SCOPE + workspace)
        names = [self._field(s) for s in scopes]
        idx = tuple(fields.setdefault(name, len(fields) + 1) for name in names)
        ns = len(PRIORITY_STEPS)
        lists = tuple((qset.index[q] - 1) * ns + step for q in queues)
        shape = self._shape(idx, lists, queues, priority)
        if first:
            if len(self._kinds) > 4096:
                self._kinds.clear()
            self._kinds[cache_key] = (shape, tuple(names))
        return shape

    def _prologue(self, key: tuple[Any, ...], qset: QueueSet, marker_key: bytes) -> bytes:
        """Everything between the argument count and the events: the same for
        every emit of one kind of event while the table stays (so kept)."""
        found = self._prologues.get(key)
        if found is None:
            fields, mode, token, k, reserves = key[1:]
            found = b"".join(
                [
                    self._sha,
                    _num(4 + qset.nkeys),
                    self._fixed_keys,
                    marker_key,
                    qset.keys,
                    bulk_text(token),
                    bulk_text(mode),
                    _num(k),
                    _TTL,
                    qset.header,
                    *map(_num, reserves),
                    _num(len(fields)),
                    *(bulk_text(f) for f in fields),
                ]
            )
            if k == 0:  # a split batch's marker is its own: not worth keeping
                if len(self._prologues) > 1024:
                    self._prologues.clear()
                self._prologues[key] = found
        return found

    def build(
        self,
        prepared: Sequence[Prepared],
        routes: Sequence[tuple[str, ...]],
        *,
        mode: str,
        token: str,
        split: bool,
        marker: Callable[[], str] = lambda: "-",
    ) -> list[Call]:
        """The calls publishing ``prepared``, whose queues are ``routes``.

        With ``split`` the events are cut into calls under the bounds, in
        order: in mode 'all' they are chained through the key named by
        ``marker()`` and only the first checks the table token and the whole
        batch's room; in mode 'each' every call stands alone. Without it, one
        call."""
        if len(prepared) == 1 and mode == ALL:
            return [self._single(prepared[0], routes[0], token)]
        first_route = routes[0] if routes else ()
        if all(r is first_route for r in routes):
            qset = self.queue_set(first_route)
        else:
            union: dict[str, None] = {}
            for queues in routes:
                union.update(dict.fromkeys(queues))
            qset = self.queue_set(tuple(union))
        fields: dict[str, int] = {}
        shapes: dict[tuple[Any, ...], Shape] = {}
        counts: dict[tuple[str, ...], int] = {}
        tag_prefix, tag_numbers = _tags()
        events: list[tuple[Shape, bytes]] = []
        per_workspace = self._per_workspace
        bare = mode == ALL  # the copies alone: mode 'all' frames them by runs
        for (envelope, body), queues in zip(prepared, routes, strict=True):
            workspace = envelope.workspace_id if per_workspace else None
            key = (queues, envelope.priority, envelope.type, workspace)
            shape = shapes.get(key)
            if shape is None:
                shape = shapes[key] = self._kind(qset, key, fields)
            counts[queues] = counts.get(queues, 0) + 1
            escaped = _escape(body).encode("ascii")
            size = len(escaped)
            args: list[Any] = []
            for extra in shape.extra:
                args += (size + extra, escaped, tag_prefix, next(tag_numbers))
            events.append((shape, (shape.copies if bare else shape.record) % tuple(args)))
        reserves = dict.fromkeys(qset.queues, 0)
        for queues, n in counts.items():
            for q in queues:
                reserves[q] += n
        spans = self._spans(events) if split and len(events) > 1 else [(0, len(events))]
        chained = mode == ALL and len(spans) > 1
        marker_key = bulk_text(keys.batch_marker(marker())) if chained else self._unsplit_marker
        fixed_args = 3 + 4 + qset.nkeys + 7 + 3 * len(qset.queues) + 1 + len(fields)
        field_names = tuple(fields)
        no_reserves = (0,) * len(qset.queues)
        calls = []
        for k, (start, stop) in enumerate(spans, 1):
            first = k == 1 or mode == EACH
            reserve = tuple(reserves.values()) if mode == ALL and first else no_reserves
            head = (qset.queues, field_names, mode, token if first else "", k if chained else 0)
            prologue = self._prologue((*head, reserve), qset, marker_key)
            span = events[start:stop] if len(spans) > 1 else events
            if mode == ALL:
                nargs, text = _runs(span, len(fields))
            else:
                nargs, text = _records(span)
            packed = b"".join([b"*%d\r\n$7\r\nEVALSHA\r\n" % (fixed_args + nargs), prologue, *text])
            calls.append(Call(start, stop, k if chained else 0, packed))
        return calls

    def probe(self, token: str) -> bytes:
        """A call with no events: it only checks ``token``. With a token the
        script never computes, it answers with the table; sent instead of the
        events when the cached table is known to be too old, so a big batch
        does not go to Redis once for nothing."""
        return b"".join(
            [
                b"*16\r\n$7\r\nEVALSHA\r\n",
                self._sha,
                _num(4),
                self._fixed_keys,
                self._unsplit_marker,
                bulk_text(token),
                bulk_text(ALL),
                _num(0),
                _TTL,
                _num(0),
                _num(len(PRIORITY_STEPS)),
                _num(self._steps[Priority.NORMAL][1]),
                _num(0),
                _num(0),
            ]
        )

    def _single(self, item: Prepared, queues: tuple[str, ...], token: str) -> Call:
        """``build`` for one event in mode 'all' (an emit): the whole call but
        the copies is kept per kind of event and table token."""
        envelope, body = item
        workspace = envelope.workspace_id if self._per_workspace else None
        kind = (queues, envelope.priority, envelope.type, workspace)
        cached = self._singles.get((*kind, token))
        if cached is None:
            qset = self.queue_set(queues)
            fields: dict[str, int] = {}
            shape = self._kind(qset, kind, fields)
            nargs, frame = _runs([(shape, b"")], len(fields))
            nargs += 3 + 4 + qset.nkeys + 7 + 3 * len(qset.queues) + 1 + len(fields)
            head = (qset.queues, tuple(fields), ALL, token, 0, (1,) * len(qset.queues))
            prefix = b"".join(
                [
                    b"*%d\r\n$7\r\nEVALSHA\r\n" % nargs,
                    self._prologue(head, qset, self._unsplit_marker),
                    *frame,
                ]
            )
            if len(self._singles) > 1024:
                self._singles.clear()
            cached = self._singles[(*kind, token)] = (prefix, shape)
        prefix, shape = cached
        escaped = _escape(body).encode("ascii")
        size = len(escaped)
        tag_prefix, tag_numbers = _tags()
        args: list[Any] = []
        for extra in shape.extra:
            args += (size + extra, escaped, tag_prefix, next(tag_numbers))
        return Call(0, 1, 0, prefix + shape.copies % tuple(args))

    def _spans(self, events: list[tuple[Shape, bytes]]) -> list[tuple[int, int]]:
        spans: list[tuple[int, int]] = []
        start, copies, size = 0, 0, 0
        for i, (shape, text) in enumerate(events):
            n = len(shape.lists)
            if i > start and (copies + n > self.max_copies or size + len(text) > self.max_bytes):
                spans.append((start, i))
                start, copies, size = i, 0, 0
            copies += n
            size += len(text)
        spans.append((start, len(events)))
        return spans


def _runs(events: list[tuple[Shape, bytes]], nfields: int) -> tuple[int, list[bytes]]:
    """Mode 'all': each field's increment, then the events in runs that go to
    the same lists, each run's lists named once; returns (arguments, RESP parts)."""
    if len(events) == 1:  # an emit
        shape, text = events[0]
        increments = [0] * nfields
        for f in shape.fields:
            increments[f - 1] = 1
        lists = shape.lists
        parts = [*map(_num, increments), _NUMBERS[1], _num(len(lists)), *map(_num, lists)]
        return nfields + 3 + 2 * len(lists), [*parts, _NUMBERS[1], text]
    increments = [0] * nfields
    runs: list[bytes] = []
    nargs = nfields + 1
    count = 0
    i = 0
    while i < len(events):
        shape = events[i][0]
        j, same = i + 1, True
        while j < len(events) and events[j][0].lists == shape.lists:
            same = same and events[j][0] is shape
            j += 1
        for kind in [shape] if same else [s for s, _ in events[i:j]]:
            for f in kind.fields:
                increments[f - 1] += j - i if same else 1
        runs += (_num(len(shape.lists)), *map(_num, shape.lists), _num(j - i))
        runs += [text for _, text in events[i:j]]
        nargs += 2 + len(shape.lists) * (1 + j - i)
        count += 1
        i = j
    return nargs, [*map(_num, increments), _num(count), *runs]


def _records(events: list[tuple[Shape, bytes]]) -> tuple[int, list[bytes]]:
    """Mode 'each': the events' records (fields, then copies after their list
    index); returns (number of arguments, RESP parts)."""
    nargs = 1 + sum(2 + len(shape.fields) + 2 * len(shape.lists) for shape, _ in events)
    return nargs, [_num(len(events)), *(text for _, text in events)]


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
