"""Topic names, topic filters, shared subscriptions and matching (MQTT section 4.7, 4.8.2).

A topic name is what a PUBLISH is sent to ("sport/tennis/player1"); a topic
filter is what a SUBSCRIBE asks for and may hold wildcards: "+" for exactly one
level, "#" for any number of levels at the end ("sport/#" also matches "sport").
Topics starting with "$" are not matched by a filter starting with a wildcard
([MQTT-4.7.2-1]), so "#" does not see "$SYS/...".

A shared subscription is "$share/{ShareName}/{filter}" (4.8.2): messages
matching the filter go to one member of the group named ShareName.

The validators raise ``ProtocolError`` with reason code 0x90 (Topic Name
invalid) or 0x8F (Topic Filter invalid) for wildcard and shape errors, which a
broker may put in a SUBACK or a DISCONNECT, and ``MalformedPacket`` for what
breaks the string rules (U+0000, more than 65,535 bytes of UTF-8).
"""

from __future__ import annotations

from kushi.errors import MalformedPacket, ProtocolError

from .reason_codes import ReasonCode

__all__ = [
    "validate_topic_name",
    "validate_topic_filter",
    "parse_shared",
    "topic_matches",
    "SHARED_PREFIX",
]

SHARED_PREFIX = "$share/"
_MAX_BYTES = 65535


def _check_string(text: str) -> None:
    """The string rules every topic name and filter obeys.

    No U+0000 ([MQTT-4.7.3-2]), no surrogates ([MQTT-1.5.4-1]; only a str made
    in Python can hold one), at most 65,535 bytes of UTF-8 ([MQTT-4.7.3-3]).
    """
    if "\x00" in text:
        raise MalformedPacket("U+0000 in a topic [MQTT-4.7.3-2]")
    if text.isascii():
        size = len(text)
    else:
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError:
            raise MalformedPacket("surrogate in a topic [MQTT-1.5.4-1]") from None
    if size > _MAX_BYTES:
        raise MalformedPacket("topic longer than 65535 bytes [MQTT-4.7.3-3]")


def validate_topic_name(topic: str) -> None:
    """Raise unless ``topic`` is a valid topic name: not empty, no wildcards ([MQTT-4.7.0-1])."""
    _check_string(topic)
    if not topic:
        raise ProtocolError("empty topic name [MQTT-4.7.3-1]", reason_code=ReasonCode.TOPIC_NAME_INVALID)
    if "+" in topic or "#" in topic:
        raise ProtocolError(
            f"wildcard in topic name {topic!r} [MQTT-4.7.0-1]", reason_code=ReasonCode.TOPIC_NAME_INVALID
        )


def _invalid_filter(message: str) -> ProtocolError:
    return ProtocolError(message, reason_code=ReasonCode.TOPIC_FILTER_INVALID)


def validate_topic_filter(topic_filter: str) -> None:
    """Raise unless ``topic_filter`` is a valid (possibly shared) topic filter.

    "#" only as the whole last level ([MQTT-4.7.1-1]), "+" only as a whole level
    ([MQTT-4.7.1-2]), at least one character ([MQTT-4.7.3-1]); a shared filter
    needs a ShareName without "/", "+", "#" and a non-empty filter after it
    ([MQTT-4.8.2-1], [MQTT-4.8.2-2]).
    """
    _check_string(topic_filter)
    _, topic_filter = parse_shared(topic_filter)
    if not topic_filter:
        raise _invalid_filter("empty topic filter [MQTT-4.7.3-1]")
    if "+" not in topic_filter and "#" not in topic_filter:
        return
    levels = topic_filter.split("/")
    last = len(levels) - 1
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != last):
            raise _invalid_filter(f"'#' must be the whole last level in {topic_filter!r} [MQTT-4.7.1-1]")
        if "+" in level and level != "+":
            raise _invalid_filter(f"'+' must be a whole level in {topic_filter!r} [MQTT-4.7.1-2]")


def parse_shared(topic_filter: str) -> tuple[str | None, str]:
    """Split "$share/group/a/b" into ("group", "a/b"); any other filter gives (None, filter).

    Raises ProtocolError (0x8F) for a filter starting with "$share/" that is not
    a well-formed shared subscription ([MQTT-4.8.2-1], [MQTT-4.8.2-2]).
    """
    if not topic_filter.startswith(SHARED_PREFIX):
        return None, topic_filter
    group, slash, inner = topic_filter[len(SHARED_PREFIX) :].partition("/")
    if not group or not slash:
        raise _invalid_filter(f"shared subscription {topic_filter!r} needs a share name and a filter")
    if "+" in group or "#" in group:
        raise _invalid_filter(f"share name {group!r} contains a wildcard [MQTT-4.8.2-2]")
    if not inner:
        raise _invalid_filter(f"shared subscription {topic_filter!r} has an empty topic filter")
    return group, inner


def topic_matches(topic_filter: str, topic: str) -> bool:
    """Whether the (non-shared) ``topic_filter`` matches the topic name ``topic`` (4.7).

    Matching is exact, character for character ([MQTT-4.7.3-4]); a filter starting
    with a wildcard does not match a topic starting with "$" ([MQTT-4.7.2-1]).
    """
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    if "+" not in topic_filter and "#" not in topic_filter:
        return topic_filter == topic
    filter_levels = topic_filter.split("/")
    topic_levels = topic.split("/")
    for index, level in enumerate(filter_levels):
        if level == "#":
            return True
        if index >= len(topic_levels):
            return False
        if level != "+" and level != topic_levels[index]:
            return False
    return len(filter_levels) == len(topic_levels)
