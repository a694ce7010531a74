"""rule_covers: MQTT matching for topics, containment for subscription filters."""

from __future__ import annotations

import pytest

from kushi.hooks.topic_rules import rule_covers, rules_overlap


@pytest.mark.parametrize("rule, target, expected", [
    # topic names: plain MQTT matching
    ("a/b", "a/b", True),
    ("a/b", "a/b/c", False),
    ("a/b/c", "a/b", False),
    ("a/+", "a/b", True),
    ("a/+", "a/", True),
    ("a/+", "a/b/c", False),
    ("a/#", "a", True),
    ("a/#", "a/b/c", True),
    ("#", "anything/at/all", True),
    ("#", "$SYS/broker/uptime", False),
    ("+/broker/uptime", "$SYS/broker/uptime", False),
    ("$SYS/#", "$SYS/broker/uptime", True),
    # subscription filters: covered only if every matching topic is matched
    ("a/#", "a/+/c", True),
    ("a/#", "a/#", True),
    ("a/+", "a/+", True),
    ("a/+", "a/#", False),
    ("a/b", "a/+", False),
    ("a/+/c", "a/#", False),
    ("#", "#", True),
    ("a/+/#", "a/#", False),
    ("+/#", "+/#", True),
    ("#", "+/x", True),
    ("#", "$SYS/#", False),
    ("a/#", "#", False),
    ("+", "#", False),
    # shared subscriptions are judged on their filter
    ("a/#", "$share/group/a/b", True),
    ("b/#", "$share/group/a/b", False),
])
def test_rule_covers(rule: str, target: str, expected: bool) -> None:
    assert rule_covers(rule, target) is expected


@pytest.mark.parametrize("rule, target, expected", [
    ("a/b", "a/b", True),
    ("a/b", "a/c", False),
    ("a/#", "a", True),
    ("a", "a/#", True),
    ("a", "a/+", False),
    ("secret/#", "#", True),
    ("#", "secret/x", True),
    ("a/+/c", "a/b/+", True),
    ("a/+/c", "a/b/d", False),
    ("a/+", "a/b/c", False),
    ("+/+", "a/#", True),
    ("$SYS/#", "#", False),
    ("#", "$SYS/x", False),
    ("+/x", "$SYS/+", False),
    ("$SYS/+", "$SYS/#", True),
    ("secret/#", "$share/g/+/x", True),
])
def test_rules_overlap(rule: str, target: str, expected: bool) -> None:
    assert rules_overlap(rule, target) is expected
    assert rules_overlap(target.removeprefix("$share/g/"), rule) is expected, "overlap is symmetric"
