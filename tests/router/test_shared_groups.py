"""SharedSubscriptions: $share/{group}/{filter} groups, one member per message (MQTT 5 section 4.8.2)."""

from __future__ import annotations

from collections import Counter

from kushi.router.shared import SharedSubscriptions


def test_groups_are_keyed_by_group_and_filter() -> None:
    """The same ShareName with different filters makes different groups ([MQTT-4.8.2-2])."""
    shared = SharedSubscriptions()
    shared.add("g", "a/+", "c1", "opts1")
    shared.add("g", "a/#", "c2", "opts2")
    shared.add("h", "a/+", "c3", "opts3")
    assert sorted(shared.match("a/b")) == [
        ("g", "a/#", [("c2", "opts2")]),
        ("g", "a/+", [("c1", "opts1")]),
        ("h", "a/+", [("c3", "opts3")]),
    ]
    assert shared.match("b") == []
    assert sorted(shared.groups()) == [("g", "a/#"), ("g", "a/+"), ("h", "a/+")]


def test_shared_filters_follow_the_matching_rules() -> None:
    """[MQTT-4.7.2-1] holds for the filter part of a shared subscription too."""
    shared = SharedSubscriptions()
    shared.add("g", "#", "c1", None)
    assert shared.match("$SYS/x") == []
    assert [group for group, _, _ in shared.match("x/y")] == ["g"]


def test_add_and_remove_members() -> None:
    shared = SharedSubscriptions()
    assert shared.add("g", "t", "c1", 1) is True
    assert shared.add("g", "t", "c1", 2) is False  # a repeated subscribe replaces the value
    assert shared.add("g", "t", "c2", 3) is True
    assert shared.members("g", "t") == {"c1": 2, "c2": 3}
    assert len(shared) == 2
    assert shared.remove("g", "t", "c1") is True
    assert shared.remove("g", "t", "c1") is False
    assert shared.remove("nope", "t", "c2") is False
    assert shared.match("t") == [("g", "t", [("c2", 3)])]


def test_group_disappears_with_its_last_member() -> None:
    shared = SharedSubscriptions()
    shared.add("g", "a/b", "c1", None)
    shared.remove("g", "a/b", "c1")
    assert shared.match("a/b") == []
    assert shared.groups() == []
    assert shared.members("g", "a/b") == {}
    assert shared._trie._root.children == {}  # the trie pruned the filter's nodes


def test_remove_key_leaves_every_group_of_a_session() -> None:
    shared = SharedSubscriptions()
    shared.add("g", "a", "c1", None)
    shared.add("h", "b/#", "c1", None)
    shared.add("h", "b/#", "c2", None)
    assert sorted(shared.remove_key("c1")) == [("g", "a"), ("h", "b/#")]
    assert shared.groups_of("c1") == frozenset()
    assert shared.groups() == [("h", "b/#")]
    assert len(shared) == 1


def test_pick_is_round_robin_so_load_spreads_evenly() -> None:
    """Each message goes to one member; consecutive messages rotate over the members."""
    shared = SharedSubscriptions()
    for key in ("c1", "c2", "c3"):
        shared.add("g", "jobs/+", key, None)
    [(group, filter, members)] = shared.match("jobs/1")
    picks = [shared.pick(group, filter, members)[0] for _ in range(9)]  # type: ignore[index]
    assert picks[:3] == ["c1", "c2", "c3"]
    assert Counter(picks) == {"c1": 3, "c2": 3, "c3": 3}
    assert all(a != b for a, b in zip(picks, picks[1:]))


def test_round_robin_state_is_per_group() -> None:
    shared = SharedSubscriptions()
    for key in ("c1", "c2"):
        shared.add("g", "t", key, None)
        shared.add("h", "t", key, None)
    groups = {group: members for group, _, members in shared.match("t")}
    assert shared.pick("g", "t", groups["g"]) == ("c1", None)
    assert shared.pick("h", "t", groups["h"]) == ("c1", None)  # h did not advance with g
    assert shared.pick("g", "t", groups["g"]) == ("c2", None)


def test_pick_skips_unavailable_members_and_stays_fair_among_the_others() -> None:
    shared = SharedSubscriptions()
    for key in ("c1", "c2", "c3", "c4"):
        shared.add("g", "t", key, None)
    [(_, _, members)] = shared.match("t")
    offline = {"c2", "c4"}
    picks = [shared.pick("g", "t", members, lambda key: key not in offline)[0]  # type: ignore[index]
             for _ in range(6)]
    assert picks == ["c1", "c3", "c1", "c3", "c1", "c3"]


def test_pick_returns_none_when_nobody_is_available() -> None:
    shared = SharedSubscriptions()
    shared.add("g", "t", "c1", None)
    [(_, _, members)] = shared.match("t")
    assert shared.pick("g", "t", members, lambda key: False) is None
    assert shared.pick("g", "t", []) is None
