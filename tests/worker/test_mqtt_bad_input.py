"""Bad input: each case gets the verdict the spec names, and the broker keeps serving.

Issue 2, "Bad input": every case below is sent on its own connection by a raw
socket client; a v5 connection must get the CONNACK or DISCONNECT with the
reason code the spec names and then be closed; a 3.1.1 connection is simply
closed (3.1.1 has no server DISCONNECT and no CONNACK code for a malformed
CONNECT). Every test then checks that a client connected *before* the bad
input (the "bystander") still publishes and receives.

Where the spec leaves a choice of reason code, the test accepts the set of
defensible codes and says why.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable

import pytest
from support.rawclient import ConnectionClosed, connect_body, frame, mqtt_string, varint
from support.waiting import wait_until

from kushi.hooks.base import Hook
from kushi.protocol.codec import encode
from kushi.protocol.packets import (
    Disconnect,
    Publish,
    Pubrec,
    Subscribe,
    Subscription,
    Will,
)
from kushi.protocol.properties import Properties

BYSTANDER_TOPIC = "bystander/t"


class Bystander:
    """A paho v5 client connected before the bad input, subscribed to its own topic."""

    def __init__(self, paho, broker) -> None:
        self.client = paho.connected(broker, "bystander", 5)
        assert self.client.subscribe(BYSTANDER_TOPIC, 1) == [1]
        self.rounds = 0

    def assert_still_served(self) -> None:
        """The bystander's own QoS 1 publish comes back to it."""
        self.rounds += 1
        payload = f"still here {self.rounds}".encode()
        self.client.publish(BYSTANDER_TOPIC, payload, qos=1)
        self.client.expect_message(BYSTANDER_TOPIC, payload)


@pytest.fixture
def bystander(broker, paho) -> Bystander:
    return Bystander(paho, broker)


# ---- wire builders ----------------------------------------------------------

def props(raw_properties: bytes, version: int) -> bytes:
    """A property block for v5, nothing for 3.1.1."""
    return varint(len(raw_properties)) + raw_properties if version == 5 else b""


def publish_bytes(version: int, topic: bytes | str = "t", qos: int = 0, packet_id: int | None = None,
                  properties: bytes = b"", payload: bytes = b"x", first_byte: int | None = None) -> bytes:
    """A PUBLISH built by hand: any topic bytes, any flags, any properties."""
    body = mqtt_string(topic)
    if packet_id is not None:
        body += packet_id.to_bytes(2, "big")
    body += props(properties, version)
    return frame(first_byte if first_byte is not None else 0x30 | (qos << 1), body + payload)


def subscribe_bytes(version: int, filters: bytes, first_byte: int = 0x82) -> bytes:
    """A SUBSCRIBE with packet id 1 and the given raw (filter, options) payload."""
    return frame(first_byte, b"\x00\x01" + props(b"", version) + filters)


def unsubscribe_bytes(version: int, filters: bytes, first_byte: int = 0xA2) -> bytes:
    return frame(first_byte, b"\x00\x01" + props(b"", version) + filters)


PAYLOAD_FORMAT = b"\x01\x01"          # Payload Format Indicator = 1
SUBSCRIPTION_ID = b"\x0b\x05"         # Subscription Identifier = 5
TOPIC_ALIAS_0 = b"\x23\x00\x00"       # Topic Alias = 0
SESSION_EXPIRY = b"\x11\x00\x00\x00\x0a"  # Session Expiry Interval = 10

# Reason-code sets where the spec leaves a choice:
WILDCARD_TOPIC_CODES = {0x90, 0x81, 0x82}  # "Topic Name invalid"; a wildcard name is also arguably malformed
PACKET_ID_ZERO_CODES = {0x82, 0x81}        # checklist: Protocol Error; a codec may call it malformed
MISPLACED_PROPERTY_CODES = {0x81, 0x82}    # 2.2.2.2: not valid for the packet type


