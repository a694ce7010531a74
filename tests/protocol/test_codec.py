"""kushi.protocol.codec: the wire form of every packet, and every malformed case it refuses.

Bytes are built by hand here (support.rawclient's fragment helpers) so that the
decoder is checked against the spec's layout, not against the encoder.
"""

from __future__ import annotations

from dataclasses import FrozenInstanceError

import pytest
from support.rawclient import connect_body, mqtt_string, varint

from kushi.errors import (
    KushiError,
    MalformedPacket,
    ProtocolError,
    TopicAliasInvalid,
    UnsupportedProtocolVersion,
)
from kushi.protocol.codec import MAX_VARINT, decode, encode, encode_varint
from kushi.protocol.packets import (
    MQTT_3_1,
    MQTT_3_1_1,
    MQTT_5,
    Auth,
    Connack,
    Connect,
    Disconnect,
    Pingreq,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Subscription,
    Unsuback,
    Unsubscribe,
    Will,
    new_publish,
)
from kushi.protocol.properties import NO_PROPERTIES, Properties

V5_PROPERTIES = Properties(user_properties=(("k", "v"),), reason_string="why")


def decode_packet(data: bytes, version: int | None) -> object:
    """Decode one whole encoded packet (fixed header included)."""
    index = 1
    while data[index] & 0x80:
        index += 1
    return decode(data[0], data[index + 1 :], version)


def refused(first_byte: int, body: bytes, version: int | None) -> KushiError:
    """The error decoding ``body`` raises (fails the test if it decodes)."""
    with pytest.raises(KushiError) as caught:
        decode(first_byte, body, version)
    return caught.value


def string_property(pid: int, text: bytes) -> bytes:
    return bytes([pid]) + mqtt_string(text)


def with_properties(properties: bytes) -> bytes:
    return varint(len(properties)) + properties


# --------------------------------------------------------------------------- #
# Round trips and exact encodings
# --------------------------------------------------------------------------- #

EXAMPLES = {
    MQTT_3_1: [
        Connect(protocol_version=3, protocol_name="MQIsdp", client_id="c", will=Will("w", b"bye", 1, True),
                username="u", password=b"p"),
        Connack(False, 0x85), Publish("a/b", b"x", 1, True, True, 7), Puback(1), Pubrec(2), Pubrel(3),
        Pubcomp(4), Subscribe(5, (Subscription("a/#", 2),)), Suback(5, (2, 0x80)), Unsubscribe(6, ("a/+",)),
        Unsuback(6), Pingreq(), Pingresp(), Disconnect(),
    ],
    MQTT_3_1_1: [
        Connect(protocol_version=4, client_id="c", clean_start=False, keep_alive=0), Connack(True, 0),
        Publish("a/b", b""), Puback(1), Pubrec(2), Pubrel(3), Pubcomp(4),
        Subscribe(5, (Subscription("a", 0), Subscription("+/b", 1))), Suback(5, (0, 1)),
        Unsubscribe(6, ("a", "b")), Unsuback(6), Pingreq(), Pingresp(), Disconnect(),
    ],
    MQTT_5: [
        Connect(client_id="c", will=Will("w", b"", 2, False, Properties(will_delay_interval=5)),
                properties=Properties(session_expiry_interval=60, receive_maximum=10)),
        Connack(True, 0, Properties(assigned_client_identifier="auto-1", topic_alias_maximum=5)),
        Publish("", b"x", 2, False, False, 9, Properties(topic_alias=3, subscription_identifiers=(1, 2))),
        Puback(1, 0x10), Pubrec(2, 0x80, V5_PROPERTIES), Pubrel(3, 0x92), Pubcomp(4, 0, V5_PROPERTIES),
        Subscribe(5, (Subscription("$share/g/a", 1, False, True, 2),), Properties(subscription_identifiers=(7,))),
        Suback(5, (0x8F, 0xA2), V5_PROPERTIES), Unsubscribe(6, ("a",), Properties(user_properties=(("k", "v"),))),
        Unsuback(6, (0x11,), V5_PROPERTIES), Pingreq(), Pingresp(), Disconnect(0x04, V5_PROPERTIES),
        Auth(0x18, Properties(authentication_method="SCRAM", authentication_data=b"\x00\x01")),
    ],
}


