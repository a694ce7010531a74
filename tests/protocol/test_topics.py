"""kushi.protocol.topics: topic names, topic filters, shared subscriptions, matching (4.7, 4.8.2)."""

from __future__ import annotations

import pytest

from kushi.errors import MalformedPacket, ProtocolError
from kushi.protocol.topics import parse_shared, topic_matches, validate_topic_filter, validate_topic_name


@pytest.mark.parametrize("topic", ["a", "a/b", "/", "a//b", "/a/", "$SYS/broker", "\ufeffa", "sport/tennis player1"])
def test_valid_topic_names(topic: str) -> None:
    validate_topic_name(topic)


@pytest.mark.parametrize("topic", ["a/+", "#", "a/#", "a+b", "x#"])
def test_topic_name_with_wildcards_is_topic_name_invalid(topic: str) -> None:
    """[MQTT-4.7.0-1] reason 0x90"""
    with pytest.raises(ProtocolError) as caught:
        validate_topic_name(topic)
    assert caught.value.reason_code == 0x90


def test_empty_topic_name_is_refused() -> None:
    """[MQTT-4.7.3-1]"""
    with pytest.raises(ProtocolError):
        validate_topic_name("")


def test_u0000_in_a_topic_is_malformed() -> None:
    """[MQTT-4.7.3-2]"""
    with pytest.raises(MalformedPacket):
        validate_topic_name("a\x00b")
    with pytest.raises(MalformedPacket):
        validate_topic_filter("a/\x00")


def test_a_surrogate_in_a_topic_made_in_python_is_malformed() -> None:
    """[MQTT-1.5.4-1] (the decoder never makes one; an embedding program might)."""
    with pytest.raises(MalformedPacket):
        validate_topic_name("a/\ud800")
    with pytest.raises(MalformedPacket):
        validate_topic_filter("a/\udfff/#")


def test_topics_are_limited_to_65535_bytes_of_utf8() -> None:
    """[MQTT-4.7.3-3] counted in UTF-8 bytes, not characters."""
    validate_topic_name("a" * 65535)
    validate_topic_filter("a" * 65535)
    with pytest.raises(MalformedPacket):
        validate_topic_name("a" * 65536)
    with pytest.raises(MalformedPacket):
        validate_topic_filter("é" * 32768)  # 32,768 characters, 65,536 bytes


@pytest.mark.parametrize(
    "topic_filter",
    ["#", "+", "a/#", "a/+/b", "+/+", "/+", "+/", "a/+/#", "$SYS/#", "sport/tennis/player1", "$share/g/a/#",
     "$share/g/#", "$share", "$share/g/+"],
)
def test_valid_topic_filters(topic_filter: str) -> None:
    validate_topic_filter(topic_filter)


@pytest.mark.parametrize(
    ("topic_filter", "statement"),
    [
        ("a/#/b", "[MQTT-4.7.1-1] '#' not last"),
        ("a#", "[MQTT-4.7.1-1] '#' not alone in its level"),
        ("#/", "[MQTT-4.7.1-1] '#' followed by a level"),
        ("a/b+", "[MQTT-4.7.1-2] '+' not alone in its level"),
        ("+a", "[MQTT-4.7.1-2]"),
        ("", "[MQTT-4.7.3-1] empty"),
        ("$share/g", "[MQTT-4.8.2-2] no filter after the share name"),
        ("$share/g/", "shared with an empty filter"),
        ("$share//a", "[MQTT-4.8.2-1] empty share name"),
        ("$share/g+/a", "[MQTT-4.8.2-2] '+' in the share name"),
        ("$share/g#/a", "[MQTT-4.8.2-2] '#' in the share name"),
        ("$share/g/a/#/b", "the filter after the share name obeys 4.7.1"),
    ],
)
def test_invalid_topic_filters_are_topic_filter_invalid(topic_filter: str, statement: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        validate_topic_filter(topic_filter)
    assert caught.value.reason_code == 0x8F, statement


def test_parse_shared() -> None:
    assert parse_shared("$share/group/a/b") == ("group", "a/b")
    assert parse_shared("$share/g/#") == ("g", "#")
    assert parse_shared("a/b") == (None, "a/b")
    assert parse_shared("$share") == (None, "$share")
    assert parse_shared("$SHARE/g/a") == (None, "$SHARE/g/a")
    with pytest.raises(ProtocolError):
        parse_shared("$share/g")


MATCHES = [
    # the examples of section 4.7.1
    ("sport/tennis/player1/#", "sport/tennis/player1", True),
    ("sport/tennis/player1/#", "sport/tennis/player1/ranking", True),
    ("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", True),
    ("sport/#", "sport", True),
    ("#", "sport/tennis", True),
    ("sport/tennis/+", "sport/tennis/player1", True),
    ("sport/tennis/+", "sport/tennis/player1/ranking", False),
    ("sport/+", "sport", False),
    ("sport/+", "sport/", True),
    ("+/+", "/finance", True),
    ("/+", "/finance", True),
    ("+", "/finance", False),
    ("+", "", True),
    ("a/b", "a/b", True),
    ("a/b", "a/B", False),
    ("a/b", "a/b/", False),
    ("a/+/c", "a//c", True),
    ("a/+/c", "a/b/d", False),
    ("a/b/#", "a", False),
    # [MQTT-4.7.2-1] $-topics and leading wildcards
    ("#", "$SYS/broker", False),
    ("+/broker", "$SYS/broker", False),
    ("$SYS/#", "$SYS/broker", True),
    ("$SYS/+", "$SYS/broker", True),
    ("a/#", "a/$x", True),
]


@pytest.mark.parametrize(("topic_filter", "topic", "expected"), MATCHES)
def test_topic_matches(topic_filter: str, topic: str, expected: bool) -> None:
    """Section 4.7: exact, case-sensitive ([MQTT-4.7.3-4]); $-topics need an explicit first level."""
    assert topic_matches(topic_filter, topic) is expected
