"""The fan-out's matcher against Kombu's own: given the binding table a stock
Kombu client writes, the bus routes every key to exactly the queues Kombu's
``TopicExchange.lookup`` does, so who gets an event never depends on who
published it. The table is written by Kombu's own ``prepare_bind``."""

from __future__ import annotations

import random

import pytest
from kombu.transport.virtual.exchange import TopicExchange

import routing
from raptorflow_bus import Catalogue, Topology
from raptorflow_bus.bindings import BindingTable
from raptorflow_bus.envelope import routing_key_for
from raptorflow_bus.topic import topic_matches
from raptorflow_bus.topology import PRIORITY_SEP

EXCHANGE = "raptorflow.events"
TOPOLOGY = Topology.from_module(routing)
KOMBU = TopicExchange(None)

PATTERNS = [
    "a", "a.b", "a.b.c", "*", "#", "a.*", "a.#", "*.b", "#.b", "a.*.c", "a.#.c",
    "*.*", "#.#", "a.*.#", "a.#.*", "#.a.#", "*.a.*", "#.*", "*.#", "a.#.#",
    "a*", "a.b*c", "a.#b", "a.b#", "a..b", "", ".", "a.", ".a", "a+b.(c)",
    "a.[bc]", "a|b", "a.b$", "^a", "a.\\d", "a.{1}",
    "raptorflow.events.#", "raptorflow.events.agent.*", "raptorflow.events.*.detected",
    "raptorflow.events.#.started", "raptorflow.#", "raptorflow.*.agent.#",
    "raptorflow.events.guild.*.event", "#.error", "raptorflow.events.*",
]  # fmt: skip

KEYS = [
    "", "a", "b", "a.b", "a.c", "a.b.c", "a.x.c", "a.x.y.c", "a.", ".a", ".", "..",
    "a..b", "a..c", "a.b.", "aaa", "a.bc", "a.bbbc", "a.ac", "a.#b", "a.b#", "a+b.(c)",
    "ab.c", "a.b.c.d", "x.a.y", "a.a.a", "a|b", "a.b$", "a.1", "a.d", "b.a",
    "raptorflow.events", "raptorflow.events.", "raptorflow.events.agent",
    "raptorflow.events.agent.task.started", "raptorflowXevents.agent.x",
    "raptorflow.events.guild.research.event", "raptorflow.x.agent",
    *(routing_key_for(t) for t in Catalogue.default()),
]  # fmt: skip


def member(pattern: str, queue: str, regex: str | None = None) -> str:
    """A binding as Kombu's Redis channel stores it (``Channel._queue_bind``)."""
    key, stored, name = KOMBU.prepare_bind(queue, EXCHANGE, pattern, None)
    return PRIORITY_SEP.join([key, stored if regex is None else regex, name])


def kombu_lookup(members: list[str], key: str) -> tuple[str, ...]:
    """Where Kombu's topic exchange delivers ``key`` given this table
    (``Channel.get_table`` then ``TopicExchange.deliver``)."""
    table = [tuple(m.split(PRIORITY_SEP)) for m in members]
    return tuple(sorted(q for q in KOMBU.lookup(table, EXCHANGE, key, None) if q))


def test_the_fan_out_matches_kombus_lookup_on_every_key_and_pattern() -> None:
    members = [member(p, f"q{i}") for i, p in enumerate(PATTERNS)]
    table = BindingTable.parse("1:1", [m.encode() for m in members])
    assert not table.unusable
    for key in KEYS:
        assert table.queues_for(key) == kombu_lookup(members, key), key


def test_random_patterns_and_keys_match_as_kombu_matches() -> None:
    rng = random.Random(20240610)
    words = ["a", "b", "*", "#", "", "ab", "a*"]

    def dotted(n: int) -> str:
        return ".".join(rng.choice(words) for _ in range(n))

    patterns = sorted({dotted(rng.randint(1, 4)) for _ in range(300)})
    keys = sorted({dotted(rng.randint(1, 5)).replace("#", "y") for _ in range(300)})
    members = [member(p, f"q{i}") for i, p in enumerate(patterns)]
    table = BindingTable.parse("1:1", members)
    for key in keys:
        assert table.queues_for(key) == kombu_lookup(members, key), key


@pytest.mark.parametrize(
    ("pattern", "key", "kombu", "amqp"),
    [
        ("a.*", "a.b", True, True),
        ("a.*", "a.b.c", False, False),
        ("a.*", "a.", False, True),
        ("a.#", "a", False, True),
        ("a.#", "a.", True, True),
        ("a.#", "a.b.c", True, True),
        ("#.a", "a", False, True),
        ("a.#.b", "a.b", False, True),
        ("a.#.b", "a.x.y.b", True, True),
        ("#", "", True, True),
        ("*", "", False, True),
        ("a*", "aaa", True, False),
        ("raptorflow.events.#", "raptorflow.events", False, True),
        ("raptorflow.events.agent.*", "raptorflow.events.agent.task_started", True, True),
        ("raptorflow.events.agent.*", "raptorflow.events.agent.task.started", False, False),
    ],
)
def test_kombu_57_semantics_where_they_differ_from_amqp(
    pattern: str, key: str, kombu: bool, amqp: bool
) -> None:
    """Kombu's rules, not AMQP's: a third party binding with Kombu gets what a
    stock Kombu producer would give it. routing.py's patterns never sit on these
    edges (test_routing checks both agree on every catalogued key)."""
    table = BindingTable.parse("1:1", [member(pattern, "q")])
    assert (table.queues_for(key) == ("q",)) is kombu
    assert kombu_lookup([member(pattern, "q")], key) == (("q",) if kombu else ())
    assert topic_matches(pattern, key) is amqp


def test_a_member_keeps_the_regex_it_was_stored_with() -> None:
    """Kombu before 5.x stored ``.*?[^\\.]`` for ``*``; Kombu's lookup uses the
    stored regex, whoever reads the table, and so does the bus."""
    old = member("a.*", "old", regex=r"^a\..*?[^\.]$")
    table = BindingTable.parse("1:1", [old, member("a.*", "new")])
    assert table.queues_for("a.b.c") == ("old",) == kombu_lookup([old], "a.b.c")
    assert table.queues_for("a.b") == ("new", "old")


def test_members_kombu_could_not_route_with_are_set_aside_not_fatal() -> None:
    good = member("a.#", "good")
    bad_regex = PRIORITY_SEP.join(["a", "(", "q"])
    table = BindingTable.parse("1:3", [good, f"two{PRIORITY_SEP}fields", bad_regex])
    assert table.queues_for("a.b") == ("good",)
    assert len(table.unusable) == 2


def test_the_bus_finds_its_own_bindings_missing_from_a_table() -> None:
    own = [
        member(p, TOPOLOGY.event_queue(c)) for c in TOPOLOGY.consumers for p in TOPOLOGY.patterns(c)
    ]
    assert BindingTable.parse("1:1", own).missing(TOPOLOGY) == []
    lost = BindingTable.parse("1:1", [m for m in own if not m.endswith("research")])
    assert {q for _, q in lost.missing(TOPOLOGY)} == {"research"}
    assert len(lost.missing(TOPOLOGY)) == len(TOPOLOGY.patterns("research"))
