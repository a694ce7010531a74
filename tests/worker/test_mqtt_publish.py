"""PUBLISH conformance: QoS flows both ways, downgrade, properties, expiry, ordering, sizes.

Checklist sections 6-10 and 18 (QoS flows 4.3, ordering 4.6). paho clients
(v3.1.1 and v5, TCP and WebSocket) for end-to-end delivery; the raw client
where the exact packet ids, DUP flags and acknowledgements matter.
"""

from __future__ import annotations

import pytest
from support.paho import connect_properties, publish_properties
from support.rawclient import RawClient
from support.waiting import let_time_pass

from kushi.hooks.base import Hook, PublishRejected
from kushi.protocol.packets import (
    Disconnect,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Subscription,
)
from kushi.protocol.properties import Properties

VERSIONS = pytest.mark.parametrize("version", [4, 5], ids=["v311", "v5"])
QOS = pytest.mark.parametrize("qos", [0, 1, 2], ids=["qos0", "qos1", "qos2"])
TRANSPORTS = pytest.mark.parametrize("transport", ["tcp", "websockets"], ids=["tcp", "ws"])


def raw_subscriber(raw, broker, client_id: str, topic_filter: str, qos: int, version: int = 5,
                   **connect_fields) -> RawClient:
    """A raw client, connected and subscribed (SUBACK checked)."""
    client = raw(broker, version)
    client.connect_ok(client_id, **connect_fields)
    client.send(Subscribe(1, (Subscription(topic_filter, qos),)))
    suback = client.recv_packet()
    assert isinstance(suback, Suback) and suback.reason_codes == (qos,), suback
    return client


@pytest.mark.parametrize("version", [3, 4, 5], ids=["v31", "v311", "v5"])
@QOS
@TRANSPORTS
def test_publish_and_receive(broker, paho, version, qos, transport):
    """[MQTT-3.3.4-1] [MQTT-4.2-1] [MQTT-4.5.0-1] a message at QoS 0/1/2 reaches the subscriber at
    that QoS, over TCP and WebSocket, in MQTT 3.1, 3.1.1 and 5."""
    subscriber = paho.connected(broker, "sub", version, transport=transport)
    assert subscriber.subscribe("news/#", qos) == [qos]
    publisher = paho.connected(broker, "pub", version, transport=transport)
    publisher.publish("news/today", b"hello", qos=qos)
    message = subscriber.expect_message("news/today", b"hello")
    assert message.qos == qos
    assert message.retain is False


def test_v31_client_publishes_and_receives(broker, paho):
    """MQTT 3.1 (MQIsdp) clients interoperate with v5 clients."""
    old = paho.connected(broker, "old", 3)
    assert old.subscribe("mixed/t", 1) == [1]
    modern = paho.connected(broker, "modern", 5)
    modern.publish("mixed/t", b"from v5", qos=1)
    old.expect_message("mixed/t", b"from v5")


@VERSIONS
def test_qos1_inbound_puback_carries_packet_id(broker, raw, version):
    """[MQTT-4.3.2-4] [MQTT-2.2.1-5] QoS 1 in: PUBACK with the PUBLISH's packet id;
    [MQTT-4.3.2-5] the id is reusable for a new message afterwards."""
    subscriber = raw_subscriber(raw, broker, "q1sub", "q1/t", 1, version)
    client = raw(broker, version)
    client.connect_ok("q1pub")
    for payload in (b"first", b"second"):
        client.send(Publish("q1/t", payload, qos=1, packet_id=77))
        ack = client.recv_packet()
        assert isinstance(ack, Puback) and ack.packet_id == 77
        delivered = subscriber.recv_packet()
        assert isinstance(delivered, Publish) and delivered.payload == payload
        subscriber.send(Puback(delivered.packet_id))


