"""How an access rule's topic filter is compared with a topic or a subscription.

An ACL check is asked about a topic name (a publish, a delivery) or, for a
SUBSCRIBE, about a topic filter. ``rule_covers(rule, target)`` answers both:

* for a topic name it is MQTT topic matching (``kushi.protocol.topics.topic_matches``:
  ``+`` one level, ``#`` the rest and the parent level, and a rule starting
  with a wildcard does not match a topic starting with ``$``);
* for a subscription filter it is True only if *every* topic the
  subscription can match is matched by the rule. ``a/#`` covers ``a/+/c``;
  ``a/+`` does not cover ``a/#``; ``a/b`` does not cover ``a/+``. So a grant
  never lets a subscription reach wider than the rule, and a subscription
  that only partly overlaps a rule is not decided by it (the per-message
  delivery check then decides each message).

``rules_overlap(rule, target)`` is the weaker relation: True if at least one
topic matches both. For a topic name it is the same as matching; for a
subscription it tells that *some* of the messages the subscription can bring
fall under the rule (used so that a deny rule refuses any subscription that
could bring a denied message, without relying on a check per delivery).

A shared subscription is checked on its filter: ``$share/group/a/b`` as ``a/b``.
"""

from __future__ import annotations

from ..protocol.topics import parse_shared, topic_matches


def _is_topic_name(target: str) -> bool:
    """A publish or delivery topic (the hot path), as opposed to a subscription filter."""
    return "+" not in target and "#" not in target and not target.startswith("$share/")


def rule_covers(rule: str, target: str) -> bool:
    """True if every topic that ``target`` (a topic name or a subscription filter) names matches ``rule``."""
    if _is_topic_name(target):
        return topic_matches(rule, target)
    _, target = parse_shared(target)
    # Read as a topic name, the target's "+" and "#" levels are plain names that
    # only a rule's "+" or "#" matches, which is containment level by level;
    # except that a trailing "#" also means every deeper level, which only a
    # "#" in the rule at that level or before can cover.
    if not topic_matches(rule, target):
        return False
    target_levels = target.split("/")
    return target_levels[-1] != "#" or "#" in rule.split("/")[: len(target_levels)]


def rules_overlap(rule: str, target: str) -> bool:
    """True if some topic name matches both ``rule`` and ``target`` (a topic name or a filter)."""
    if _is_topic_name(target):
        return topic_matches(rule, target)
    _, target = parse_shared(target)
    rule_levels, target_levels = rule.split("/"), target.split("/")
    if _dollar_mismatch(rule_levels[0], target_levels[0]) or _dollar_mismatch(target_levels[0], rule_levels[0]):
        return False
    for index in range(max(len(rule_levels), len(target_levels))):
        mine = rule_levels[index] if index < len(rule_levels) else None
        theirs = target_levels[index] if index < len(target_levels) else None
        if mine == "#" or theirs == "#":
            return True
        if mine is None or theirs is None:
            return False
        if mine != theirs and "+" not in (mine, theirs):
            return False
    return True


def _dollar_mismatch(first_level: str, other_first_level: str) -> bool:
    """A topic starting with "$" is never matched by a filter starting with a wildcard."""
    return first_level.startswith("$") and other_first_level in ("+", "#")
