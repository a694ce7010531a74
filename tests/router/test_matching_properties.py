"""The trie, the shared groups and the retained store agree with kushi.protocol.topics.topic_matches.

Random filters and topics over a small alphabet of levels (so that they often
match), including empty levels, "$" levels, "+" and "#"; after random adds and
removes the structures must answer exactly what checking every filter against
the topic answers (a brute force over one filter at a time).
"""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from kushi.protocol.packets import Publish
from kushi.protocol.topics import topic_matches
from kushi.router.retained import RetainedStore
from kushi.router.shared import SharedSubscriptions
from kushi.router.trie import SubscriptionTrie


NAME_LEVELS = st.sampled_from(["a", "b", "", "$s"])
topics = st.lists(NAME_LEVELS, min_size=1, max_size=4).map("/".join)
filters = st.builds(
    lambda levels, ends_with_hash: "/".join(levels + ["#"] if ends_with_hash else levels) or "#",
    st.lists(st.one_of(NAME_LEVELS, st.just("+")), min_size=0, max_size=4),
    st.booleans(),
)
keys = st.sampled_from(["k1", "k2", "k3"])
operations = st.lists(st.tuples(st.booleans(), filters, keys), max_size=40)


def test_reference_matcher_agrees_with_the_spec_examples() -> None:
    """The examples of 4.7.1.2, 4.7.1.3 and 4.7.2: the reference the tests below trust."""
    assert topic_matches("sport/tennis/player1/#", "sport/tennis/player1")
    assert topic_matches("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon")
    assert topic_matches("sport/#", "sport")
    assert topic_matches("sport/tennis/+", "sport/tennis/player1")
    assert not topic_matches("sport/tennis/+", "sport/tennis/player1/ranking")
    assert not topic_matches("sport/+", "sport")
    assert topic_matches("sport/+", "sport/")
    assert topic_matches("+/+", "/finance")
    assert topic_matches("/+", "/finance")
    assert not topic_matches("+", "/finance")
    assert not topic_matches("#", "$SYS/monitor/Clients")
    assert not topic_matches("+/monitor/Clients", "$SYS/monitor/Clients")
    assert topic_matches("$SYS/#", "$SYS/")
    assert topic_matches("$SYS/monitor/+", "$SYS/monitor/Clients")


@settings(max_examples=300, deadline=None)
@given(operations, st.lists(topics, min_size=1, max_size=5))
def test_trie_match_equals_checking_every_filter(ops: list[tuple[bool, str, str]],
                                                 probe_topics: list[str]) -> None:
    trie = SubscriptionTrie()
    live: set[tuple[str, str]] = set()
    for is_add, filter, key in ops:
        if is_add:
            assert trie.add(filter, key, (filter, key)) == ((filter, key) not in live)
            live.add((filter, key))
        else:
            assert trie.remove(filter, key) == ((filter, key) in live)
            live.discard((filter, key))
    assert len(trie) == len(live)
    assert sorted(trie.filters()) == sorted({filter for filter, _ in live})
    for topic in probe_topics:
        expected = Counter((key, (filter, key)) for filter, key in live
                           if topic_matches(filter, topic))
        assert Counter(trie.match(topic)) == expected, topic


@settings(max_examples=200, deadline=None)
@given(operations, topics)
def test_shared_match_equals_checking_every_group(ops: list[tuple[bool, str, str]],
                                                  topic: str) -> None:
    shared = SharedSubscriptions()
    live: set[tuple[str, str]] = set()
    for is_add, filter, key in ops:
        group = key[-1]  # a few groups over the same filters
        if is_add:
            shared.add(group, filter, key, None)
            live.add((group, filter))
        else:
            shared.remove(group, filter, key)
            if not shared.members(group, filter):
                live.discard((group, filter))
    found = {(group, filter) for group, filter, _ in shared.match(topic)}
    assert found == {(group, filter) for group, filter in live if topic_matches(filter, topic)}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(topics, st.booleans())), filters)
def test_retained_match_equals_checking_every_topic(writes: list[tuple[str, bool]],
                                                    filter: str) -> None:
    store = RetainedStore()
    stored: set[str] = set()
    for topic, clear in writes:
        store.set(topic, Publish(topic, b"" if clear else b"x", retain=True), 0.0)
        (stored.discard if clear else stored.add)(topic)
    assert sorted(message.topic for message in store.match(filter, 0.0)) == sorted(
        topic for topic in stored if topic_matches(filter, topic))