@VERSIONS
def test_qos2_inbound_exactly_once(broker, raw, version):
    """[MQTT-4.3.3-8] PUBREC with the packet id; [MQTT-4.3.3-10] a repeat before PUBREL gets PUBREC
    again and is not delivered twice; [MQTT-4.3.3-11] PUBCOMP answers PUBREL;
    [MQTT-4.3.3-12] after PUBCOMP the id starts a new message."""
    subscriber = raw_subscriber(raw, broker, "q2sub", "q2/t", 0, version)
    client = raw(broker, version)
    client.connect_ok("q2pub")
    client.send(Publish("q2/t", b"once", qos=2, packet_id=9))
    assert client.recv_packet() == Pubrec(9)
    client.send(Publish("q2/t", b"once", qos=2, packet_id=9, dup=True))
    assert client.recv_packet() == Pubrec(9)
    client.send(Pubrel(9))
    assert client.recv_packet() == Pubcomp(9)
    client.send(Publish("q2/t", b"new", qos=2, packet_id=9))
    assert client.recv_packet() == Pubrec(9)
    client.send(Pubrel(9))
    assert client.recv_packet() == Pubcomp(9)
    payloads = [subscriber.recv_packet().payload for _ in range(2)]
    assert payloads == [b"once", b"new"], "the repeated QoS 2 message was delivered twice or lost"


def test_pubrel_for_unknown_packet_id_is_completed(broker, raw):
    """[MQTT-4.3.3-11] PUBREL is answered by PUBCOMP with the same id (v5: 0x92 if unknown)."""
    client = raw(broker, 5)
    client.connect_ok("stray")
    client.send(Pubrel(4242))
    answer = client.recv_packet()
    assert isinstance(answer, Pubcomp) and answer.packet_id == 4242
    assert answer.reason_code in (0x00, 0x92)


@VERSIONS
def test_qos0_outbound_has_no_packet_id_and_no_dup(broker, raw, paho, version):
    """[MQTT-2.2.1-2] [MQTT-3.3.1-2] [MQTT-4.3.1-1] QoS 0 out: no packet id, DUP 0."""
    subscriber = raw_subscriber(raw, broker, "q0out", "q0/t", 0, version)
    paho.connected(broker, "pub", 5).publish("q0/t", b"x", qos=1)
    delivered = subscriber.recv_packet()
    assert isinstance(delivered, Publish)
    assert (delivered.qos, delivered.packet_id, delivered.dup) == (0, None, False)


@VERSIONS
def test_qos1_outbound_flow(broker, raw, paho, version):
    """[MQTT-4.3.2-1] [MQTT-4.3.2-2] [MQTT-2.2.1-4] (3.1.1 [MQTT-2.3.1-4]) QoS 1 out: non-zero
    packet ids, distinct while unacknowledged, QoS 1 and DUP 0 on the first send."""
    subscriber = raw_subscriber(raw, broker, "q1out", "q1o/t", 1, version)
    publisher = paho.connected(broker, "pub", 5)
    for index in range(3):
        publisher.publish("q1o/t", f"m{index}".encode(), qos=1)
    delivered = [subscriber.recv_packet() for _ in range(3)]
    assert all(isinstance(p, Publish) and p.qos == 1 and not p.dup for p in delivered)
    ids = [p.packet_id for p in delivered]
    assert 0 not in ids and None not in ids and len(set(ids)) == 3, ids
    for packet in delivered:
        subscriber.send(Puback(packet.packet_id))


@VERSIONS
def test_qos2_outbound_flow(broker, raw, paho, version):
    """[MQTT-4.3.3-1] [MQTT-4.3.3-2] first send QoS 2, DUP 0, non-zero id; [MQTT-4.3.3-4] PUBREC
    is answered by PUBREL with the same id; [MQTT-4.3.3-5] PUBCOMP completes it."""
    subscriber = raw_subscriber(raw, broker, "q2out", "q2o/t", 2, version)
    paho.connected(broker, "pub", 5).publish("q2o/t", b"x", qos=2)
    delivered = subscriber.recv_packet()
    assert isinstance(delivered, Publish)
    assert delivered.qos == 2 and not delivered.dup and delivered.packet_id
    subscriber.send(Pubrec(delivered.packet_id))
    pubrel = subscriber.recv_packet()
    assert isinstance(pubrel, Pubrel) and pubrel.packet_id == delivered.packet_id
    subscriber.send(Pubcomp(delivered.packet_id))
    subscriber.send(Disconnect())
    assert subscriber.expect_closed()
    assert subscriber.received_before_close == [], "nothing may follow a completed QoS 2 flow"


