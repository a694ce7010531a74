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

A shared subscription is checked on its filter: ``$share/group/a/b`` as ``a/b``.
"""

from __future__ import annotations

from ..protocol.topics import parse_shared, topic_matches


def rule_covers(rule: str, target: str) -> bool:
    """True if every topic that ``target`` (a topic name or a subscription filter) names matches ``rule``."""
    _, target = parse_shared(target)
    # Read as a topic name, the target's "+" and "#" levels are plain names that
    # only a rule's "+" or "#" matches, which is containment level by level;
    # except that a trailing "#" also means every deeper level, which only a
    # "#" in the rule at that level or before can cover.
    if not topic_matches(rule, target):
        return False
    target_levels = target.split("/")
    return target_levels[-1] != "#" or "#" in rule.split("/")[: len(target_levels)]
