"""The publish script's calls as the publisher packs them (``publish_call``):
every copy is byte for byte the message ``kombu_messages.kombu_message`` writes (the
one a stock Kombu consumer reads), the arguments are the ones ``publish.lua``
documents, and a batch over the bounds is cut into calls in order. No broker."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from raptorflow_bus.envelope import Envelope, Priority
from raptorflow_bus.kombu_messages import kombu_message
from raptorflow_bus.publish_call import ALL, EACH, CallBuilder
from raptorflow_bus.topology import PRIORITY_STEPS, PRIORITY_VALUES

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
QUEUES = ("research", "council", 'external.%s "quoted" ünïcode')


def parse(packed: bytes) -> list[bytes]:
    """A RESP array of bulk strings, back into its arguments."""
    head, _, rest = packed.partition(b"\r\n")
    assert head.startswith(b"*")
    args, pos = [], 0
    for _ in range(int(head[1:])):
        assert rest[pos : pos + 1] == b"$"
        end = rest.index(b"\r\n", pos)
        size = int(rest[pos + 1 : end])
        args.append(rest[end + 2 : end + 2 + size])
        assert rest[end + 2 + size : end + 4 + size] == b"\r\n"
        pos = end + 4 + size
    assert pos == len(rest), "trailing bytes"
    return args


def layout(args: list[bytes]) -> dict[str, Any]:
    """The call's arguments read as lua/publish.lua's header says. ``copies``
    lists (list index, message) in the order the script pushes them."""
    assert args[0] == b"EVALSHA"
    nkeys = int(args[2])
    keys, argv = args[3 : 3 + nkeys], args[3 + nkeys :]
    mode, nq = argv[1].decode(), int(argv[4])
    p = 7
    limits = [int(a) for a in argv[p : p + nq]]
    names = [a.decode() for a in argv[p + nq : p + 2 * nq]]
    reserves = [int(a) for a in argv[p + 2 * nq : p + 3 * nq]]
    p += 3 * nq
    fields = [a.decode() for a in argv[p + 1 : p + 1 + int(argv[p])]]
    p += 1 + len(fields)
    copies: list[tuple[int, bytes]] = []
    events = []
    increments: list[int] = []
    if mode == "all":
        increments = [int(a) for a in argv[p : p + len(fields)]]
        p += len(fields)
        runs = int(argv[p])
        p += 1
        for _ in range(runs):
            nl = int(argv[p])
            lists = [int(a) for a in argv[p + 1 : p + 1 + nl]]
            ne = int(argv[p + 1 + nl])
            p += 2 + nl
            # The order the script pushes: each list's copies, event by event.
            by_list = {li: [argv[p + e * nl + j] for e in range(ne)] for j, li in enumerate(lists)}
            copies += [(li, m) for li, ms in by_list.items() for m in ms]
            p += ne * nl
    else:
        ne = int(argv[p])
        p += 1
        for _ in range(ne):
            nfe = int(argv[p])
            event_fields = [fields[int(i) - 1] for i in argv[p + 1 : p + 1 + nfe]]
            np_ = int(argv[p + 1 + nfe])
            mine = [(int(argv[p + 2 + nfe + 2 * j]), argv[p + 3 + nfe + 2 * j]) for j in range(np_)]
            events.append((event_fields, mine))
            copies += mine
            p += 2 + nfe + 2 * np_
    assert p == len(argv), "every argument read"
    return {
        "keys": [k.decode() for k in keys],
        "token": argv[0].decode(),
        "mode": mode,
        "k": int(argv[2]),
        "ns": int(argv[5]),
        "limits": limits,
        "names": names,
        "reserves": reserves,
        "fields": fields,
        "increments": increments,
        "events": events,
        "copies": copies,
    }


def envelope(n: int, priority: Priority = Priority.NORMAL, **payload: Any) -> tuple[Envelope, str]:
    env = Envelope(
        type="signal.detected",
        payload={"n": n, "text": 'quote " back \\ newline \n percent % ünïcode ☃', **payload},
        priority=priority,
        workspace_id="ws-1",
        correlation_id="c",
        request_id="c",
    )
    return env, env.to_json()


def builder(**kwargs: Any) -> CallBuilder:
    return CallBuilder(
        "0" * 40, lambda q: 7 if q == "research" else 9, exchange="raptorflow.events", **kwargs
    )


@pytest.mark.parametrize("events", [1, 2])
@pytest.mark.parametrize("mode", [ALL, EACH])
@pytest.mark.parametrize("priority", list(Priority))
def test_every_copy_is_the_message_kombu_message_writes(
    priority: Priority, mode: str, events: int
) -> None:
    prepared = [envelope(1, priority), envelope(2, priority)][:events]
    routes = [QUEUES, QUEUES[:2]][:events]
    calls = builder(per_workspace=True)
    for _ in range(2):  # the second time from what the builder kept
        [call] = calls.build(prepared, routes, mode=mode, token="3:30", split=True)
    read = layout(parse(call.packed))
    assert read["names"] == list(QUEUES) and read["limits"] == [7, 9, 9]
    assert read["token"] == "3:30" and read["k"] == 0
    assert read["reserves"] == ([events, events, 1] if mode == ALL else [0, 0, 0])
    assert read["fields"] == ["signal.detected|published", "ws:ws-1|published"]
    if mode == ALL:
        assert read["increments"] == [events, events]
    else:
        assert [fields for fields, _ in read["events"]] == [read["fields"]] * events
    tags = set()
    seen = []
    for list_index, message in read["copies"]:
        qi, step = divmod(list_index - 1, read["ns"])
        queue = QUEUES[qi]
        assert PRIORITY_STEPS[step] == PRIORITY_VALUES[priority]
        body = json.loads(message)["body"]
        tag = json.loads(message)["properties"]["delivery_tag"]
        assert UUID4.match(tag) and tag not in tags
        tags.add(tag)
        stock = kombu_message(body, queue, PRIORITY_VALUES[priority])
        stock_tag = json.loads(stock)["properties"]["delivery_tag"]
        assert message.decode() == stock.replace(stock_tag, tag)
        seen.append((queue, Envelope.from_json(body)))
    expected = [(q, env) for (env, _), queues in zip(prepared, routes, strict=True) for q in queues]
    assert sorted(seen, key=repr) == sorted(expected, key=repr)
    # Within each list the events keep their order.
    for queue in QUEUES:
        ids = [env.id for q, env in seen if q == queue]
        assert ids == [env.id for (q, env) in expected if q == queue]


def test_a_batch_over_the_bounds_is_cut_in_order_and_chained() -> None:
    prepared = [envelope(n) for n in range(10)]
    calls = builder(per_workspace=False, max_copies=8).build(
        prepared, [QUEUES[:2]] * 10, mode=ALL, token="1:2", split=True, marker=lambda: "b-1"
    )
    assert [(c.start, c.stop, c.k) for c in calls] == [(0, 4, 1), (4, 8, 2), (8, 10, 3)]
    reads = [layout(parse(c.packed)) for c in calls]
    # Only the first call checks the table and the whole batch's room.
    assert [r["token"] for r in reads] == ["1:2", "", ""]
    assert [r["reserves"] for r in reads] == [[10, 10], [0, 0], [0, 0]]
    assert {r["keys"][3] for r in reads} == {"raptorbus:batch:b-1"}
    for queue_index in (1, 2):
        sent = [
            json.loads(json.loads(m)["body"])["payload"]["n"]
            for r in reads
            for li, m in r["copies"]
            if (li - 1) // r["ns"] + 1 == queue_index
        ]
        assert sent == list(range(10))
    assert [r["increments"] for r in reads] == [[4], [4], [2]]


def test_calls_of_a_group_stand_alone_and_a_small_batch_is_one_call() -> None:
    prepared = [envelope(n) for n in range(5)]
    calls = builder(per_workspace=False, max_copies=4).build(
        prepared, [QUEUES[:2]] * 5, mode=EACH, token="1:2", split=True
    )
    reads = [layout(parse(c.packed)) for c in calls]
    assert [c.k for c in calls] == [0, 0, 0] and len(calls) == 3
    assert {r["token"] for r in reads} == {"1:2"} and {r["mode"] for r in reads} == {"each"}
    one = builder(per_workspace=False).build(
        prepared, [QUEUES[:2]] * 5, mode=ALL, token="", split=True
    )
    assert len(one) == 1 and layout(parse(one[0].packed))["keys"][3] == "raptorbus:batch:-"


def test_a_batch_is_also_cut_by_its_size_in_bytes() -> None:
    big = [envelope(n, blob="x" * 3000) for n in range(6)]
    calls = builder(per_workspace=False, max_bytes=10_000).build(
        big, [QUEUES[:1]] * 6, mode=ALL, token="", split=True, marker=lambda: "b"
    )
    assert len(calls) == 3 and all(len(c.packed) < 10_000 + 1_000 for c in calls)