@pytest.mark.parametrize(
    ("version", "packet"),
    [(version, packet) for version, examples in EXAMPLES.items() for packet in examples],
    ids=lambda value: type(value).__name__ if not isinstance(value, int) else f"v{value}",
)
def test_every_packet_type_round_trips_in_every_version(version: int, packet: object) -> None:
    assert decode_packet(encode(packet, version), version) == packet


def test_examples_cover_all_fifteen_packet_types_in_v5() -> None:
    assert len({type(packet) for packet in EXAMPLES[MQTT_5]}) == 15


@pytest.mark.parametrize(
    ("packet", "version", "wire"),
    [
        (Pingreq(), MQTT_5, "c000"),
        (Pingresp(), MQTT_3_1_1, "d000"),
        (Puback(1), MQTT_5, "40020001"),  # reason 0, no properties: the 2-byte form
        (Puback(1, 0x10), MQTT_5, "4003000110"),  # reason only, no property length
        (Pubrel(1), MQTT_3_1_1, "62020001"),
        (Disconnect(), MQTT_5, "e000"),  # normal disconnection: remaining length 0
        (Disconnect(0x8E), MQTT_5, "e0018e"),
        (Disconnect(0x8E), MQTT_3_1_1, "e000"),
        (Auth(), MQTT_5, "f000"),
        (Connack(False, 0), MQTT_5, "2003000000"),  # [MQTT-2.2.2-1] property length 0 present
        (Connack(True, 0), MQTT_3_1_1, "20020100"),
        (Connack(True, 0), MQTT_3_1, "20020000"),  # 3.1 has no session present flag
        (Connack(False, 0x84), MQTT_3_1_1, "20020001"),  # v5 code mapped to the 3.1.1 return code
        (Connack(False, 0x87), MQTT_3_1_1, "20020005"),
        (Unsuback(3), MQTT_3_1_1, "b0020003"),  # 3.1.1 UNSUBACK has no payload
        (Suback(1, (0, 1, 2, 0x87)), MQTT_3_1_1, "90060001000102" "80"),  # only 0x80 for failure
        (Publish("a", b"hi"), MQTT_3_1_1, "3005000161" "6869"),  # QoS 0: no packet identifier
        (Publish("a", b"hi"), MQTT_5, "3006000161" "00" "6869"),
        (Connect(protocol_version=4, client_id="c"), MQTT_3_1_1, "100d00044d5154540402003c000163"),
        (Connect(protocol_version=3, client_id="c"), MQTT_3_1, "100f00064d514973647003" "02003c000163"),
    ],
    ids=repr,
)
def test_encode_writes_the_shortest_form_the_spec_allows(packet: object, version: int, wire: str) -> None:
    assert encode(packet, version).hex() == wire


def test_v5_short_forms_decode_to_reason_zero_and_no_properties() -> None:
    """Remaining length 2 (acks) or 0 (DISCONNECT, AUTH) means reason 0x00, no properties."""
    assert decode(0x40, b"\x00\x01", MQTT_5) == Puback(1)
    assert decode(0x62, b"\x00\x01\x92", MQTT_5) == Pubrel(1, 0x92)
    assert decode(0xE0, b"", MQTT_5) == Disconnect()
    assert decode(0xE0, b"\x04", MQTT_5) == Disconnect(0x04)
    assert decode(0xF0, b"", MQTT_5) == Auth()


def test_3_1_1_connack_return_codes_decode_to_v5_reason_codes() -> None:
    assert decode(0x20, b"\x00\x01", MQTT_3_1_1) == Connack(False, 0x84)
    assert decode(0x20, b"\x01\x00", MQTT_3_1_1) == Connack(True, 0)
    assert isinstance(refused(0x20, b"\x00\x06", MQTT_3_1_1), MalformedPacket)


def test_v3_encoding_leaves_out_what_only_v5_has() -> None:
    packet = Subscribe(1, (Subscription("a", 1, no_local=True, retain_as_published=True, retain_handling=2),),
                       Properties(subscription_identifiers=(4,)))
    assert encode(packet, MQTT_3_1_1).hex() == "820600010001" "6101"
    assert encode(Puback(1, 0x80, V5_PROPERTIES), MQTT_3_1_1).hex() == "40020001"
    with pytest.raises(ValueError):
        encode(Auth(), MQTT_3_1_1)