# (id, spec statement, builder(version) -> bytes sent after a good CONNECT, v5 DISCONNECT code(s), versions)
AFTER_CONNECT: list[tuple[str, Callable[[int], bytes], int | set[int], tuple[int, ...]]] = [
    ("remaining_length_5_bytes-MQTT-1.5.5-1",
     lambda v: b"\x30\xff\xff\xff\xff\x01", 0x81, (4, 5)),
    ("publish_qos_3-MQTT-3.3.1-4-311-MQTT-3.3.1-4",
     lambda v: publish_bytes(v, qos=3, packet_id=1), 0x81, (4, 5)),
    ("wildcard_plus_in_topic_name-MQTT-3.3.2-2-MQTT-4.7.0-1-311-MQTT-4.7.1-1",
     lambda v: publish_bytes(v, "a/+/c"), WILDCARD_TOPIC_CODES, (4, 5)),
    ("wildcard_hash_in_topic_name-MQTT-3.3.2-2-311-MQTT-4.7.1-1",
     lambda v: publish_bytes(v, "a/#"), WILDCARD_TOPIC_CODES, (4, 5)),
    ("empty_topic_without_alias-MQTT-4.7.3-1",
     lambda v: publish_bytes(v, ""), 0x82, (4, 5)),
    ("publish_packet_id_0-MQTT-2.2.1-3-MQTT-2.3.1-1",
     lambda v: publish_bytes(v, "t", qos=1, packet_id=0), PACKET_ID_ZERO_CODES, (4, 5)),
    ("topic_invalid_utf8-MQTT-1.5.4-1-MQTT-3.3.2-1-311-MQTT-1.5.3-1",
     lambda v: publish_bytes(v, b"t/\xff\xfe"), 0x81, (4, 5)),
    ("topic_utf16_surrogate-MQTT-1.5.4-1-311-MQTT-1.5.3-1",
     lambda v: publish_bytes(v, b"t/\xed\xa0\x80"), 0x81, (4, 5)),
    ("topic_with_u0000-MQTT-1.5.4-2-MQTT-4.7.3-2-311-MQTT-1.5.3-2",
     lambda v: publish_bytes(v, b"t/\x00"), 0x81, (4, 5)),
    ("subscribe_without_filters-MQTT-3.8.3-2-311-MQTT-3.8.3-3",
     lambda v: subscribe_bytes(v, b""), 0x82, (4, 5)),
    ("subscribe_reserved_fixed_flags-MQTT-3.8.1-1-311-MQTT-2.2.2-2",
     lambda v: subscribe_bytes(v, mqtt_string("t") + b"\x00", first_byte=0x80), 0x81, (4, 5)),
    ("subscribe_reserved_option_bits-MQTT-3.8.3-5-311-MQTT-3-8.3-4",
     lambda v: subscribe_bytes(v, mqtt_string("t") + b"\xc0"), 0x81, (4, 5)),
    ("subscribe_qos_3-MQTT-3-8.3-4",  # v5 3.8.3.1 calls it a Protocol Error, 3.1.1 malformed
     lambda v: subscribe_bytes(v, mqtt_string("t") + b"\x03"), {0x81, 0x82}, (4, 5)),
    ("subscribe_filter_invalid_utf8-MQTT-3.8.3-1-311-MQTT-1.5.3-1",
     lambda v: subscribe_bytes(v, mqtt_string(b"t/\xc3") + b"\x00"), 0x81, (4, 5)),
    ("unsubscribe_without_filters-MQTT-3.10.3-2-311-MQTT-3.10.3-2",
     lambda v: unsubscribe_bytes(v, b""), 0x82, (4, 5)),
    ("unsubscribe_reserved_fixed_flags-MQTT-3.10.1-1-311-MQTT-2.2.2-2",
     lambda v: unsubscribe_bytes(v, mqtt_string("t"), first_byte=0xA0), 0x81, (4, 5)),
    ("pubrel_reserved_fixed_flags-MQTT-3.6.1-1-311-MQTT-2.2.2-2",
     lambda v: frame(0x60, b"\x00\x01"), 0x81, (4, 5)),
    ("disconnect_reserved_flags-MQTT-3.14.1-1-311-MQTT-3.14.1-1",
     lambda v: frame(0xE1, b""), 0x81, (4, 5)),
    ("reserved_packet_type_0-MQTT-2.1.3-1",
     lambda v: frame(0x00, b""), {0x81, 0x82}, (4, 5)),
    ("second_connect-MQTT-3.1.0-2",
     lambda v: frame(0x10, connect_body("again", v)), 0x82, (4, 5)),
    ("topic_alias_0-MQTT-3.3.2-8",
     lambda v: publish_bytes(v, "t", properties=TOPIC_ALIAS_0), 0x94, (5,)),
    ("duplicate_property-section-2.2.2.2",
     lambda v: publish_bytes(v, "t", properties=PAYLOAD_FORMAT + PAYLOAD_FORMAT), 0x82, (5,)),
    ("subscription_identifier_in_publish-MQTT-3.3.4-6",
     lambda v: publish_bytes(v, "t", properties=SUBSCRIPTION_ID), 0x82, (5,)),
    ("property_not_allowed_on_publish-section-2.2.2.2",
     lambda v: publish_bytes(v, "t", properties=SESSION_EXPIRY), MISPLACED_PROPERTY_CODES, (5,)),
    ("response_topic_with_wildcard-MQTT-3.3.2-14",
     lambda v: publish_bytes(v, "t", properties=b"\x08" + mqtt_string("reply/#")), {0x82, 0x81, 0x90}, (5,)),
    ("response_topic_invalid_utf8-MQTT-3.3.2-13",
     lambda v: publish_bytes(v, "t", properties=b"\x08" + mqtt_string(b"r\xff")), 0x81, (5,)),
    ("content_type_invalid_utf8-MQTT-3.3.2-19",
     lambda v: publish_bytes(v, "t", properties=b"\x03" + mqtt_string(b"c\xc0\x80")), 0x81, (5,)),
    ("unsubscribe_filter_invalid_utf8-MQTT-3.10.3-1-311-MQTT-1.5.3-1",
     lambda v: unsubscribe_bytes(v, mqtt_string(b"t/\xff")), 0x81, (4, 5)),
    ("auth_reserved_flags-MQTT-3.15.1-1",  # also an AUTH without a method: Protocol Error
     lambda v: frame(0xF1, b"\x00"), {0x81, 0x82}, (5,)),
    ("user_property_invalid_utf8-MQTT-1.5.7-1",
     lambda v: publish_bytes(v, "t", properties=b"\x26" + mqtt_string(b"k\xff") + mqtt_string("v")),
     0x81, (5,)),
]


