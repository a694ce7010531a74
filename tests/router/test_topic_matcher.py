"""TopicMatcher: plain and shared subscriptions behind a topic -> result cache."""

from __future__ import annotations

from kushi.router.matcher import TopicMatcher


def test_plain_and_shared_filters_go_to_their_own_structures() -> None:
    matcher = TopicMatcher()
    assert matcher.add("a/+", "c1", "plain") is True
    assert matcher.add("$share/g/a/+", "c2", "shared") is True
    assert matcher.add("$share/g/a/+", "c3", "shared") is True
    result = matcher.match("a/b")
    assert result.subscribers == (("c1", "plain"),)
    assert result.shared == (("g", "a/+", (("c2", "shared"), ("c3", "shared"))),)
    assert len(matcher) == 3
    assert matcher.subscribers("$share/g/a/+") == {"c2": "shared", "c3": "shared"}
    assert matcher.subscribers("a/+") == {"c1": "plain"}


def test_no_match_is_an_empty_falsy_result() -> None:
    matcher = TopicMatcher()
    matcher.add("a", "c1", None)
    result = matcher.match("b")
    assert not result
    assert result.subscribers == () and result.shared == ()


def test_repeated_topic_is_answered_from_the_cache() -> None:
    matcher = TopicMatcher()
    matcher.add("a/#", "c1", None)
    first = matcher.match("a/b")
    assert matcher.match("a/b") is first
    assert (matcher.hits, matcher.misses) == (1, 1)


def test_subscribe_after_a_cached_match_is_seen() -> None:
    """The cache is invalidated by every add, so a new subscriber gets the next message."""
    matcher = TopicMatcher()
    matcher.add("a/b", "c1", None)
    assert [key for key, _ in matcher.match("a/b").subscribers] == ["c1"]
    matcher.add("a/+", "c2", None)
    assert sorted(key for key, _ in matcher.match("a/b").subscribers) == ["c1", "c2"]
    matcher.add("$share/g/#", "c3", None)
    assert [group for group, _, _ in matcher.match("a/b").shared] == ["g"]


def test_value_replacement_is_seen_through_the_cache() -> None:
    """[MQTT-3.8.4-3] A repeated SUBSCRIBE replaces the options; the next match uses the new ones."""
    matcher = TopicMatcher()
    matcher.add("a", "c1", {"qos": 0})
    matcher.match("a")
    assert matcher.add("a", "c1", {"qos": 2}) is False
    assert matcher.match("a").subscribers == (("c1", {"qos": 2}),)


def test_unsubscribe_after_a_cached_match_is_seen() -> None:
    matcher = TopicMatcher()
    matcher.add("a/+", "c1", None)
    matcher.add("$share/g/a/+", "c2", None)
    assert matcher.match("a/b")
    assert matcher.remove("a/+", "c1") is True
    assert matcher.remove("$share/g/a/+", "c2") is True
    assert not matcher.match("a/b")
    assert matcher.remove("a/+", "c1") is False


def test_removing_nothing_keeps_the_cache() -> None:
    matcher = TopicMatcher()
    matcher.add("a", "c1", None)
    matcher.match("a")
    matcher.remove("b", "c1")
    matcher.remove_key("nobody")
    matcher.match("a")
    assert matcher.hits == 1


def test_remove_key_drops_plain_and_shared_subscriptions() -> None:
    matcher = TopicMatcher()
    matcher.add("a", "c1", None)
    matcher.add("$share/g/b/#", "c1", None)
    matcher.add("a", "c2", None)
    matcher.match("a")
    assert sorted(matcher.remove_key("c1")) == ["$share/g/b/#", "a"]
    assert matcher.match("a").subscribers == (("c2", None),)
    assert not matcher.match("b/x")


def test_cache_size_is_bounded() -> None:
    matcher = TopicMatcher(cache_size=100)
    matcher.add("#", "c1", None)
    for number in range(1000):
        assert matcher.match(f"device/{number}").subscribers == (("c1", None),)
        assert matcher.cache_entries <= 100
    assert matcher.misses == 1000


def test_pick_rotates_over_a_cached_shared_group() -> None:
    """The cached result is reused per message while pick still spreads messages."""
    matcher = TopicMatcher()
    matcher.add("$share/g/t", "c1", None)
    matcher.add("$share/g/t", "c2", None)
    picks = []
    for _ in range(4):
        [(group, filter, members)] = matcher.match("t").shared
        picks.append(matcher.pick(group, filter, members))
    assert [key for key, _ in picks] == ["c1", "c2", "c1", "c2"]
    assert matcher.hits == 3
