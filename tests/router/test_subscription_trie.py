"""SubscriptionTrie: the topic matching rules of MQTT 5 section 4.7 (3.1.1 section 4.7)."""

from __future__ import annotations

import pytest

from kushi.router.trie import SubscriptionTrie


def keys_matching(trie: SubscriptionTrie, topic: str) -> list[str]:
    return sorted(key for key, _ in trie.match(topic))


def trie_with(*filters: str) -> SubscriptionTrie:
    """A trie where each filter is subscribed by a key named like the filter."""
    trie = SubscriptionTrie()
    for filter in filters:
        trie.add(filter, filter, None)
    return trie


@pytest.mark.parametrize(
    ("filter", "topic", "matches"),
    [
        # exact names
        ("a/b/c", "a/b/c", True),
        ("a/b/c", "a/b", False),
        ("a/b", "a/b/c", False),
        ("a/b/c", "A/b/c", False),  # [MQTT-4.7.3-4] case sensitive, no normalization
        ("a b/c", "a b/c", True),  # spaces are ordinary characters
        # "+" fills exactly one level, empty ones included
        ("a/+/c", "a/b/c", True),
        ("a/+/c", "a//c", True),
        ("a/+/c", "a/b/d/c", False),
        ("a/+", "a", False),
        ("a/+", "a/", True),
        ("+", "a", True),
        ("+", "a/b", False),
        ("+/+", "/a", True),
        ("/+", "/a", True),
        ("+", "/a", False),
        # "#" matches its parent level and anything below
        ("#", "a", True),
        ("#", "a/b/c", True),
        ("#", "/", True),
        ("a/#", "a", True),
        ("a/#", "a/b", True),
        ("a/#", "a/b/c", True),
        ("a/#", "ab", False),
        ("a/#", "b/a", False),
        ("a/+/#", "a/b", True),
        ("a/+/#", "a", False),
        # empty levels are real levels
        ("a//b", "a//b", True),
        ("a//b", "a/b", False),
        ("a/b", "a//b", False),
        ("/", "/", True),
        ("/#", "/a", True),
        ("/#", "a", False),
    ],
)
def test_wildcard_matching(filter: str, topic: str, matches: bool) -> None:
    """[MQTT-4.7.1-1] "#" multi-level (including the parent), [MQTT-4.7.1-2] "+" one whole level."""
    assert keys_matching(trie_with(filter), topic) == ([filter] if matches else [])


@pytest.mark.parametrize(
    ("filter", "topic", "matches"),
    [
        ("#", "$SYS/broker/uptime", False),
        ("+/broker/uptime", "$SYS/broker/uptime", False),
        ("+", "$SYS", False),
        ("$SYS/#", "$SYS/broker/uptime", True),
        ("$SYS/+/uptime", "$SYS/broker/uptime", True),
        ("$SYS/#", "$SYS", True),
        ("a/+/c", "a/$x/c", True),  # only the first level is special
        ("a/#", "a/$x", True),
        ("#", "a$/b", True),
    ],
)
def test_dollar_topics_are_not_matched_by_leading_wildcards(filter: str, topic: str,
                                                            matches: bool) -> None:
    """[MQTT-4.7.2-1] A filter starting with # or + never matches a topic starting with $."""
    assert keys_matching(trie_with(filter), topic) == ([filter] if matches else [])


def test_overlapping_filters_give_one_entry_per_filter() -> None:
    """A client subscribed with several matching filters is listed once per filter.

    The broker merges them (MQTT 5 3.3.4: max QoS, all subscription ids); the
    trie only reports each (filter, key) with its own value.
    """
    trie = SubscriptionTrie()
    trie.add("a/b", "client", {"qos": 0})
    trie.add("a/+", "client", {"qos": 1})
    trie.add("#", "client", {"qos": 2})
    trie.add("a/c", "client", {"qos": 2})  # does not match a/b
    trie.add("a/#", "other", {"qos": 1})
    assert sorted(trie.match("a/b"), key=repr) == sorted(
        [("client", {"qos": 0}), ("client", {"qos": 1}), ("client", {"qos": 2}),
         ("other", {"qos": 1})], key=repr)


def test_add_twice_replaces_the_value() -> None:
    """[MQTT-3.8.4-3] Subscribing again to the same filter replaces the subscription."""
    trie = SubscriptionTrie()
    assert trie.add("a/+", "c1", "first") is True
    assert trie.add("a/+", "c1", "second") is False
    assert trie.match("a/x") == [("c1", "second")]
    assert len(trie) == 1


def test_remove_only_removes_that_pair() -> None:
    trie = SubscriptionTrie()
    trie.add("a/+", "c1", 1)
    trie.add("a/+", "c2", 2)
    trie.add("a/b", "c1", 3)
    assert trie.remove("a/+", "c1") is True
    assert trie.remove("a/+", "c1") is False
    assert trie.remove("never/subscribed", "c1") is False
    assert sorted(trie.match("a/b")) == [("c1", 3), ("c2", 2)]
    assert len(trie) == 2
    assert trie.filters_of("c1") == {"a/b"}


def test_remove_prunes_empty_nodes() -> None:
    """Memory follows the live subscriptions: removing the last one leaves an empty root."""
    trie = SubscriptionTrie()
    filters = ["a/b/c/d", "a/b/+/#", "a/b", "x//y", "#", "+/+"]
    for filter in filters:
        trie.add(filter, "k", None)
    trie.remove("a/b/c/d", "k")
    assert sorted(trie.filters()) == sorted(f for f in filters if f != "a/b/c/d")
    assert "c" not in trie._root.children["a"].children["b"].children  # pruned branch
    for filter in filters[1:]:
        trie.remove(filter, "k")
    assert trie._root.children == {}
    assert len(trie) == 0
    assert trie.filters_of("k") == frozenset()


def test_remove_keeps_nodes_still_in_use() -> None:
    trie = SubscriptionTrie()
    trie.add("a/b/c", "k", None)
    trie.add("a", "k", None)
    trie.remove("a/b/c", "k")
    assert keys_matching(trie, "a") == ["k"]
    assert trie._root.children["a"].children == {}


def test_remove_key_removes_every_filter_of_a_session() -> None:
    trie = SubscriptionTrie()
    trie.add("a/#", "gone", None)
    trie.add("b", "gone", None)
    trie.add("b", "stays", None)
    assert sorted(trie.remove_key("gone")) == ["a/#", "b"]
    assert trie.remove_key("gone") == []
    assert keys_matching(trie, "b") == ["stays"]
    assert keys_matching(trie, "a/x") == []
    assert len(trie) == 1


def test_subscribers_and_get_look_up_one_filter_without_wildcard_matching() -> None:
    trie = SubscriptionTrie()
    trie.add("a/+", "c1", "v1")
    assert trie.subscribers("a/+") == {"c1": "v1"}
    assert trie.subscribers("a/b") == {}  # no matching, just this filter
    assert trie.subscribers("a") == {}  # an inner node has no subscribers
    assert trie.get("a/+", "c1") == "v1"
    assert trie.get("a/+", "c2") is None