def expand(table) -> list:
    """One pytest case per (row, protocol version) of a table of bad inputs.

    A row's name cites the v5 statement as ``MQTT-x`` and the 3.1.1 one as
    ``311-MQTT-y``; the 3.1.1 citation stays out of the v5 case's id.
    """
    return [
        pytest.param(build, codes, version, id=f"{case_name(name, version)}-v{version}")
        for name, build, codes, versions in table
        for version in versions
    ]


def case_name(name: str, version: int) -> str:
    """The row name as one version's case shows it."""
    return re.sub(r"-311-MQTT-[0-9][0-9.\-]*[0-9]", "", name) if version == 5 else name


@pytest.mark.parametrize("build, codes, version", expand(AFTER_CONNECT))
def test_bad_packet_after_connect(broker, raw, bystander, build, codes, version):
    """A bad packet after a good CONNECT: v5 DISCONNECT with the spec's code, then close and
    nothing after it ([MQTT-4.13.1-1] [MQTT-4.13.2-1] [MQTT-3.14.4-1] [MQTT-3.14.4-2]); 3.1.1:
    closed with nothing sent (3.1.1 [MQTT-4.8.0-1] [MQTT-2.2.2-1]). Others go on."""
    client = raw(broker, version)
    client.connect_ok(f"bad-{version}")
    client.send(build(version))
    if version == 5:
        client.expect_disconnect(codes)
    else:
        assert client.expect_closed(), "3.1.1: the connection must be closed"
        assert client.received_before_close == [], "3.1.1: the server sends no DISCONNECT"
    bystander.assert_still_served()