@pytest.mark.parametrize("granted, published, expected", [(0, 2, 0), (1, 2, 1), (2, 1, 1), (2, 0, 0)])
@VERSIONS
def test_delivery_at_minimum_of_published_and_granted_qos(broker, paho, version, granted, published, expected):
    """[MQTT-3.8.4-8] (3.1.1 [MQTT-3.8.4-6]) deliver at min(published QoS, granted QoS)."""
    subscriber = paho.connected(broker, "sub", version)
    assert subscriber.subscribe("down/t", granted) == [granted]
    paho.connected(broker, "pub", version).publish("down/t", b"x", qos=published)
    assert subscriber.expect_message("down/t", b"x").qos == expected


@VERSIONS
def test_overlapping_subscriptions_use_highest_qos(broker, raw, paho, version):
    """[MQTT-3.3.4-2] (3.1.1 [MQTT-3.3.5-1]) overlapping subscriptions: delivered at the highest
    granted QoS (one copy, or one per subscription with the maximum among them)."""
    subscriber = raw(broker, version)
    subscriber.connect_ok("overlap")
    subscriber.send(Subscribe(1, (Subscription("ov/+", 0), Subscription("ov/#", 2))))
    assert subscriber.recv_packet().reason_codes == (0, 2)
    publisher = paho.connected(broker, "pub", 5)
    publisher.publish("ov/t", b"x", qos=2)
    publisher.publish("ov/end", b"end", qos=0)
    copies = []
    while True:
        packet = subscriber.recv_packet()
        if isinstance(packet, Pubrel):
            subscriber.send(Pubcomp(packet.packet_id))
            continue
        if packet.payload == b"end":
            break
        copies.append(packet)
        if packet.qos == 2:
            subscriber.send(Pubrec(packet.packet_id))
    assert copies and max(p.qos for p in copies) == 2, copies


def test_overlapping_subscriptions_carry_all_subscription_identifiers(broker, raw, paho):
    """[MQTT-3.3.4-3] [MQTT-3.3.4-4] [MQTT-3.3.4-5] the delivery for overlapping subscriptions
    carries the identifiers of every matching subscription (one copy with both, or one each)."""
    subscriber = raw(broker, 5)
    subscriber.connect_ok("ids")
    subscriber.send(Subscribe(1, (Subscription("sid/+", 1),), Properties(subscription_identifiers=(11,))))
    subscriber.recv_packet()
    subscriber.send(Subscribe(2, (Subscription("sid/#", 1),), Properties(subscription_identifiers=(22,))))
    subscriber.recv_packet()
    subscriber.send(Subscribe(3, (Subscription("sid/x", 1),)))  # no identifier
    subscriber.recv_packet()
    publisher = paho.connected(broker, "pub", 5)
    publisher.publish("sid/x", b"x", qos=1)
    publisher.publish("sid/y/end", b"end", qos=1)  # matches only sid/# (22)
    ids_seen: list[int] = []
    while True:
        packet = subscriber.recv_packet()
        subscriber.send(Puback(packet.packet_id))
        if packet.payload == b"end":
            assert packet.properties.subscription_identifiers == (22,)
            break
        ids_seen.extend(packet.properties.subscription_identifiers)
    assert sorted(ids_seen) == [11, 22]


def test_publish_properties_forwarded_unchanged(broker, paho):
    """[MQTT-3.3.2-4] [MQTT-3.3.2-15] [MQTT-3.3.2-16] [MQTT-3.3.2-17] [MQTT-3.3.2-18] [MQTT-3.3.2-20]
    Payload Format Indicator, Response Topic, Correlation Data, User Properties (in order)
    and Content Type reach the subscriber unchanged."""
    subscriber = paho.connected(broker, "sub", 5)
    assert subscriber.subscribe("props/t", 1) == [1]
    user_properties = [("b", "2"), ("a", "1"), ("b", "1"), ("z", "")]
    paho.connected(broker, "pub", 5).publish("props/t", "text ☃".encode(), qos=1, properties=publish_properties(
        PayloadFormatIndicator=1, ResponseTopic="reply/here", CorrelationData=b"\x00\x01corr",
        UserProperty=user_properties, ContentType="text/plain; charset=utf-8",
    ))
    message = subscriber.expect_message("props/t", "text ☃".encode())
    props = message.properties
    assert props.PayloadFormatIndicator == 1
    assert props.ResponseTopic == "reply/here"
    assert props.CorrelationData == b"\x00\x01corr"
    assert props.UserProperty == user_properties
    assert props.ContentType == "text/plain; charset=utf-8"