@pytest.mark.parametrize("value", [0, 1, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, MAX_VARINT])
def test_varints_are_written_in_the_shortest_form(value: int) -> None:
    """[MQTT-1.5.5-1]"""
    expected_length = 1 if value < 128 else 2 if value < 16_384 else 3 if value < 2_097_152 else 4
    assert len(encode_varint(value)) == expected_length
    assert encode_varint(value) == varint(value)


def test_a_varint_over_the_maximum_cannot_be_written() -> None:
    with pytest.raises(ValueError):
        encode_varint(MAX_VARINT + 1)


def test_will_and_credentials_are_read_in_payload_order() -> None:
    """[MQTT-3.1.3-1] client id, will properties, will topic, will payload, user name, password."""
    tail = with_properties(b"\x18\x00\x00\x00\x05") + mqtt_string("w/t") + mqtt_string(b"bye")
    tail += mqtt_string("user") + mqtt_string(b"secret")
    body = connect_body("cid", MQTT_5, flags=0xC0 | 0x20 | 0x08 | 0x04 | 0x02, payload_tail=tail)
    assert decode(0x10, body, None) == Connect(
        client_id="cid", will=Will("w/t", b"bye", 1, True, Properties(will_delay_interval=5)),
        username="user", password=b"secret",
    )


def test_v5_allows_a_password_without_a_user_name() -> None:
    body = connect_body("c", MQTT_5, flags=0x42, payload_tail=mqtt_string(b"pw"))
    assert decode(0x10, body, None).password == b"pw"


# --------------------------------------------------------------------------- #
# Fixed header
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    ("first_byte", "body"),
    [
        (0x11, connect_body()), (0x21, b"\x00\x00\x00"), (0x41, b"\x00\x01"), (0x51, b"\x00\x01"),
        (0x60, b"\x00\x01"), (0x63, b"\x00\x01"), (0x71, b"\x00\x01"),
        (0x80, b"\x00\x01" + b"\x00" + mqtt_string("a") + b"\x00"),
        (0x91, b"\x00\x01\x00\x00"), (0xA0, b"\x00\x01\x00" + mqtt_string("a")),
        (0xB1, b"\x00\x01\x00\x00"), (0xC1, b""), (0xD2, b""), (0xE1, b""), (0xF1, b""),
    ],
    ids=lambda value: f"0x{value:02X}" if isinstance(value, int) else "",
)
def test_reserved_fixed_header_flags_are_malformed(first_byte: int, body: bytes) -> None:
    """[MQTT-2.1.3-1] (and [MQTT-3.6.1-1], [MQTT-3.8.1-1], [MQTT-3.10.1-1], [MQTT-3.14.1-1], [MQTT-3.15.1-1])."""
    assert isinstance(refused(first_byte, body, MQTT_5), MalformedPacket)


def test_mqtt_3_1_accepts_dup_on_subscribe() -> None:
    """MQTT 3.1 clients may set DUP on a resent SUBSCRIBE; 3.1.1 may not."""
    body = b"\x00\x01" + mqtt_string("a") + b"\x00"
    assert decode(0x8A, body, MQTT_3_1) == Subscribe(1, (Subscription("a"),))
    assert isinstance(refused(0x8A, body, MQTT_3_1_1), MalformedPacket)


def test_packet_type_0_is_malformed() -> None:
    assert isinstance(refused(0x00, b"", MQTT_5), MalformedPacket)


def test_auth_is_malformed_before_v5() -> None:
    assert isinstance(refused(0xF0, b"", MQTT_3_1_1), MalformedPacket)


def test_only_connect_decodes_without_a_version() -> None:
    """[MQTT-3.1.0-1] anything but CONNECT first is refused."""
    assert isinstance(refused(0xC0, b"", None), ProtocolError)


@pytest.mark.parametrize(("first_byte", "body"), [(0xC0, b"\x00"), (0xD0, b"\x00"), (0xE0, b"\x00")])
def test_bytes_after_an_empty_packet_are_malformed(first_byte: int, body: bytes) -> None:
    assert isinstance(refused(first_byte, body, MQTT_3_1_1), MalformedPacket)


def test_v3_acks_have_exactly_a_packet_identifier() -> None:
    assert isinstance(refused(0x40, b"\x00\x01\x00", MQTT_3_1_1), MalformedPacket)
    assert isinstance(refused(0x40, b"\x00", MQTT_3_1_1), MalformedPacket)