# (id, CONNECT bytes builder(version), v5 CONNACK code(s), versions)
BAD_CONNECTS: list[tuple[str, Callable[[int], bytes], int | set[int], tuple[int, ...]]] = [
    ("reserved_connect_flag-MQTT-3.1.2-3",
     lambda v: frame(0x10, connect_body("rsv", v, flags=0x03)), 0x81, (4, 5)),
    ("will_qos_3-MQTT-3.1.2-12",
     lambda v: frame(0x10, connect_body("wq3", v, flags=0x02 | 0x04 | 0x18,
                                        payload_tail=props(b"", v) + mqtt_string("w") + mqtt_string("x"))),
     0x81, (4, 5)),
    ("will_qos_without_will_flag-MQTT-3.1.2-11",
     lambda v: frame(0x10, connect_body("wq", v, flags=0x02 | 0x08)), 0x81, (4, 5)),
    ("will_retain_without_will_flag-MQTT-3.1.2-13",
     lambda v: frame(0x10, connect_body("wr", v, flags=0x02 | 0x20)), 0x81, (4, 5)),
    ("will_flag_without_will_fields-MQTT-3.1.2-9",
     lambda v: frame(0x10, connect_body("wf", v, flags=0x02 | 0x04)), 0x81, (4, 5)),
    ("username_flag_without_username-MQTT-3.1.2-17",
     lambda v: frame(0x10, connect_body("un", v, flags=0x02 | 0x80)), 0x81, (4, 5)),
    ("password_flag_without_password-MQTT-3.1.2-19",
     lambda v: frame(0x10, connect_body("pw", v, flags=0x02 | 0x80 | 0x40,
                                        payload_tail=mqtt_string("user"))), 0x81, (4, 5)),
    ("password_without_flag-MQTT-3.1.2-18",
     lambda v: frame(0x10, connect_body("pwx", v, flags=0x02 | 0x80,
                                        payload_tail=mqtt_string("user") + mqtt_string("pw"))), 0x81, (4, 5)),
    ("username_without_flag-MQTT-3.1.2-16",
     lambda v: frame(0x10, connect_body("ex", v, payload_tail=mqtt_string("user"))), 0x81, (4, 5)),
    ("client_id_missing-MQTT-3.1.3-3",
     lambda v: frame(0x10, connect_body("x", v)[:-3]), 0x81, (4, 5)),
    ("client_id_invalid_utf8-MQTT-3.1.3-4",
     lambda v: frame(0x10, connect_body(b"id\xff", v)), {0x81, 0x85}, (4, 5)),
    ("client_id_with_u0000-MQTT-1.5.4-2",
     lambda v: frame(0x10, connect_body(b"id\x00x", v)), {0x81, 0x85}, (4, 5)),
    ("will_topic_invalid_utf8-MQTT-3.1.3-11",
     lambda v: frame(0x10, connect_body("wt", v, flags=0x02 | 0x04,
                                        payload_tail=props(b"", v) + mqtt_string(b"w\xff") + mqtt_string("x"))),
     0x81, (4, 5)),
    ("username_invalid_utf8-MQTT-3.1.3-12",
     lambda v: frame(0x10, connect_body("un8", v, flags=0x02 | 0x80, payload_tail=mqtt_string(b"u\xff"))),
     0x81, (4, 5)),
    ("duplicate_connect_property-section-2.2.2.2",
     lambda v: frame(0x10, connect_body("dup", v, properties=SESSION_EXPIRY + SESSION_EXPIRY)), 0x82, (5,)),
    ("password_without_username_311-MQTT-3.1.2-22",
     lambda v: frame(0x10, connect_body("pwonly", v, flags=0x02 | 0x40, payload_tail=mqtt_string("pw"))),
     0x81, (4,)),
]