def test_byte_order_mark_kept_in_topic_and_topics_matched_exactly(broker, paho):
    """[MQTT-1.5.4-3] [MQTT-4.7.3-4] U+FEFF is kept, and topics match exactly as received
    (case-sensitive, no normalisation)."""
    subscriber = paho.connected(broker, "sub", 5)
    assert subscriber.subscribe("\ufeffbom/Case", 0) == [0]
    publisher = paho.connected(broker, "pub", 5)
    publisher.publish("bom/Case", b"no bom", qos=1)
    publisher.publish("\ufeffbom/case", b"lower", qos=1)
    publisher.publish("\ufeffbom/Case", b"exact", qos=1)
    subscriber.expect_message("\ufeffbom/Case", b"exact")
    subscriber.expect_no_message()


@VERSIONS
def test_messages_from_one_publisher_arrive_in_order(broker, paho, version):
    """[MQTT-4.6.0-5] [MQTT-4.6.0-6] (3.1.1 [MQTT-4.6.0-5] [MQTT-4.6.0-6]) per publisher, topic
    and QoS, messages arrive in order (every topic is Ordered by default)."""
    subscriber = paho.connected(broker, "sub", version)
    assert subscriber.subscribe("order/#", 1) == [1]
    publisher = paho.connected(broker, "pub", version)
    sent = [f"{index}".encode() for index in range(100)]
    for payload in sent:
        publisher.client.publish("order/t", payload, qos=1)
    publisher.publish("order/t", b"done", qos=1)
    received = [subscriber.wait_for_message().payload for _ in range(len(sent) + 1)]
    assert received == [*sent, b"done"]


def test_message_expiry_remaining_interval_forwarded(broker, paho):
    """[MQTT-3.3.2-6] the forwarded Message Expiry Interval is the received value minus the time
    the message waited in the server (here: a retained message that waited over a second)."""
    publisher = paho.connected(broker, "pub", 5)
    publisher.publish("exp/kept", b"x", qos=1, retain=True,
                      properties=publish_properties(MessageExpiryInterval=30))
    let_time_pass(1.1)
    subscriber = paho.connected(broker, "sub", 5)
    assert subscriber.subscribe("exp/kept", 1) == [1]
    remaining = subscriber.expect_message("exp/kept", b"x").properties.MessageExpiryInterval
    assert 0 < remaining < 30


def test_expired_message_not_delivered_to_offline_session(broker, paho):
    """[MQTT-3.3.2-5] a queued message whose expiry passes before delivery started is dropped."""
    props = {"properties": connect_properties(SessionExpiryInterval=60)}
    away = paho(broker, "away", 5, clean=False)
    away.connect(**props)
    assert away.subscribe("exp/q", 1) == [1]
    away.disconnect()
    publisher = paho.connected(broker, "pub", 5)
    publisher.publish("exp/q", b"short", qos=1, properties=publish_properties(MessageExpiryInterval=1))
    publisher.publish("exp/q", b"long", qos=1, properties=publish_properties(MessageExpiryInterval=60))
    let_time_pass(1.2)
    back = paho(broker, "away", 5, clean=False)
    back.connect(**props)
    message = back.expect_message("exp/q", b"long")
    assert 0 < message.properties.MessageExpiryInterval <= 60
    back.expect_no_message()


def test_message_too_large_for_subscriber_dropped_for_it_only(broker, raw, paho):
    """[MQTT-3.1.2-24] [MQTT-3.1.2-25] a PUBLISH bigger than a subscriber's Maximum Packet Size is
    not sent to it, and the broker goes on as if it had been delivered: it takes no slot of the
    subscriber's Receive Maximum of 1, so the next message arrives; other subscribers get it."""
    small = raw_subscriber(raw, broker, "small", "size/t", 1, 5,
                           properties=Properties(maximum_packet_size=128, receive_maximum=1))
    big = paho.connected(broker, "big", 5)
    assert big.subscribe("size/t", 0) == [0]
    publisher = paho.connected(broker, "pub", 5)
    publisher.publish("size/t", b"L" * 500, qos=1)
    publisher.publish("size/t", b"small", qos=1)
    assert big.wait_for_message().payload == b"L" * 500
    packet = small.recv_packet()
    assert isinstance(packet, Publish) and packet.payload == b"small", "the oversized message was sent"