# --------------------------------------------------------------------------- #
# CONNECT
# --------------------------------------------------------------------------- #


def test_connect_reserved_flag_is_malformed() -> None:
    """[MQTT-3.1.2-3]"""
    error = refused(0x10, connect_body(flags=0x03), None)
    assert isinstance(error, MalformedPacket)
    assert error.protocol_version == MQTT_5  # so the CONNACK can be in the client's version


@pytest.mark.parametrize(
    ("flags", "statement"),
    [(0x0A, "[MQTT-3.1.2-11] will QoS without will flag"), (0x22, "[MQTT-3.1.2-13] will retain without will"),
     (0x1E, "[MQTT-3.1.2-12] will QoS 3")],
)
def test_inconsistent_will_flags_are_malformed(flags: int, statement: str) -> None:
    tail = with_properties(b"") + mqtt_string("w") + mqtt_string(b"p")
    assert isinstance(refused(0x10, connect_body(flags=flags, payload_tail=tail), None), MalformedPacket), statement


@pytest.mark.parametrize(
    ("flags", "tail", "statement"),
    [
        (0x82, b"", "[MQTT-3.1.2-17] user name flag without a user name"),
        (0xC2, mqtt_string("u"), "[MQTT-3.1.2-19] password flag without a password"),
        (0x02, mqtt_string("u"), "[MQTT-3.1.2-16] user name without its flag"),
        (0x82, mqtt_string("u") + mqtt_string(b"p"), "[MQTT-3.1.2-18] password without its flag"),
        (0x06, b"", "[MQTT-3.1.2-9] will flag without will fields"),
    ],
)
def test_connect_payload_must_match_its_flags(flags: int, tail: bytes, statement: str) -> None:
    for version in (MQTT_3_1_1, MQTT_5):
        body = connect_body("c", version, flags=flags, payload_tail=tail)
        assert isinstance(refused(0x10, body, None), MalformedPacket), statement


def test_3_1_1_password_without_user_name_is_malformed() -> None:
    """3.1.1 [MQTT-3.1.2-22]"""
    body = connect_body("c", MQTT_3_1_1, flags=0x42, payload_tail=mqtt_string(b"pw"))
    assert isinstance(refused(0x10, body, None), MalformedPacket)


def test_connect_without_client_id_is_malformed() -> None:
    """[MQTT-3.1.3-3]"""
    body = connect_body("c", MQTT_3_1_1)[:-3]
    assert isinstance(refused(0x10, body, None), MalformedPacket)


@pytest.mark.parametrize(
    ("name", "level"), [("MQTT", 6), ("MQTT", 3), ("MQIsdp", 4), ("MQIsdp", 5), ("MQTT", 0), ("FOO", 4)]
)
def test_unknown_protocol_name_or_level_is_unsupported_protocol_version(name: str, level: int) -> None:
    """[MQTT-3.1.2-1] [MQTT-3.1.2-2]; the error carries the level so the answer fits the client."""
    error = refused(0x10, connect_body("c", level, protocol_name=name), None)
    assert isinstance(error, UnsupportedProtocolVersion)
    assert error.reason_code == 0x84
    assert error.protocol_version == level


def test_will_topic_with_wildcards_is_refused() -> None:
    tail = mqtt_string("a/#") + mqtt_string(b"p")
    error = refused(0x10, connect_body("c", MQTT_3_1_1, flags=0x06, payload_tail=tail), None)
    assert isinstance(error, ProtocolError) and error.reason_code == 0x90
    assert error.protocol_version == MQTT_3_1_1


# --------------------------------------------------------------------------- #
# UTF-8 strings and Variable Byte Integers
# --------------------------------------------------------------------------- #

ILL_FORMED_UTF8 = {
    "invalid byte": b"a\xff",
    "overlong NUL": b"\xc0\x80",
    "surrogate U+D800": b"\xed\xa0\x80",
    "truncated": b"\xe2\x82",
    "above U+10FFFF": b"\xf4\x90\x80\x80",
}