@pytest.mark.parametrize("build, codes, version", expand(BAD_CONNECTS))
def test_bad_connect(broker, raw, bystander, build, codes, version):
    """A malformed CONNECT: v5 CONNACK >= 0x80 with the spec's code, then close ([MQTT-3.1.4-1]
    [MQTT-3.2.2-7]); 3.1.1: closed without any CONNACK, no return code fits a malformed CONNECT
    (3.1.1 [MQTT-3.1.4-1] [MQTT-3.2.2-6]). Others go on."""
    client = raw(broker, version)
    client.send(build(version))
    if version == 5:
        client.expect_connack_refusal(codes)
    else:
        assert client.expect_closed(), "3.1.1: the connection must be closed"
        assert client.received_before_close == [], "3.1.1: a non-conformant CONNECT gets no CONNACK"
    bystander.assert_still_served()


@pytest.mark.parametrize("version", [4, 5], ids=["v311", "v5"])
def test_unknown_protocol_level(broker, raw, bystander, version):
    """[MQTT-3.1.2-2] (3.1.1 [MQTT-3.1.2-2]) an unknown protocol level: CONNACK 0x84 (v5 form) or
    return code 0x01 (3.1.1 form), then close."""
    client = raw(broker, version)
    body = connect_body("lvl9", version)
    client.send(frame(0x10, body[:6] + b"\x09" + body[7:]))  # byte 6 is the protocol level
    answer = client.recv_bytes(4, timeout=2.0)
    v311_form = answer == b"\x20\x02\x00\x01"
    v5_form = len(answer) == 4 and answer[0] == 0x20 and answer[2:] == b"\x00\x84"
    assert v311_form or v5_form, answer
    assert client.expect_closed()
    bystander.assert_still_served()


@pytest.mark.parametrize("version", [4, 5], ids=["v311", "v5"])
def test_unknown_protocol_name(broker, raw, bystander, version):
    """[MQTT-3.1.2-1] (3.1.1 [MQTT-3.1.2-1]) protocol name not "MQTT": never accepted; v5 may get
    CONNACK 0x84; the connection is closed."""
    client = raw(broker, version)
    client.send(frame(0x10, connect_body("name", version, protocol_name="MQTX")))
    assert client.expect_closed()
    for packet in client.received_before_close:
        assert getattr(packet, "reason_code", None) in (0x84, 0x01), packet
    bystander.assert_still_served()


@pytest.mark.parametrize("first", [
    pytest.param(b"\xc0\x00", id="pingreq"),
    pytest.param(b"\x30\x03\x00\x01tx", id="publish"),
    pytest.param(b"\x82\x06\x00\x01\x00\x01t\x00", id="subscribe"),
])
def test_first_packet_not_connect_closes_without_connack(broker, raw, bystander, first):
    """[MQTT-3.1.0-1] anything but CONNECT first: closed, no CONNACK."""
    client = raw(broker, 5)
    client.send(first)
    assert client.expect_closed()
    assert client.received_before_close == []
    bystander.assert_still_served()


def test_remaining_length_above_maximum_packet_size_refused_from_header(broker, raw, bystander):
    """[MQTT-3.2.2-15] a PUBLISH declaring more than the Maximum Packet Size: DISCONNECT 0x95
    from the fixed header alone (no body is sent, so the broker must not wait for it)."""
    client = raw(broker, 5)
    client.connect_ok("huge")
    client.send(b"\x30" + varint(broker.options.maximum_packet_size + 1))
    client.expect_disconnect(0x95)
    bystander.assert_still_served()


def test_remaining_length_above_maximum_before_connect(make_broker, raw, paho):
    """Issue 2: a first packet declaring a huge remaining length is refused before any body
    is read (nothing allocated from the declared length); others go on."""
    broker = make_broker(maximum_packet_size=1000)
    witness = Bystander(paho, broker)
    client = raw(broker, 5)
    client.send(b"\x10" + varint(200_000_000))
    assert client.expect_closed()
    assert all(getattr(p, "reason_code", 0x95) >= 0x80 for p in client.received_before_close)
    witness.assert_still_served()