def test_publish_above_maximum_qos_gets_disconnect_0x9B(make_broker, raw):
    """[MQTT-3.2.2-11] a PUBLISH above the server's Maximum QoS: DISCONNECT 0x9B."""
    broker = make_broker(maximum_qos=1)
    client = raw(broker, 5)
    assert client.connect_ok("tooqos").properties.maximum_qos == 1
    client.send(Publish("t", b"x", qos=2, packet_id=1))
    client.expect_disconnect(0x9B)


def test_retain_when_unavailable_gets_disconnect_0x9A(make_broker, raw):
    """[MQTT-3.2.2-14] RETAIN 1 when Retain Available is 0: DISCONNECT 0x9A."""
    broker = make_broker(retain_available=False)
    client = raw(broker, 5)
    client.connect_ok("retainer")
    client.send(Publish("t", b"x", retain=True))
    client.expect_disconnect(0x9A)


@VERSIONS
def test_no_local_not_sent_back_to_publisher(broker, paho, version):
    """[MQTT-3.8.3-3] No Local: the publisher's own message is not sent back to it (v5);
    v3.1.1 has no such option and gets it back."""
    from paho.mqtt.subscribeoptions import SubscribeOptions

    me = paho.connected(broker, "me", version)
    if version == 5:
        assert me.subscribe("nl/t", options=SubscribeOptions(qos=1, noLocal=True)) == [1]
    else:
        assert me.subscribe("nl/t", 1) == [1]
    me.publish("nl/t", b"mine", qos=1)
    other = paho.connected(broker, "other", version)
    other.publish("nl/t", b"theirs", qos=1)
    if version == 5:
        me.expect_message("nl/t", b"theirs")
    else:
        me.expect_message("nl/t", b"mine")
        me.expect_message("nl/t", b"theirs")
    me.expect_no_message()


def test_inline_client_publish_reaches_subscribers(broker, paho):
    """kushi.Server.publish (the inline client) delivers like any publisher."""
    subscriber = paho.connected(broker, "sub", 5)
    assert subscriber.subscribe("inline/#", 1) == [1]
    broker.call(broker.server.publish("inline/t", b"from the server", qos=1))
    message = subscriber.expect_message("inline/t", b"from the server")
    assert message.qos == 1


def test_outgoing_dup_independent_of_incoming_dup(broker, raw):
    """[MQTT-3.3.1-3] the DUP flag sent to a subscriber reflects only our own retransmission,
    never the DUP of the incoming PUBLISH."""
    subscriber = raw_subscriber(raw, broker, "dupsub", "dup/t", 1)
    client = raw(broker, 5)
    client.connect_ok("duppub")
    client.send(Publish("dup/t", b"x", qos=1, packet_id=5, dup=True))
    assert client.recv_packet() == Puback(5)
    delivered = subscriber.recv_packet()
    assert isinstance(delivered, Publish) and delivered.dup is False


def test_qos2_exchange_completed_after_message_expired(broker, raw):
    """[MQTT-4.3.3-13] the PUBREC/PUBREL/PUBCOMP exchange is finished even if the message expired."""
    client = raw(broker, 5)
    client.connect_ok("expiring")
    client.send(Publish("exp/q2", b"x", qos=2, packet_id=8,
                        properties=Properties(message_expiry_interval=1)))
    assert client.recv_packet() == Pubrec(8)
    let_time_pass(1.2)
    client.send(Pubrel(8))
    assert client.recv_packet() == Pubcomp(8)


def test_problem_information_0_keeps_reason_strings_off_acks(make_broker, raw):
    """[MQTT-3.1.2-29] Request Problem Information 0: no Reason String or User Property on SUBACK
    (only PUBLISH, CONNACK and DISCONNECT may carry them)."""
    broker = make_broker(wildcard_subscriptions_available=False)
    client = raw(broker, 5)
    client.connect_ok("quiet", properties=Properties(request_problem_information=0))
    client.send(Subscribe(1, (Subscription("a/#/b", 0), Subscription("w/+", 0))))
    suback = client.recv_packet()
    assert isinstance(suback, Suback) and suback.reason_codes[0] >= 0x80
    assert suback.properties.reason_string is None and suback.properties.user_properties == ()