@pytest.mark.parametrize("raw", ILL_FORMED_UTF8.values(), ids=ILL_FORMED_UTF8.keys())
def test_ill_formed_utf8_is_malformed(raw: bytes) -> None:
    """[MQTT-1.5.4-1] in a topic name, a client id, a topic filter and a user property ([MQTT-1.5.7-1])."""
    assert isinstance(refused(0x30, mqtt_string(raw), MQTT_3_1_1), MalformedPacket)
    assert isinstance(refused(0x10, connect_body(raw, MQTT_3_1_1), None), MalformedPacket)
    assert isinstance(refused(0x82, b"\x00\x01" + mqtt_string(raw) + b"\x00", MQTT_3_1_1), MalformedPacket)
    user_property = b"\x26" + mqtt_string("k") + mqtt_string(raw)
    assert isinstance(refused(0x30, mqtt_string("t") + with_properties(user_property), MQTT_5), MalformedPacket)


def test_u0000_in_a_string_is_malformed() -> None:
    """[MQTT-1.5.4-2]"""
    assert isinstance(refused(0x30, mqtt_string(b"a\x00b"), MQTT_3_1_1), MalformedPacket)
    assert isinstance(refused(0x10, connect_body(b"c\x00", MQTT_5), None), MalformedPacket)
    assert isinstance(refused(0xA2, b"\x00\x01\x00" + mqtt_string(b"\x00"), MQTT_5), MalformedPacket)


def test_byte_order_mark_is_kept() -> None:
    """[MQTT-1.5.4-3] EF BB BF is U+FEFF and is neither dropped nor stripped."""
    packet = decode(0x30, mqtt_string(b"\xef\xbb\xbfa") + b"x", MQTT_3_1_1)
    assert packet.topic == "\ufeffa"
    assert decode(0x10, connect_body(b"\xef\xbb\xbf", MQTT_3_1_1), None).client_id == "\ufeff"


def test_non_shortest_varint_is_malformed() -> None:
    """[MQTT-1.5.5-1] a property length of 0 written as 80 00; a subscription id 1 as 81 00."""
    assert isinstance(refused(0x30, mqtt_string("t") + b"\x80\x00", MQTT_5), MalformedPacket)
    subscription_id = b"\x0b\x81\x00"
    assert isinstance(refused(0x30, mqtt_string("t") + with_properties(subscription_id), MQTT_5), MalformedPacket)


def test_a_five_byte_varint_is_malformed() -> None:
    properties = b"\x0b\xff\xff\xff\xff\x01"
    assert isinstance(refused(0x30, mqtt_string("t") + with_properties(properties), MQTT_5), MalformedPacket)


# --------------------------------------------------------------------------- #
# PUBLISH
# --------------------------------------------------------------------------- #


def test_publish_qos_3_is_malformed() -> None:
    """[MQTT-3.3.1-4]"""
    assert isinstance(refused(0x36, mqtt_string("t") + b"\x00\x01", MQTT_3_1_1), MalformedPacket)


def test_qos_0_publish_with_dup_is_malformed() -> None:
    """[MQTT-3.3.1-2] DUP must be 0 at QoS 0; like Mosquitto the server treats one that is not as malformed."""
    assert isinstance(refused(0x38, mqtt_string("t"), MQTT_3_1_1), MalformedPacket)


@pytest.mark.parametrize("topic", ["a/+", "#", "a/b#", "+"])
def test_publish_topic_with_wildcards_is_topic_name_invalid(topic: str) -> None:
    """[MQTT-3.3.2-2] [MQTT-4.7.0-1] Protocol Error with reason 0x90 (Topic Name invalid)."""
    for version in (MQTT_3_1_1, MQTT_5):
        error = refused(0x30, mqtt_string(topic) + b"\x00", version)
        assert isinstance(error, ProtocolError) and error.reason_code == 0x90


def test_empty_topic_name_needs_a_topic_alias() -> None:
    """[MQTT-4.7.3-1]; in v5 a zero-length topic with a Topic Alias is allowed."""
    assert isinstance(refused(0x30, mqtt_string(""), MQTT_3_1_1), ProtocolError)
    assert isinstance(refused(0x30, mqtt_string("") + b"\x00", MQTT_5), ProtocolError)
    packet = decode(0x30, mqtt_string("") + with_properties(b"\x23\x00\x01"), MQTT_5)
    assert packet.topic == "" and packet.properties.topic_alias == 1


def test_topic_alias_0_is_topic_alias_invalid() -> None:
    """[MQTT-3.3.2-8]"""
    error = refused(0x30, mqtt_string("t") + with_properties(b"\x23\x00\x00"), MQTT_5)
    assert isinstance(error, TopicAliasInvalid) and error.reason_code == 0x94


