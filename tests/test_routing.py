"""routing.py is data; these tests hold it to the seed's topology and to
Kombu's topic semantics."""

import pytest
from kombu.transport.virtual.exchange import TopicExchange

import routing
from raptorflow_bus import Catalogue, Topology
from raptorflow_bus.envelope import routing_key_for
from raptorflow_bus.topic import topic_matches

TOPOLOGY = Topology.from_module(routing)
GUILDS = ("research", "muse", "matrix", "guardian")


def kombu_matches(pattern: str, key: str) -> bool:
    """Kombu's Redis emulation: the binding key becomes a regex at bind time."""
    exchange = TopicExchange(None)
    return bool(exchange._match(exchange.key_to_pattern(pattern), key))


def test_the_nine_channels_of_the_seed_with_their_limits() -> None:
    assert list(TOPOLOGY.channels) == [
        "heartbeat",
        "guild_broadcast",
        "guild_research",
        "guild_muse",
        "guild_matrix",
        "guild_guardian",
        "alert",
        "state_update",
        "dlq",
    ]
    for ch in TOPOLOGY.channels.values():
        assert 1 <= ch.retention_hours <= 168
        assert 5_000 <= ch.max_queue_length <= 50_000
        assert ch.patterns and ch.purpose
    assert TOPOLOGY.dlq_capacity == 50_000
    assert TOPOLOGY.exchange == "raptorflow.events"


def test_council_hears_all_nine_and_each_guild_its_own_channel_and_the_broadcast() -> None:
    assert set(TOPOLOGY.consumer("council").channels) == set(TOPOLOGY.channels)
    for guild in GUILDS:
        assert set(TOPOLOGY.consumer(guild).channels) == {f"guild_{guild}", "guild_broadcast"}


def test_every_catalogued_event_type_routes_to_at_least_one_consumer() -> None:
    for event_type in Catalogue.default():
        assert TOPOLOGY.consumers_for(routing_key_for(event_type)), event_type


def test_each_consumer_queue_is_bound_with_every_pattern_of_its_channels() -> None:
    queue = TOPOLOGY.kombu_event_queue("research")
    assert queue.name == "research"
    assert {b.routing_key for b in queue.bindings} == set(
        TOPOLOGY.channels["guild_research"].patterns + TOPOLOGY.channels["guild_broadcast"].patterns
    )
    assert {b.exchange.name for b in queue.bindings} == {"raptorflow.events"}


# pattern, key, AMQP answer, does Kombu's Redis emulation agree?
TOPIC_TABLE = [
    ("a.b", "a.b", True, True),
    ("a.b", "a.bb", False, True),
    ("a.b", "a.b.c", False, True),
    ("a.*", "a.b", True, True),
    ("a.*", "a", False, True),
    ("a.*", "a.b.c", False, True),
    ("*.b", "a.b", True, True),
    ("*.b", "b", False, True),
    ("a.*.c", "a.b.c", True, True),
    ("a.*.c", "a.b.b.c", False, True),
    ("a.#", "a.b.c", True, True),
    ("a.#", "a", True, False),  # Kombu's 'a.#' needs one more word
    ("#", "a.b.c", True, True),
    ("#.c", "a.b.c", True, True),
    ("a.#.c", "a.x.y.c", True, True),
    ("a.#.c", "a.c", True, False),  # Kombu needs a word for '#' here
    ("raptorflow.events.signal.*", "raptorflow.events.signal.detected", True, True),
    ("raptorflow.events.signal.*", "raptorflow.events.signals.detected", False, True),
]


@pytest.mark.parametrize(("pattern", "key", "expected", "kombu_agrees"), TOPIC_TABLE)
def test_topic_matching_follows_amqp_and_names_where_kombu_differs(
    pattern: str, key: str, expected: bool, kombu_agrees: bool
) -> None:
    assert topic_matches(pattern, key) is expected
    assert (kombu_matches(pattern, key) == expected) is kombu_agrees


def test_on_every_routing_key_we_emit_our_matcher_and_kombus_agree() -> None:
    patterns = {p for ch in TOPOLOGY.channels.values() for p in ch.patterns}
    for event_type in Catalogue.default():
        key = routing_key_for(event_type)
        for pattern in patterns:
            assert topic_matches(pattern, key) == kombu_matches(pattern, key), (pattern, key)


def test_the_readme_routing_table_is_generated_from_routing_py() -> None:
    from pathlib import Path

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    block = readme.split("<!-- routing-table -->\n")[1].split("\n<!-- /routing-table -->")[0]
    assert block == TOPOLOGY.markdown()