def test_acks_fit_the_client_maximum_packet_size(make_broker, raw):
    """[MQTT-3.1.2-24] [MQTT-3.9.2-1] [MQTT-3.9.2-2] no packet larger than the client's Maximum
    Packet Size: a SUBACK drops its Reason String / User Properties rather than exceed it."""
    from kushi.protocol.codec import encode

    broker = make_broker(wildcard_subscriptions_available=False)
    client = raw(broker, 5)
    client.connect_ok("tiny", properties=Properties(maximum_packet_size=16))
    client.send(Subscribe(1, (Subscription("a/#/b", 0), Subscription("w/+", 0))))
    suback = client.recv_packet()
    assert isinstance(suback, Suback) and suback.reason_codes[0] >= 0x80
    assert len(encode(suback, 5)) <= 16


class RejectBad(Hook):
    """Refuses every message whose payload is b"bad" (PUBACK/PUBREC 0x87 in v5)."""

    id = "reject-bad"

    def on_publish(self, client, packet):
        if bytes(packet.payload) == b"bad":
            raise PublishRejected(0x87, "payload refused by policy " + "x" * 200)
        return packet


def test_refused_qos2_id_reusable_and_ack_fits_maximum_packet_size(make_broker, raw, paho):
    """[MQTT-4.3.3-9] after a PUBREC >= 0x80 the packet id starts a new message;
    [MQTT-3.5.2-2] [MQTT-3.5.2-3] [MQTT-3.4.2-2] [MQTT-3.4.2-3] acks drop their Reason String
    rather than exceed the client's Maximum Packet Size."""
    from kushi.protocol.codec import encode

    broker = make_broker(hooks=[RejectBad()])
    subscriber = paho.connected(broker, "sub", 5)
    assert subscriber.subscribe("pol/t", 2) == [2]
    client = raw(broker, 5)
    client.connect_ok("policed", properties=Properties(maximum_packet_size=32))
    client.send(Publish("pol/t", b"bad", qos=1, packet_id=1))
    puback = client.recv_packet()
    assert isinstance(puback, Puback) and puback.reason_code == 0x87 and len(encode(puback, 5)) <= 32
    client.send(Publish("pol/t", b"bad", qos=2, packet_id=2))
    pubrec = client.recv_packet()
    assert isinstance(pubrec, Pubrec) and pubrec.reason_code == 0x87 and len(encode(pubrec, 5)) <= 32
    client.send(Publish("pol/t", b"good", qos=2, packet_id=2))
    assert client.recv_packet() == Pubrec(2)
    client.send(Pubrel(2))
    assert client.recv_packet() == Pubcomp(2)
    subscriber.expect_message("pol/t", b"good")
    subscriber.expect_no_message()


def test_refused_publish_in_311_acknowledged_or_closed(make_broker, raw, paho):
    """3.1.1 [MQTT-3.3.5-2] an unauthorized PUBLISH is acknowledged normally (or the connection
    closed), never delivered."""
    broker = make_broker(hooks=[RejectBad()])
    subscriber = paho.connected(broker, "sub", 5)
    assert subscriber.subscribe("pol/t", 1) == [1]
    client = raw(broker, 4)
    client.connect_ok("old-policed")
    client.send(Publish("pol/t", b"bad", qos=1, packet_id=1))
    client.send(Publish("pol/t", b"good", qos=1, packet_id=2))
    assert client.recv_packet() == Puback(1)
    assert client.recv_packet() == Puback(2)
    subscriber.expect_message("pol/t", b"good")
    subscriber.expect_no_message()


def test_longest_topic_name(broker, paho):
    """[MQTT-4.7.3-3] a topic name of 65,535 bytes is accepted and delivered."""
    topic = "t/" + "x" * 65_533
    subscriber = paho.connected(broker, "sub", 5)
    assert subscriber.subscribe("t/#", 1) == [1]
    paho.connected(broker, "pub", 5).publish(topic, b"long", qos=1)
    assert subscriber.expect_message(topic, b"long").topic == topic


def test_message_expiry_capped_by_server_maximum(make_broker, paho):
    """[MQTT-3.3.2-6] with maximum_message_expiry set, a forwarded message never carries a longer
    Message Expiry Interval than the server's cap."""
    broker = make_broker(maximum_message_expiry=5)
    subscriber = paho.connected(broker, "sub", 5)
    assert subscriber.subscribe("cap/t", 1) == [1]
    paho.connected(broker, "pub", 5).publish("cap/t", b"x", qos=1,
                                             properties=publish_properties(MessageExpiryInterval=3600))
    assert 0 < subscriber.expect_message("cap/t", b"x").properties.MessageExpiryInterval <= 5