@pytest.mark.parametrize(("first_byte", "version"), [(0x32, MQTT_3_1_1), (0x34, MQTT_5)])
def test_packet_identifier_0_is_a_protocol_error(first_byte: int, version: int) -> None:
    """[MQTT-2.2.1-3] in a QoS>0 PUBLISH, a SUBSCRIBE and an UNSUBSCRIBE."""
    props = b"\x00" if version == MQTT_5 else b""
    assert isinstance(refused(first_byte, mqtt_string("t") + b"\x00\x00" + props, version), ProtocolError)
    assert isinstance(refused(0x82, b"\x00\x00" + props + mqtt_string("a") + b"\x00", version), ProtocolError)
    assert isinstance(refused(0xA2, b"\x00\x00" + props + mqtt_string("a"), version), ProtocolError)


def test_response_topic_with_wildcards_is_a_protocol_error() -> None:
    """[MQTT-3.3.2-14]"""
    properties = string_property(0x08, b"reply/#")
    assert isinstance(refused(0x30, mqtt_string("t") + with_properties(properties), MQTT_5), ProtocolError)


def test_publish_payload_is_everything_after_the_header() -> None:
    packet = decode(0x33, mqtt_string("t") + b"\x00\x05" + b"\x00" + b"\x00\x01payload", MQTT_5)
    assert packet == Publish("t", b"\x00\x01payload", qos=1, retain=True, packet_id=5)


# --------------------------------------------------------------------------- #
# SUBSCRIBE / UNSUBSCRIBE
# --------------------------------------------------------------------------- #


def test_subscribe_without_filters_is_a_protocol_error() -> None:
    """[MQTT-3.8.3-2] (3.1.1: [MQTT-3.8.3-3])"""
    assert isinstance(refused(0x82, b"\x00\x01\x00", MQTT_5), ProtocolError)
    assert isinstance(refused(0x82, b"\x00\x01", MQTT_3_1_1), ProtocolError)


def test_unsubscribe_without_filters_is_a_protocol_error() -> None:
    """[MQTT-3.10.3-2]"""
    assert isinstance(refused(0xA2, b"\x00\x01\x00", MQTT_5), ProtocolError)
    assert isinstance(refused(0xA2, b"\x00\x01", MQTT_3_1_1), ProtocolError)


@pytest.mark.parametrize(
    ("version", "options"), [(MQTT_5, 0x40), (MQTT_5, 0x80), (MQTT_3_1_1, 0x04), (MQTT_3_1_1, 0x20), (MQTT_3_1_1, 0x03)]
)
def test_subscription_options_reserved_bits_are_malformed(version: int, options: int) -> None:
    """[MQTT-3.8.3-5]; 3.1.1: reserved bits or QoS 3 ([MQTT-3-8.3-4] of 3.1.1)."""
    props = b"\x00" if version == MQTT_5 else b""
    error = refused(0x82, b"\x00\x01" + props + mqtt_string("a") + bytes([options]), version)
    assert isinstance(error, MalformedPacket)


@pytest.mark.parametrize("options", [0x03, 0x30], ids=["maximum QoS 3", "retain handling 3"])
def test_v5_subscription_qos_3_or_retain_handling_3_is_a_protocol_error(options: int) -> None:
    """Section 3.8.3.1: "It is a Protocol Error" for Maximum QoS 3 and for Retain Handling 3."""
    error = refused(0x82, b"\x00\x01\x00" + mqtt_string("a") + bytes([options]), MQTT_5)
    assert type(error) is ProtocolError


def test_no_local_on_a_shared_subscription_is_a_protocol_error() -> None:
    """[MQTT-3.8.3-4]"""
    error = refused(0x82, b"\x00\x01\x00" + mqtt_string("$share/g/a") + b"\x04", MQTT_5)
    assert isinstance(error, ProtocolError)


def test_topic_filter_syntax_is_left_to_the_broker() -> None:
    """The decoder does not refuse "a/#/b": the broker may answer it with SUBACK 0x8F per filter."""
    packet = decode(0x82, b"\x00\x01\x00" + mqtt_string("a/#/b") + b"\x01", MQTT_5)
    assert packet.subscriptions == (Subscription("a/#/b", 1),)


