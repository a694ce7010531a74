"""RetainedStore: one retained message per topic, found by filter, with message expiry."""

from __future__ import annotations

import pytest

from kushi.protocol.packets import Publish
from kushi.protocol.properties import Properties
from kushi.router.retained import CLEARED, STORED, UNCHANGED, RetainedStore

NOW = 1000.0


def retained(topic: str, payload: bytes = b"x", expiry: int | None = None) -> Publish:
    return Publish(topic, payload, qos=1, retain=True,
                   properties=Properties(message_expiry_interval=expiry))


def topics(messages: list[Publish]) -> list[str]:
    return sorted(message.topic for message in messages)


def store_with(*topic_names: str) -> RetainedStore:
    store = RetainedStore()
    for topic in topic_names:
        store.set(topic, retained(topic), NOW)
    return store


def test_set_replaces_the_message_of_the_topic() -> None:
    """[MQTT-3.3.1-5] A retained PUBLISH replaces the topic's earlier retained message."""
    store = RetainedStore()
    assert store.set("a/b", retained("a/b", b"one"), NOW) == STORED
    assert store.set("a/b", retained("a/b", b"two"), NOW) == STORED
    assert [m.payload for m in store.match("a/b", NOW)] == [b"two"]
    assert len(store) == 1


def test_empty_payload_clears_and_is_never_stored() -> None:
    """[MQTT-3.3.1-6] [MQTT-3.3.1-7] An empty retained payload deletes the topic's message."""
    store = store_with("a/b", "a/c")
    assert store.set("a/b", retained("a/b", b""), NOW) == CLEARED
    assert store.set("a/b", retained("a/b", b""), NOW) == UNCHANGED
    assert store.get("a/b") is None
    assert topics(store.match("a/#", NOW)) == ["a/c"]
    assert len(store) == 1


def test_clearing_prunes_the_topic_tree() -> None:
    store = store_with("a/b/c", "a/b")
    store.set("a/b/c", retained("a/b/c", b""), NOW)
    assert store._tree.children["a"].children["b"].children == {}
    store.set("a/b", retained("a/b", b""), NOW)
    assert store._tree.children == {}


@pytest.mark.parametrize(
    ("filter", "expected"),
    [
        ("a/b", ["a/b"]),
        ("a/+", ["a/", "a/b", "a/c"]),
        ("a/#", ["a", "a/", "a/b", "a/b/c", "a/c"]),  # "a/#" includes "a"
        ("+/b", ["a/b"]),
        ("+/+/c", ["a/b/c"]),
        ("#", ["a", "a/", "a/b", "a/b/c", "a/c", "b"]),
        ("+", ["a", "b"]),
        ("$SYS/#", ["$SYS/uptime"]),
        ("$SYS/+", ["$SYS/uptime"]),
        ("+/uptime", []),  # [MQTT-4.7.2-1]
        ("nothing/+", []),
        ("a/b/c/d", []),
    ],
)
def test_match_by_filter(filter: str, expected: list[str]) -> None:
    """Retained messages are found with the 4.7 matching rules, $-topics excepted ([MQTT-4.7.2-1])."""
    store = store_with("a", "a/", "a/b", "a/c", "a/b/c", "b", "$SYS/uptime")
    assert topics(store.match(filter, NOW)) == expected


def test_stored_copy_owns_its_payload() -> None:
    """A payload that is a view into a reused read buffer is copied; the packet bytes are not kept."""
    buffer = bytearray(b"hello")
    message = Publish("t", memoryview(buffer), retain=True, raw=b"\x31\x08...")
    store = RetainedStore()
    store.set("t", message, NOW)
    buffer[:] = b"XXXXX"
    [found] = store.match("t", NOW)
    assert found.payload == b"hello"
    assert isinstance(found.payload, bytes)
    assert found.raw is None


def test_message_expires_after_its_interval() -> None:
    """MQTT 5 3.3.2.3.3: once the Message Expiry Interval has passed the message is gone."""
    store = RetainedStore()
    store.set("t/short", retained("t/short", expiry=10), NOW)
    store.set("t/long", retained("t/long", expiry=100), NOW)
    store.set("t/forever", retained("t/forever"), NOW)
    assert store.expire(NOW + 9.9) == []
    assert topics(store.match("t/#", NOW + 10)) == ["t/forever", "t/long"]  # expired, not yet removed
    assert store.expire(NOW + 10) == ["t/short"]
    assert len(store) == 2
    assert store.expire(NOW + 1e9) == ["t/long"]
    assert topics(store.match("t/#", NOW + 1e9)) == ["t/forever"]


def test_match_gives_the_remaining_expiry_interval() -> None:
    """[MQTT-3.3.2-6] The interval sent is the received one minus the time the message waited."""
    store = RetainedStore()
    store.set("t", retained("t", expiry=60), NOW)
    [message] = store.match("t", NOW + 20)
    assert message.properties.message_expiry_interval == 40
    [message] = store.match("t", NOW + 59.5)
    assert message.properties.message_expiry_interval == 1  # rounded up: a live message never says 0
    assert store.get("t").properties.message_expiry_interval == 60  # type: ignore[union-attr]


def test_replacing_a_message_restarts_its_expiry() -> None:
    store = RetainedStore()
    store.set("t", retained("t", b"old", expiry=10), NOW)
    store.set("t", retained("t", b"new", expiry=10), NOW + 5)
    assert store.expire(NOW + 10) == []  # the heap item of the old message is stale
    assert [m.payload for m in store.match("t", NOW + 10)] == [b"new"]
    assert store.expire(NOW + 15) == ["t"]


def test_expiry_bookkeeping_stays_bounded_when_one_topic_is_rewritten() -> None:
    store = RetainedStore()
    for second in range(10_000):
        store.set("t", retained("t", expiry=3600), NOW + second)
    assert len(store._expiry_heap) <= 2 * len(store) + 64


def test_order_keeps_the_last_writer() -> None:
    """A write ordered before the stored one is ignored, whatever order writes arrive in."""
    store = RetainedStore()
    assert store.set("t", retained("t", b"newer"), NOW, order=(5, 1)) == STORED
    assert store.set("t", retained("t", b"older"), NOW, order=(4, 2)) == UNCHANGED
    assert store.set("t", retained("t", b""), NOW, order=(3, 0)) == UNCHANGED  # an older clear too
    assert store.get("t").payload == b"newer"  # type: ignore[union-attr]
    assert store.set("t", retained("t", b"same time, higher"), NOW, order=(5, 2)) == STORED
    assert store.order_of("t") == (5, 2)
    assert store.set("t", retained("t", b""), NOW, order=(6, 0)) == CLEARED


def test_snapshot_carries_orders_and_remaining_intervals() -> None:
    store = RetainedStore()
    store.set("a", retained("a", expiry=30), NOW, order=(1, 0))
    store.set("b", retained("b", expiry=5), NOW, order=(2, 0))
    store.set("c", retained("c"), NOW)
    snapshot = {message.topic: (message.properties.message_expiry_interval, order)
                for message, order in store.snapshot(NOW + 10)}
    assert snapshot == {"a": (20, (1, 0)), "c": (None, None)}