def test_packet_larger_than_maximum_packet_size(make_broker, raw, paho):
    """[MQTT-3.2.2-15] a whole PUBLISH larger than our Maximum Packet Size: DISCONNECT 0x95."""
    broker = make_broker(maximum_packet_size=200)
    witness = Bystander(paho, broker)
    client = raw(broker, 5)
    assert client.connect_ok("big").properties.maximum_packet_size == 200
    client.send(Publish("t", b"x" * 400))
    client.expect_disconnect(0x95)
    witness.assert_still_served()


def test_topic_alias_above_maximum(make_broker, raw, paho):
    """[MQTT-3.3.2-9] [MQTT-3.2.2-17] a Topic Alias above our Topic Alias Maximum: DISCONNECT 0x94."""
    broker = make_broker(topic_alias_maximum=2)
    witness = Bystander(paho, broker)
    client = raw(broker, 5)
    client.connect_ok("alias3")
    client.send(Publish("t", b"x", properties=Properties(topic_alias=3)))
    client.expect_disconnect(0x94)
    witness.assert_still_served()


def test_more_inbound_qos2_than_receive_maximum(make_broker, raw, paho):
    """[MQTT-3.3.4-7] more unacknowledged QoS 2 PUBLISHes than our Receive Maximum: DISCONNECT 0x93."""
    broker = make_broker(receive_maximum=2)
    witness = Bystander(paho, broker)
    client = raw(broker, 5)
    assert client.connect_ok("greedy").properties.receive_maximum == 2
    for packet_id in (1, 2):
        client.send(Publish("t", b"x", qos=2, packet_id=packet_id))
        assert isinstance(client.recv_packet(), Pubrec)
    client.send(Publish("t", b"x", qos=2, packet_id=3))
    client.expect_disconnect(0x93)
    witness.assert_still_served()


