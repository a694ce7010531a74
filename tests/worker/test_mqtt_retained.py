"""Retained messages: set, replace, clear, sent on subscribe, Retain Handling 0/1/2.

Checklist: [MQTT-3.3.1-5..11], 3.1.1 [MQTT-3.3.1-6..10], [MQTT-3.1.2.7] (3.1.1).
"""

from __future__ import annotations

import pytest
from paho.mqtt.subscribeoptions import SubscribeOptions

VERSIONS = pytest.mark.parametrize("version", [4, 5], ids=["v311", "v5"])


@VERSIONS
def test_retained_message_sent_on_subscribe(broker, paho, version):
    """[MQTT-3.3.1-5] [MQTT-3.3.1-9] (3.1.1 [MQTT-3.3.1-6] [MQTT-3.3.1-8]) a new subscription gets
    the retained message of each matching topic, with RETAIN 1."""
    publisher = paho.connected(broker, "pub", version)
    publisher.publish("ret/a", b"A", qos=1, retain=True)
    publisher.publish("ret/b", b"B", qos=1, retain=True)
    publisher.publish("other/c", b"C", qos=1, retain=True)
    subscriber = paho.connected(broker, "sub", version)
    assert subscriber.subscribe("ret/+", 1) == [1]
    received = {(m.topic, m.payload, m.retain) for m in (subscriber.wait_for_message() for _ in range(2))}
    assert received == {("ret/a", b"A", True), ("ret/b", b"B", True)}


@VERSIONS
def test_retained_message_replaced(broker, paho, version):
    """[MQTT-3.3.1-5] a new retained message replaces the old one."""
    publisher = paho.connected(broker, "pub", version)
    publisher.publish("ret/t", b"old", qos=1, retain=True)
    publisher.publish("ret/t", b"new", qos=1, retain=True)
    subscriber = paho.connected(broker, "sub", version)
    assert subscriber.subscribe("ret/#", 1) == [1]
    subscriber.expect_message("ret/t", b"new")
    publisher.publish("ret/marker", b"m", qos=1)
    subscriber.expect_message("ret/marker", b"m")


@VERSIONS
def test_empty_retained_payload_clears(broker, paho, version):
    """[MQTT-3.3.1-6] [MQTT-3.3.1-7] (3.1.1 [MQTT-3.3.1-10] [MQTT-3.3.1-11]) an empty retained payload is delivered
    to current subscribers and removes the retained message; it is never stored."""
    publisher = paho.connected(broker, "pub", version)
    publisher.publish("clr/t", b"stored", qos=1, retain=True)
    publisher.publish("clr/keep", b"kept", qos=1, retain=True)
    current = paho.connected(broker, "current", version)
    assert current.subscribe("clr/t", 1) == [1]
    current.expect_message("clr/t", b"stored")
    publisher.publish("clr/t", b"", qos=1, retain=True)
    current.expect_message("clr/t", b"")
    later = paho.connected(broker, "later", version)
    assert later.subscribe("clr/#", 1) == [1]
    later.expect_message("clr/keep", b"kept")
    later.expect_no_message()
    assert [p.topic for p in broker.call(broker.server.retained("clr/#"))] == ["clr/keep"]


@VERSIONS
def test_non_retained_publish_leaves_retained_untouched(broker, paho, version):
    """[MQTT-3.3.1-8] RETAIN 0: not stored, the retained message stays."""
    publisher = paho.connected(broker, "pub", version)
    publisher.publish("nr/t", b"retained", qos=1, retain=True)
    publisher.publish("nr/t", b"transient", qos=1, retain=False)
    subscriber = paho.connected(broker, "sub", version)
    assert subscriber.subscribe("nr/t", 1) == [1]
    subscriber.expect_message("nr/t", b"retained")
    publisher.publish("nr/t", b"marker", qos=1)
    subscriber.expect_message("nr/t", b"marker")


def test_retained_qos0_replaces_previous_311(broker, paho):
    """3.1.1 [MQTT-3.3.1-7] a retained QoS 0 PUBLISH discards the previous retained message (the
    server may keep the new one or drop it later, but never falls back to the old one)."""
    publisher = paho.connected(broker, "pub", 4)
    publisher.publish("r0/t", b"old", qos=1, retain=True)
    publisher.publish("r0/t", b"new", qos=0, retain=True)
    publisher.publish("r0/marker", b"sync", qos=1)  # the QoS 0 publish was handled before this
    subscriber = paho.connected(broker, "sub", 4)
    assert subscriber.subscribe("r0/t", 0) == [0]
    assert subscriber.subscribe("r0/end", 0) == [0]
    publisher.publish("r0/end", b"end", qos=1)
    payloads = []
    while (message := subscriber.wait_for_message()).topic != "r0/end":
        payloads.append(message.payload)
    assert b"old" not in payloads, payloads


def test_retained_delivered_at_granted_qos(broker, paho):
    """[MQTT-3.8.4-8] a retained QoS 2 message goes to a QoS 1 subscription at QoS 1."""
    paho.connected(broker, "pub", 5).publish("rq/t", b"x", qos=2, retain=True)
    subscriber = paho.connected(broker, "sub", 5)
    assert subscriber.subscribe("rq/t", 1) == [1]
    assert subscriber.expect_message("rq/t", b"x").qos == 1


@VERSIONS
def test_retained_messages_outlive_sessions(broker, paho, version):
    """3.1.1 [MQTT-3.1.2.7] retained messages are not session state: they survive the publisher."""
    publisher = paho.connected(broker, "pub", version)
    publisher.publish("out/t", b"still here", qos=1, retain=True)
    publisher.disconnect()
    subscriber = paho.connected(broker, "sub", version)
    assert subscriber.subscribe("out/t", 0) == [0]
    subscriber.expect_message("out/t", b"still here")


@pytest.mark.parametrize("handling", [0, 1, 2])
def test_retain_handling(broker, paho, handling):
    """[MQTT-3.3.1-9] [MQTT-3.3.1-10] [MQTT-3.3.1-11] Retain Handling 0: retained sent on every
    subscribe; 1: only when the subscription is new; 2: never. A marker message published after
    each SUBSCRIBE shows what came before it."""
    publisher = paho.connected(broker, "pub", 5)
    publisher.publish("rh/t", b"retained", qos=1, retain=True)
    subscriber = paho.connected(broker, "sub", 5)
    assert subscriber.subscribe("rh/marker", 1) == [1]
    options = SubscribeOptions(qos=1, retainHandling=handling)
    expected_per_subscribe = {0: [True, True], 1: [True, False], 2: [False, False]}[handling]
    for round_, expect_retained in enumerate(expected_per_subscribe):
        assert subscriber.subscribe("rh/t", options=options) == [1]
        marker = f"marker {round_}".encode()
        publisher.publish("rh/marker", marker, qos=1)
        if expect_retained:
            assert subscriber.expect_message("rh/t", b"retained").retain is True
        subscriber.expect_message("rh/marker", marker)


def test_retained_via_server_introspection(broker, paho):
    """kushi.Server.retained(filter) lists the stored retained messages."""
    paho.connected(broker, "pub", 5).publish("intro/t", b"x", qos=1, retain=True)
    stored = broker.call(broker.server.retained("intro/#"))
    assert [(p.topic, bytes(p.payload)) for p in stored] == [("intro/t", b"x")]
