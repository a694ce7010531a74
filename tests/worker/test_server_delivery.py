"""kushi.worker.delivery's wire forms, no sockets: the shared encodings must equal what the codec
writes for each subscriber on its own (the hot path patches packet ids into shared bytes)."""

from __future__ import annotations

import pytest

from kushi.protocol.codec import encode
from kushi.protocol.packets import Publish
from kushi.protocol.properties import Properties
from kushi.worker.delivery import WireForms, fold_subscriptions
from kushi.worker.session import SubscriptionEntry

MESSAGES = [
    Publish("a/b", b"x", qos=1),
    Publish("t" * 300, b"p" * 20_000, qos=2, retain=True),  # multi-byte Remaining Length
    Publish("props", b"y", qos=1, properties=Properties(
        content_type="text/plain", user_properties=(("k", "v"), ("k", "w")), message_expiry_interval=9)),
]


@pytest.mark.parametrize("message", MESSAGES, ids=["short", "long", "properties"])
@pytest.mark.parametrize("version", [4, 5])
def test_patched_packet_ids_equal_a_fresh_encoding(message, version):
    """The first copy is encoded, later ones patched: each equals encode() with that id."""
    forms = WireForms(message, version)
    packet = forms.publish_for(message.qos, message.retain, (7,) if version == 5 else ())
    for packet_id in (1, 300, 65535, 2):
        expected = encode(Publish(packet.topic, packet.payload, packet.qos, packet.retain, False,
                                  packet_id, packet.properties), version)
        assert forms.with_packet_id(packet, version, packet_id) == expected


@pytest.mark.parametrize("version", [4, 5])
def test_qos0_forwards_the_received_bytes_only_when_nothing_changes(version):
    """Same version, same retain flag, no identifiers, no alias: the received bytes themselves."""
    received = encode(Publish("r/t", b"payload"), version)
    message = Publish("r/t", b"payload", raw=received)
    forms = WireForms(message, version)
    assert forms.qos0_bytes(version, False, ()) is received
    other = 5 if version == 4 else 4
    assert forms.qos0_bytes(other, False, ()) == encode(Publish("r/t", b"payload"), other)
    assert forms.qos0_bytes(version, True, ()) == encode(Publish("r/t", b"payload", retain=True), version)
    if version == 5:
        with_id = forms.qos0_bytes(5, False, (3,))
        assert with_id == encode(Publish("r/t", b"payload", properties=Properties(
            subscription_identifiers=(3,))), 5)
        aliased = forms.qos0_bytes(5, False, (), (1, True))
        assert aliased == encode(Publish("r/t", b"payload", properties=Properties(topic_alias=1)), 5)


def test_overlapping_subscriptions_fold_into_one_delivery():
    """[MQTT-3.3.4-2] highest QoS; [MQTT-3.3.4-4] every identifier; No Local leaves out the
    publisher's own subscriptions [MQTT-3.8.3-3]."""
    subscribers = [
        ("c", SubscriptionEntry("c", "a/+", 0, identifier=1)),
        ("c", SubscriptionEntry("c", "a/#", 2, retain_as_published=True, identifier=2)),
        ("d", SubscriptionEntry("d", "a/#", 1, no_local=True)),
    ]
    folds = {fold[0]: fold for fold in fold_subscriptions(subscribers, None)}
    assert folds["c"][1:4] == (2, True, (1, 2))
    assert folds["d"][1] == 1 and folds["d"][5]
    assert [fold[0] for fold in fold_subscriptions(subscribers, "d")] == ["c"]


@pytest.mark.parametrize("version", [4, 5])
@pytest.mark.parametrize("qos", [1, 2])
def test_qos12_reuses_the_received_bytes_with_our_packet_id(version, qos):
    """A QoS 1/2 message forwarded unchanged: the received bytes with our packet id, DUP cleared
    [MQTT-3.3.1-3] and the retain flag as chosen for the subscriber [MQTT-3.3.1-12/13]."""
    props = Properties(user_properties=(("a", "b"),)) if version == 5 else Properties()
    received = encode(Publish("in/t" * 40, b"z" * 200, qos, True, True, 4242, props), version)
    message = Publish("in/t" * 40, b"z" * 200, qos, True, True, 4242, props, raw=received)
    forms = WireForms(message, version)
    for retain in (False, True):
        packet = forms.publish_for(qos, retain, ())
        for packet_id in (9, 513):
            assert forms.with_packet_id(packet, version, packet_id) == encode(
                Publish(packet.topic, packet.payload, qos, retain, False, packet_id, props), version)


def test_deliver_remote_forwards_the_bus_bytes_to_subscribers_of_their_version(make_broker, raw):
    """Broker.deliver_remote(message, source_version): a subscriber of that version gets
    message.raw as it is (the cluster hands over what another worker received)."""
    from kushi.protocol.packets import Subscribe, Subscription

    broker = make_broker()
    client = raw(broker, 5)
    client.connect_ok("remote-sub")
    client.send(Subscribe(1, (Subscription("bus/#", 0),)))
    client.recv_packet()
    wire = encode(Publish("bus/t", b"over the bus",
                          properties=Properties(user_properties=(("from", "w1"),))), 5)
    message = Publish("bus/t", b"over the bus", properties=Properties(
        user_properties=(("from", "w1"),)), raw=wire)
    broker.sync(broker.server.broker.deliver_remote, message, 5)
    packet = client.recv_packet()
    assert (packet.topic, packet.payload, packet.properties.user_properties) == (
        "bus/t", b"over the bus", (("from", "w1"),))