@pytest.mark.parametrize("version", [4, 5], ids=["v311", "v5"])
def test_truncated_packet_then_close(broker, raw, bystander, paho, version):
    """Issue 2: half a packet and then EOF: the broker closes that connection, treats it as an
    abnormal close (the will is published) and goes on."""
    watcher = paho.connected(broker, "will-watcher", 5)
    assert watcher.subscribe("will/truncated", 0) == [0]
    client = raw(broker, version)
    client.connect_ok("truncator", will=Will("will/truncated", b"gone"))
    whole = encode(Publish("t", b"payload" * 10), version)
    client.send(whole[: len(whole) // 2])
    client.sock.shutdown(socket.SHUT_WR)
    assert client.expect_closed()
    watcher.expect_message("will/truncated", b"gone")
    bystander.assert_still_served()


def test_silent_connection_closed_after_connect_timeout(make_broker, raw, paho):
    """Issue 2: a client that connects and sends nothing is closed after connect_timeout."""
    broker = make_broker(connect_timeout=0.5)
    witness = Bystander(paho, broker)
    silent = raw(broker, 5)
    assert silent.expect_closed(timeout=2.0)
    assert silent.received_before_close == []
    witness.assert_still_served()


def test_partial_connect_closed_after_connect_timeout(make_broker, raw, paho):
    """Issue 2: a CONNECT that never completes is closed after connect_timeout."""
    broker = make_broker(connect_timeout=0.5)
    witness = Bystander(paho, broker)
    slow = raw(broker, 5)
    slow.send(frame(0x10, connect_body("slowpoke", 5))[:8])
    assert slow.expect_closed(timeout=2.0)
    witness.assert_still_served()


def test_subscriber_that_stops_reading_is_disconnected(make_broker, raw, paho):
    """Issue 2: a subscriber that stops reading has a bounded write buffer; it is disconnected
    and the other subscribers keep receiving."""
    broker = make_broker(write_buffer_limit=256 * 1024)
    witness = Bystander(paho, broker)
    stalled = raw(broker, 5)
    stalled.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect_ok("stalled")
    stalled.send(Subscribe(1, (Subscription("flood/#", 0),)))
    stalled.recv_packet()
    healthy = paho.connected(broker, "healthy", 5)
    assert healthy.subscribe("flood/#", 0) == [0]
    publisher = paho.connected(broker, "flooder", 5)
    chunk = b"z" * 60_000
    for index in range(200):  # 12 MB: far beyond the write buffer limit and the kernel buffers
        publisher.publish(f"flood/{index}", chunk, qos=0)
        if not _connected(broker, "stalled"):
            break
    wait_until(lambda: not _connected(broker, "stalled"), timeout=5.0,
               message="the stalled subscriber being disconnected")
    publisher.publish("flood/last", b"end", qos=1)
    wait_until(lambda: _drain_until(healthy, "flood/last"), timeout=10.0,
               message="the healthy subscriber receiving the last message")
    witness.assert_still_served()


def _connected(broker, client_id: str) -> bool:
    return broker.call(broker.server.client(client_id)) is not None


def _drain_until(client, topic: str) -> bool:
    """Consume queued messages; True once ``topic`` was seen."""
    import queue

    while True:
        try:
            message = client.messages.get_nowait()
        except queue.Empty:
            return False
        if message.topic == topic:
            return True


class FailsOnBoom(Hook):
    """A hook with a bug: it raises on the payload b"boom"."""

    id = "fails-on-boom"

    def on_publish(self, client, packet):
        if bytes(packet.payload) == b"boom":
            raise RuntimeError("hook bug")
        return packet


@pytest.mark.parametrize("version", [4, 5], ids=["v311", "v5"])
def test_failing_hook_closes_only_that_connection(make_broker, raw, paho, version):
    """3.1.1 [MQTT-4.8.0-2] an error while processing an inbound packet (here a hook raising)
    closes that connection: v5 with DISCONNECT 0x83 (Implementation specific error; 0x80 also
    fits), 3.1.1 with nothing sent. The worker goes on, the same hook still serves others."""
    broker = make_broker(hooks=[FailsOnBoom()])
    witness = Bystander(paho, broker)
    client = raw(broker, version)
    client.connect_ok(f"boom-{version}")
    client.send(Publish("t", b"boom", qos=1, packet_id=1))
    if version == 5:
        client.expect_disconnect({0x83, 0x80})
    else:
        assert client.expect_closed(), "3.1.1: the connection must be closed"
        assert client.received_before_close == [], "3.1.1: no PUBACK for a message that failed"
    witness.assert_still_served()


def test_nothing_sent_after_disconnect_while_messages_flow(broker, raw, paho):
    """[MQTT-3.14.4-1] [MQTT-3.14.4-2] a subscriber in the middle of a stream of messages breaks
    the protocol: after the DISCONNECT nothing more is sent, although messages keep coming for it."""
    client = raw(broker, 5)
    client.connect_ok("streamed")
    client.send(Subscribe(1, (Subscription("stream/#", 0),)))
    client.recv_packet()
    publisher = paho.connected(broker, "streamer", 5)
    for index in range(200):
        publisher.client.publish("stream/t", f"{index}".encode(), qos=0)
    assert isinstance(client.recv_packet(), Publish)
    client.send(publish_bytes(5, "a/+"))  # Topic Name invalid
    for index in range(200, 400):
        publisher.client.publish("stream/t", f"{index}".encode(), qos=0)
    after: list = []
    seen_disconnect = False
    while True:
        try:
            packet = client.recv_packet()
        except ConnectionClosed:
            break
        if seen_disconnect:
            after.append(packet)
        seen_disconnect = seen_disconnect or isinstance(packet, Disconnect)
    assert seen_disconnect, "no DISCONNECT before the close"
    assert after == [], f"{len(after)} packets after the DISCONNECT"
