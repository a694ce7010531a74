"""How an access rule's topic filter is compared with a topic or a subscription.

An ACL check is asked about a topic name (a publish, a delivery) or, for a
SUBSCRIBE, about a topic filter. ``rule_covers(rule, target)`` answers both:

* for a topic name it is MQTT topic matching (``+`` one level, ``#`` the rest
  and the parent level, and a rule starting with a wildcard does not match a
  topic starting with ``$``, as subscriptions do not);
* for a subscription filter it is True only if *every* topic the
  subscription can match is matched by the rule. ``a/#`` covers ``a/+/c``;
  ``a/+`` does not cover ``a/#``; ``a/b`` does not cover ``a/+``. So a grant
  never lets a subscription reach wider than the rule, and a subscription
  that only partly overlaps a rule is not decided by it (the per-message
  delivery check then decides each message).

A shared subscription is checked on its filter: ``$share/group/a/b`` is
compared as ``a/b``.
"""

from __future__ import annotations

SHARED_PREFIX = "$share/"


def strip_shared(filter_or_topic: str) -> str:
    """``$share/group/a/b`` -> ``a/b``; anything else unchanged."""
    if filter_or_topic.startswith(SHARED_PREFIX):
        parts = filter_or_topic.split("/", 2)
        return parts[2] if len(parts) == 3 else ""
    return filter_or_topic


def rule_covers(rule: str, target: str) -> bool:
    """True if every topic ``target`` (a topic name or a subscription filter) names matches ``rule``."""
    rule_levels = rule.split("/")
    target_levels = strip_shared(target).split("/")
    if target_levels[0].startswith("$") and rule_levels[0] in ("+", "#"):
        return False
    for index, level in enumerate(rule_levels):
        if level == "#":
            return True
        if index >= len(target_levels):
            return False
        target_level = target_levels[index]
        if level == "+":
            if target_level == "#":
                return False
        elif level != target_level:
            return False
    return len(rule_levels) == len(target_levels)
