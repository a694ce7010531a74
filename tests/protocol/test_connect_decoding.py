"""The CONNECT decoder is held to the one it replaced (connect_reference.py), for any bytes.

codec.py reads a CONNECT in one flat pass, for the connect path of a connection storm (S5).
Whatever the bytes, valid or not, it must give what the plain decoder of 0f4c6b7 gave: the
same Connect (field by field, types included), or an error of the same class with the same
reason code and the same ``protocol_version`` (the level the CONNACK is written in). The
bytes are valid CONNECTs of every version, then changed: a byte replaced, the flags byte
replaced, cut short, bytes added or removed, any properties in place of the CONNECT's, a will
topic that is no topic name, or anything at all after a protocol name. They
are decoded where the reader decodes them (other bytes before and after the packet in the
same buffer), and through a PacketReader fed in any split.
"""

from __future__ import annotations

from dataclasses import FrozenInstanceError, fields, replace
from typing import Any

import pytest
from connect_reference import reference_decode_connect
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from packet_strategies import VERSIONS, connects

from kushi.errors import KushiError
from kushi.protocol.codec import decode_at, encode, encode_varint, read_varint
from kushi.protocol.packets import MQTT_5, Connect, Pingreq, Will
from kushi.protocol.properties import PROPERTY_TABLE, Properties
from kushi.protocol.reader import PacketReader

SETTINGS = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PROPERTY_IDS = [int(pid) for pid in PROPERTY_TABLE] + [0, 0x7F]
PROTOCOL_HEADS = [b"\x00\x04MQTT\x04", b"\x00\x04MQTT\x05", b"\x00\x06MQIsdp\x03", b"\x00\x04MQTT"]


def _body(packet: Connect) -> bytes:
    """The bytes after the Remaining Length of an encoded CONNECT."""
    data = encode(packet, packet.protocol_version)
    index = 1
    while data[index] & 0x80:
        index += 1
    return data[index + 1 :]


@st.composite
def connect_bodies(draw: st.DrawFn) -> bytes:
    """The body of a CONNECT of any version, valid or changed in one of several ways."""
    if draw(st.integers(0, 9)) == 0:   # a protocol name and level, then anything
        return draw(st.sampled_from(PROTOCOL_HEADS)) + draw(st.binary(max_size=40))
    packet = draw(connects(draw(st.sampled_from(VERSIONS))))
    if draw(st.integers(0, 9)) == 0:   # a will topic that is not a topic name, or an odd string
        topic = draw(st.sampled_from(["a/+", "#", "", "a\x00b", "\ufeff", "a/b"]))
        packet = replace(packet, will=Will(topic, b"", draw(st.integers(0, 2))))
    body = bytearray(_body(packet))
    change = draw(st.sampled_from(["none", "byte", "flags", "cut", "add", "remove", "properties"]))
    at = draw(st.integers(0, len(body)))
    if change == "byte" and at < len(body):
        body[at] = draw(st.integers(0, 255))
    elif change == "flags":   # the Connect Flags byte (behind the protocol name and level)
        body[2 + body[1] + 1] ^= draw(st.sampled_from([1, 2, 4, 8, 16, 32, 64, 128]) | st.integers(0, 255))
    elif change == "cut":   # often within the fixed fields, where each byte is a different field
        del body[draw(st.integers(0, min(at, 16))) :]
    elif change == "add":
        body[at:at] = draw(st.binary(min_size=1, max_size=8))
    elif change == "remove":
        del body[at : at + draw(st.integers(1, 4))]
    elif change == "properties" and packet.protocol_version == MQTT_5:
        # any properties, allowed in a CONNECT or not, in place of the CONNECT's properties
        starts = 2 + body[1] + 4
        length, ends = read_varint(body, starts, len(body))
        properties = b"".join(bytes([pid]) + value for pid, value in draw(
            st.lists(st.tuples(st.sampled_from(PROPERTY_IDS), st.binary(max_size=5)), max_size=4)))
        body[starts : ends + length] = encode_varint(len(properties)) + properties
    return bytes(body)


FIXED_CONNECTS = [
    Connect(protocol_version=3, protocol_name="MQIsdp", client_id="c", will=Will("w/t", b"bye", 1, True),
            username="u", password=b"p"),
    Connect(protocol_version=4, client_id="storm-1", keep_alive=60),
    Connect(protocol_version=4, client_id="", will=Will("w", b"", 2), username="user", password=b"\x00"),
    Connect(protocol_version=5, client_id="c", keep_alive=60),
    Connect(protocol_version=5, client_id="c\u00e9", clean_start=False, password=b"pw",
            properties=Properties(session_expiry_interval=9, user_properties=(("k", "v"),)),
            will=Will("w", b"x", 1, False, Properties(will_delay_interval=5))),
]


@pytest.mark.parametrize("packet", FIXED_CONNECTS, ids=lambda packet: f"v{packet.protocol_version}")
def test_every_cut_and_every_flipped_bit_of_a_connect_gives_what_the_reference_decoder_gives(
    packet: Connect
) -> None:
    """Each byte of a CONNECT is some field's: every prefix of it, and it with any one bit
    flipped, is decoded (or refused) as the reference decoder does, with bytes after it."""
    body = _body(packet)
    changed = [body[:cut] for cut in range(len(body))]
    changed += [body[:at] + bytes([body[at] ^ 1 << bit]) + body[at + 1 :]
                for at in range(len(body)) for bit in range(8)]
    for variant in changed:
        expected = outcome(lambda: reference_decode_connect(0x10, variant))
        for after in (b"", b"\x00\x04MQTT\x05"):   # the end of the buffer, or a packet behind it
            buf = b"\x10" + variant + after
            assert outcome(lambda: decode_at(0x10, buf, 1, 1 + len(variant), None)) == expected, variant