# --------------------------------------------------------------------------- #
# Properties (section 2.2.2)
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    ("first_byte", "head", "properties"),
    [
        (0x30, mqtt_string("t"), b"\x11\x00\x00\x00\x01"),  # session expiry in PUBLISH
        (0x40, b"\x00\x01\x00", b"\x02\x00\x00\x00\x01"),  # message expiry in PUBACK
        (0x82, b"\x00\x01", b"\x1f" + mqtt_string("r")),  # reason string in SUBSCRIBE
        (0xE0, b"\x00", b"\x13\x00\x01"),  # server keep alive in DISCONNECT
        (0xF0, b"\x00", b"\x11\x00\x00\x00\x01"),  # session expiry in AUTH
    ],
)
def test_a_property_the_packet_may_not_carry_is_a_protocol_error(
    first_byte: int, head: bytes, properties: bytes
) -> None:
    tail = mqtt_string("a") + b"\x00" if first_byte == 0x82 else b""
    error = refused(first_byte, head + with_properties(properties) + tail, MQTT_5)
    assert type(error) is ProtocolError


def test_a_property_not_allowed_in_will_properties_is_a_protocol_error() -> None:
    tail = with_properties(b"\x11\x00\x00\x00\x01") + mqtt_string("w") + mqtt_string(b"p")
    error = refused(0x10, connect_body("c", MQTT_5, flags=0x06, payload_tail=tail), None)
    assert type(error) is ProtocolError and error.protocol_version == MQTT_5


@pytest.mark.parametrize(
    ("first_byte", "head", "properties"),
    [
        (0x30, mqtt_string("t"), b"\x02\x00\x00\x00\x01" * 2),  # message expiry twice
        (0x30, mqtt_string("t"), b"\x23\x00\x01" * 2),  # topic alias twice
        (0x40, b"\x00\x01\x00", (b"\x1f" + mqtt_string("r")) * 2),  # reason string twice
        (0x82, b"\x00\x01", b"\x0b\x01\x0b\x02"),  # subscription identifier twice in SUBSCRIBE
    ],
)
def test_a_property_given_twice_is_a_protocol_error(first_byte: int, head: bytes, properties: bytes) -> None:
    tail = mqtt_string("a") + b"\x00" if first_byte == 0x82 else b""
    error = refused(first_byte, head + with_properties(properties) + tail, MQTT_5)
    assert type(error) is ProtocolError


def test_user_properties_and_publish_subscription_identifiers_may_repeat_in_order() -> None:
    """[MQTT-3.3.2-18] user properties keep their order; PUBLISH may carry several subscription ids."""
    properties = b"".join(b"\x26" + mqtt_string(k) + mqtt_string(v) for k, v in [("b", "1"), ("a", "2"), ("b", "3")])
    properties += b"\x0b\x05\x0b\x80\x01"
    packet = decode(0x30, mqtt_string("t") + with_properties(properties), MQTT_5)
    assert packet.properties.user_properties == (("b", "1"), ("a", "2"), ("b", "3"))
    assert packet.properties.subscription_identifiers == (5, 128)


def test_every_property_is_read_with_its_wire_type() -> None:
    properties = (
        b"\x01\x01"  # payload format indicator: byte
        + b"\x02\x00\x01\x00\x00"  # message expiry interval: four byte integer
        + string_property(0x03, b"text/plain")  # content type: UTF-8 string
        + string_property(0x08, b"reply/to")  # response topic
        + b"\x09" + mqtt_string(b"\x00\xff")  # correlation data: binary
        + b"\x0b\xff\xff\xff\x7f"  # subscription identifier: varint (maximum)
        + b"\x23\x01\x00"  # topic alias: two byte integer
    )
    packet = decode(0x30, mqtt_string("t") + with_properties(properties), MQTT_5)
    assert packet.properties == Properties(
        payload_format_indicator=1, message_expiry_interval=65536, content_type="text/plain",
        response_topic="reply/to", correlation_data=b"\x00\xff", subscription_identifiers=(MAX_VARINT,),
        topic_alias=256,
    )


def test_unknown_property_identifier_is_malformed() -> None:
    assert isinstance(refused(0x30, mqtt_string("t") + with_properties(b"\x7f\x00"), MQTT_5), MalformedPacket)


