"""Topic aliases (v5), inbound and outbound.

Checklist: [MQTT-3.3.2-7..12], [MQTT-3.1.2-26/27], [MQTT-3.2.2-17/18]. Alias 0
and an alias above our maximum are bad input (test_mqtt_bad_input.py).
"""

from __future__ import annotations

from kushi.protocol.packets import Disconnect, Publish, Subscribe, Subscription
from kushi.protocol.properties import Properties

# A client may see "no mapping for this alias" called a Protocol Error (3.3.2.3.4) or
# Topic Alias invalid: both codes are accepted.
UNKNOWN_ALIAS_CODES = {0x82, 0x94}


def subscriber_with_alias_maximum(raw, broker, client_id: str, maximum: int | None):
    client = raw(broker, 5)
    client.connect_ok(client_id, properties=Properties(topic_alias_maximum=maximum))
    client.send(Subscribe(1, (Subscription("ta/#", 0),)))
    client.recv_packet()
    return client


def test_inbound_alias_maps_topic(broker, raw, paho):
    """[MQTT-3.3.2-12] an alias set with a topic is then usable with an empty topic; it can be
    remapped; every alias up to the maximum announced is accepted."""
    subscriber = paho.connected(broker, "sub", 5)
    assert subscriber.subscribe("ta/#", 0) == [0]
    client = raw(broker, 5)
    maximum = client.connect_ok("aliaser").properties.topic_alias_maximum
    client.send(Publish("ta/one", b"1", properties=Properties(topic_alias=1)))
    client.send(Publish("", b"2", properties=Properties(topic_alias=1)))
    client.send(Publish("ta/two", b"3", properties=Properties(topic_alias=1)))
    client.send(Publish("", b"4", properties=Properties(topic_alias=1)))
    client.send(Publish("ta/max", b"5", properties=Properties(topic_alias=maximum)))
    client.send(Publish("", b"6", properties=Properties(topic_alias=maximum)))
    got = [(m.topic, m.payload) for m in (subscriber.wait_for_message() for _ in range(6))]
    assert got == [("ta/one", b"1"), ("ta/one", b"2"), ("ta/two", b"3"), ("ta/two", b"4"),
                   ("ta/max", b"5"), ("ta/max", b"6")]


def test_unknown_alias_with_empty_topic_is_error(broker, raw):
    """[MQTT-3.3.2-7] aliases live for one network connection, not for the session: the same
    client, resuming its session on a new connection, cannot use the alias it set before, and
    using it with an empty topic ends the connection."""
    keep = Properties(session_expiry_interval=60)
    first = raw(broker, 5)
    first.connect_ok("aliaser", clean_start=False, properties=keep)
    first.send(Publish("ta/x", b"1", qos=1, packet_id=1, properties=Properties(topic_alias=1)))
    first.recv_packet()  # PUBACK: the alias is set
    first.send(Disconnect())
    assert first.expect_closed()
    second = raw(broker, 5)
    assert second.connect_ok("aliaser", clean_start=False, properties=keep).session_present is True
    second.send(Publish("", b"2", properties=Properties(topic_alias=1)))
    second.expect_disconnect(UNKNOWN_ALIAS_CODES)


def test_aliases_refused_when_maximum_is_zero(make_broker, raw):
    """[MQTT-3.2.2-18] Topic Alias Maximum 0 (none announced): any alias gets DISCONNECT 0x94."""
    broker = make_broker(topic_alias_maximum=0)
    client = raw(broker, 5)
    assert client.connect_ok("noalias").properties.topic_alias_maximum in (None, 0)
    client.send(Publish("ta/x", b"1", properties=Properties(topic_alias=1)))
    client.expect_disconnect(0x94)


def test_no_outbound_alias_without_client_maximum(broker, raw, paho):
    """[MQTT-3.1.2-27] a client that declared no Topic Alias Maximum gets no aliases."""
    client = subscriber_with_alias_maximum(raw, broker, "plain", None)
    publisher = paho.connected(broker, "pub", 5)
    for _ in range(3):
        publisher.publish("ta/same", b"x", qos=0)
    for _ in range(3):
        packet = client.recv_packet()
        assert packet.topic == "ta/same" and packet.properties.topic_alias is None


def test_outbound_aliases_within_client_maximum(broker, raw, paho):
    """[MQTT-3.1.2-26] [MQTT-3.3.2-8] [MQTT-3.3.2-11] outbound aliases are never 0 nor above the
    client's maximum, and every message resolves to the topic it was published on."""
    client = subscriber_with_alias_maximum(raw, broker, "aliased", 2)
    publisher = paho.connected(broker, "pub", 5)
    topics = ["ta/a", "ta/b", "ta/c", "ta/a", "ta/b", "ta/c", "ta/a", "ta/a"]
    for topic in topics:
        publisher.publish(topic, topic.encode(), qos=0)
    mapping: dict[int, str] = {}
    resolved = []
    for _ in topics:
        packet = client.recv_packet()
        alias = packet.properties.topic_alias
        if alias is not None:
            assert 1 <= alias <= 2, f"alias {alias} outside 1..2"
            if packet.topic:
                mapping[alias] = packet.topic
            assert alias in mapping, f"empty topic with alias {alias} never mapped"
            resolved.append(mapping[alias])
        else:
            assert packet.topic, "empty topic without an alias"
            resolved.append(packet.topic)
        assert resolved[-1].encode() == packet.payload
    assert resolved == topics