@pytest.mark.parametrize("version", [None, *VERSIONS])
@pytest.mark.parametrize("first_byte", range(0x10, 0x20))
def test_every_first_byte_of_a_connect_gives_what_the_reference_decoder_gives(
    first_byte: int, version: int | None
) -> None:
    """Flags other than 0 are Malformed ([MQTT-2.1.3-1]), but for DUP in MQTT 3.1 (0x18); a
    ``version``: a second CONNECT on the connection."""
    for packet in FIXED_CONNECTS:
        body = _body(packet)
        expected = outcome(lambda: reference_decode_connect(first_byte, body, version))
        assert outcome(lambda: decode_at(first_byte, body, 0, len(body), version)) == expected


def test_a_decoded_connect_is_the_frozen_record_the_class_makes() -> None:
    """The decoder's Connect is filled slot by slot (packets.new_connect): the result is a Connect
    as the class makes it, equal, hashed alike, and as frozen."""
    made = Connect(protocol_version=4, client_id="storm-1", keep_alive=60, username="u", password=b"p")
    decoded = decode_at(0x10, b"\x10" + _body(made), 1, 1 + len(_body(made)), None)
    assert type(decoded) is Connect and decoded == made and hash(decoded) == hash(made)
    assert repr(decoded) == repr(made)
    with pytest.raises(FrozenInstanceError):
        decoded.client_id = "other"  # type: ignore[misc]


def test_decoded_properties_are_the_frozen_record_the_class_makes() -> None:
    """The decoder fills a Properties' slots itself (codec._new_properties), every field: the
    ones not given have the class's defaults."""
    made = Properties(session_expiry_interval=9, user_properties=(("k", "v"),), authentication_method="m")
    body = _body(Connect(protocol_version=5, client_id="c", properties=made))
    decoded = decode_at(0x10, body, 0, len(body), None).properties
    assert type(decoded) is Properties and decoded == made and hash(decoded) == hash(made)
    assert repr(decoded) == repr(made)
    with pytest.raises(FrozenInstanceError):
        decoded.receive_maximum = 1  # type: ignore[misc]


first_bytes = st.sampled_from([0x10] * 15 + list(range(0x11, 0x20)))


def outcome(decode: Any) -> tuple[Any, ...]:
    """What ``decode()`` gives, comparable: the packet and the type of each field, or the error."""
    try:
        packet = decode()
    except KushiError as error:
        return type(error), error.reason_code, getattr(error, "protocol_version", None)
    will = packet.will
    return (packet, type(packet), tuple(type(getattr(packet, field.name)) for field in fields(packet)),
            will and tuple(type(getattr(will, field.name)) for field in fields(will)))


@SETTINGS
@given(first_byte=first_bytes, body=connect_bodies(), before=st.binary(max_size=3), after=st.binary(max_size=8),
       version=st.sampled_from([None, None, *VERSIONS]))
def test_decoding_a_connect_gives_what_the_reference_decoder_gives(
    first_byte: int, body: bytes, before: bytes, after: bytes, version: int | None
) -> None:
    """In the reader's buffer a packet has neighbours: the decoder reads from ``pos`` to ``end`` only.
    (A ``version``: a second CONNECT, which the broker refuses after decoding it.)"""
    buf = before + body + after
    decoded = outcome(lambda: decode_at(first_byte, buf, len(before), len(before) + len(body), version))
    assert decoded == outcome(lambda: reference_decode_connect(first_byte, body, version))


@SETTINGS
@given(first_byte=first_bytes, body=connect_bodies(), data=st.data())
def test_a_reader_fed_a_connect_in_any_split_gives_what_the_reference_decoder_gives(
    first_byte: int, body: bytes, data: st.DataObject
) -> None:
    """A connection in WAITING_FOR_CONNECT: the CONNECT (and a PINGREQ behind it) in any pieces,
    given as a transport gives them (``feed``, or ``get_buffer``/``buffer_updated``)."""
    stream = bytes([first_byte]) + encode_varint(len(body)) + body + encode(Pingreq(), 4)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    in_place = data.draw(st.booleans())
    reader = PacketReader()
    received: list[Any] = []

    def read() -> Any:
        for start, end in zip([0, *cuts], [*cuts, len(stream)]):
            if in_place:
                buffer = reader.get_buffer()
                buffer[: end - start] = stream[start:end]
                reader.buffer_updated(end - start)
            else:
                reader.feed(stream[start:end])
            while (packet := reader.next_packet()) is not None:
                received.append(packet)
        return received[0]

    expected = outcome(lambda: reference_decode_connect(first_byte, body))
    assert outcome(read) == expected
    if type(expected[0]) is Connect:   # read to its end and no further; it set the version
        assert received == [expected[0], Pingreq()]
        assert reader.version == expected[0].protocol_version