def test_property_length_past_the_end_is_malformed() -> None:
    assert isinstance(refused(0x30, mqtt_string("t") + b"\x05\x01", MQTT_5), MalformedPacket)
    assert isinstance(refused(0x30, mqtt_string("t") + b"\x02\x02\x00", MQTT_5), MalformedPacket)


@pytest.mark.parametrize(
    "properties",
    [b"\x17\x02", b"\x19\x02", b"\x21\x00\x00", b"\x27\x00\x00\x00\x00", b"\x16" + mqtt_string(b"data")],
    ids=["request problem info 2", "request response info 2", "receive maximum 0", "maximum packet size 0",
         "authentication data without method"],
)
def test_out_of_range_connect_properties_are_protocol_errors(properties: bytes) -> None:
    error = refused(0x10, connect_body("c", MQTT_5, properties=properties), None)
    assert type(error) is ProtocolError


def test_payload_format_indicator_other_than_0_or_1_is_a_protocol_error() -> None:
    assert type(refused(0x30, mqtt_string("t") + with_properties(b"\x01\x02"), MQTT_5)) is ProtocolError


def test_subscription_identifier_0_is_a_protocol_error() -> None:
    error = refused(0x82, b"\x00\x01" + with_properties(b"\x0b\x00") + mqtt_string("a") + b"\x00", MQTT_5)
    assert type(error) is ProtocolError


# --------------------------------------------------------------------------- #
# Reason codes
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    ("first_byte", "body"),
    [(0xE0, b"\x05"), (0x40, b"\x00\x01\x92"), (0x62, b"\x00\x01\x10"), (0xF0, b"\x01\x00"),
     (0x20, b"\x00\x8e\x00"), (0x90, b"\x00\x01\x00\x11"), (0xB0, b"\x00\x01\x00\x02")],
    ids=["DISCONNECT", "PUBACK", "PUBREL", "AUTH", "CONNACK", "SUBACK", "UNSUBACK"],
)
def test_undefined_reason_codes_are_protocol_errors(first_byte: int, body: bytes) -> None:
    """[MQTT-3.14.2-1] and the reason code tables of each packet."""
    assert type(refused(first_byte, body, MQTT_5)) is ProtocolError


def test_3_1_1_suback_return_codes_are_0_1_2_and_0x80() -> None:
    """3.1.1 [MQTT-3.9.3-2]"""
    assert decode(0x90, b"\x00\x01\x00\x01\x02\x80", MQTT_3_1_1) == Suback(1, (0, 1, 2, 0x80))
    assert isinstance(refused(0x90, b"\x00\x01\x03", MQTT_3_1_1), ProtocolError)


def test_new_publish_makes_the_same_frozen_publish_as_the_class() -> None:
    """The reader's ``new_publish`` (no class call) gives what ``Publish(...)`` gives: every field
    set, equal, same hash, and frozen."""
    made = new_publish("t/1", b"payload", 1, True, False, 7, NO_PROPERTIES, b"raw")
    expected = Publish("t/1", b"payload", 1, True, False, 7, NO_PROPERTIES, b"raw")
    assert type(made) is Publish
    assert made == expected and hash(made) == hash(expected) and made.raw == b"raw"
    with pytest.raises(FrozenInstanceError):
        made.topic = "other"  # type: ignore[misc]


@pytest.mark.parametrize("version", [MQTT_3_1_1, MQTT_5])
def test_bodiless_packets_decode_to_one_shared_frozen_instance(version: int) -> None:
    """PINGREQ and a DISCONNECT without a body are the same every time: a storm's millions of them
    share one frozen instance each (a v5 DISCONNECT without a reason code means 0x00)."""
    assert decode(0xC0, b"", version) is decode(0xC0, b"", version) == Pingreq()
    assert decode(0xE0, b"", version) is decode(0xE0, b"", version) == Disconnect()
    with pytest.raises(FrozenInstanceError):
        decode(0xE0, b"", version).reason_code = 0x04  # type: ignore[misc]


def test_a_pingreq_with_a_body_is_still_malformed() -> None:
    """PINGREQ has no variable header or payload (section 3.12): a body is not the shared packet."""
    with pytest.raises(MalformedPacket):
        decode(0xC0, b"\x00", MQTT_3_1_1)
    with pytest.raises(ProtocolError):   # before CONNECT, as any other packet
        decode(0xC0, b"", None)
