"""Turn MQTT packets into bytes and bytes into packets (MQTT 3.1, 3.1.1 and 5.0).

``encode(packet, version)`` gives the whole packet, fixed header included, in the
shortest form the spec allows. ``decode(first_byte, body, version)`` takes the
first byte of the fixed header and the bytes after the Remaining Length, and
checks everything the packet itself can tell: reserved bits, UTF-8 rules, which
properties the packet may carry, packet identifiers, flag combinations. What
needs connection state (a second CONNECT, topic alias ranges, receive maximum)
is the broker's business.

The encoder writes what it is given (so tests can build odd packets); only the
decoder polices. Errors are the ``kushi.errors`` classes: ``MalformedPacket``
when the bytes cannot be read as the packet, ``ProtocolError`` when they can but
the content is not allowed, with the reason code of the spec where it names one.

Versions are the CONNECT protocol levels: 3 (MQTT 3.1, protocol name "MQIsdp"),
4 (3.1.1) and 5. An error raised while decoding a CONNECT carries the level it
declared as ``error.protocol_version`` (when it got that far), so the broker can
answer in the client's version before any CONNECT was accepted.

PUBLISH is the hot path: it is decoded and encoded by flat code of its own. CONNECT,
the first packet of every connection (a connection storm's one packet), is decoded flat too.
"""

from __future__ import annotations

from collections.abc import Callable
from struct import Struct
from dataclasses import fields
from typing import Any, Final

from kushi.errors import (
    KushiError,
    MalformedPacket,
    ProtocolError,
    TopicAliasInvalid,
    UnsupportedProtocolVersion,
)

# The record builders (new_publish, new_connect, PubackBuilder) live in packets.py, which stays
# interpreted: see there why.
from .packets import (
    MQTT_3_1,
    MQTT_3_1_1,
    MQTT_5,
    Auth,
    Connack,
    Connect,
    Disconnect,
    Packet,
    PacketType,
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
    new_connect,
    new_publish,
)
from .properties import (
    NO_PROPERTIES, PROPERTY_TABLE, Properties, PropertiesBuilder, PropertyId, PropertyType,
)
from .reason_codes import ReasonCode, v5_to_311_connack
from .topics import validate_topic_name

__all__ = ["encode", "decode", "encode_varint", "encode_properties", "MAX_VARINT", "ALLOWED_PROPERTIES"]

MAX_VARINT: Final = 268_435_455
"""The largest value a Variable Byte Integer holds (4 bytes)."""

_U16 = Struct(">H")
_pack_u16 = _U16.pack
_U32 = Struct(">I")
_PROTOCOLS: Final = {("MQTT", 4), ("MQTT", 5), ("MQIsdp", 3)}
_TOPIC_NAME_INVALID: Final = ReasonCode.TOPIC_NAME_INVALID


# --------------------------------------------------------------------------- #
# Variable Byte Integers
# --------------------------------------------------------------------------- #

_BYTE: Final = [bytes((n,)) for n in range(256)]
"""_BYTE[n] == bytes((n,)), without building it each time."""


def encode_varint(value: int) -> bytes:
    """A Variable Byte Integer in the shortest form ([MQTT-1.5.5-1])."""
    if 0 <= value < 128:
        return _BYTE[value]
    if not 0 <= value <= MAX_VARINT:
        raise ValueError(f"{value} does not fit a Variable Byte Integer")
    out = bytearray()
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def read_varint(buf: bytes | bytearray, pos: int, end: int) -> tuple[int, int]:
    """Read a Variable Byte Integer at ``pos``; returns (value, position after it).

    Raises MalformedPacket if it runs past ``end``, is longer than 4 bytes, or
    is not in its shortest form (a last byte of 0 after a continuation byte).
    """
    value = 0
    shift = 0
    for index in range(pos, min(end, pos + 4)):
        byte = buf[index]
        value |= (byte & 0x7F) << shift
        if byte < 128:
            if byte == 0 and index > pos:
                raise MalformedPacket("variable byte integer not in its shortest form")
            return value, index + 1
        shift += 7
    if end - pos >= 4:
        raise MalformedPacket("variable byte integer longer than 4 bytes")
    raise MalformedPacket("packet ends inside a variable byte integer")


# --------------------------------------------------------------------------- #
# Reading fields: a cursor over the body of one packet
# --------------------------------------------------------------------------- #


def check_utf8(raw: bytes | bytearray) -> str:
    """Decode an MQTT UTF-8 string, enforcing [MQTT-1.5.4-1] and [MQTT-1.5.4-2].

    Python's strict UTF-8 codec rejects ill-formed sequences, overlong forms and
    encoded surrogates; U+0000 is refused here. U+FEFF is kept ([MQTT-1.5.4-3]).
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedPacket(f"ill-formed UTF-8 string: {exc.reason}") from None
    if "\x00" in text:
        raise MalformedPacket("UTF-8 string contains U+0000")
    return text


class _Cursor:
    """Reads the fields of one packet body front to back; running short is Malformed."""

    __slots__ = ("buf", "pos", "end")

    def __init__(self, buf: bytes | bytearray, pos: int, end: int) -> None:
        self.buf = buf
        self.pos = pos
        self.end = end

    def remaining(self) -> int:
        return self.end - self.pos

    def _take(self, size: int) -> int:
        start = self.pos
        if start + size > self.end:
            raise MalformedPacket("packet shorter than its fields")
        self.pos = start + size
        return start

    def u8(self) -> int:
        return self.buf[self._take(1)]

    def u16(self) -> int:
        return _U16.unpack_from(self.buf, self._take(2))[0]

    def u32(self) -> int:
        return _U32.unpack_from(self.buf, self._take(4))[0]

    def varint(self) -> int:
        value, self.pos = read_varint(self.buf, self.pos, self.end)
        return value

    def binary(self) -> bytes | bytearray:
        size = self.u16()
        start = self._take(size)
        return self.buf[start : start + size]

    def utf8(self) -> str:
        return check_utf8(self.binary())

    def expect_end(self) -> None:
        if self.pos != self.end:
            raise MalformedPacket("unexpected bytes at the end of the packet")


# --------------------------------------------------------------------------- #
# Properties (section 2.2.2)
# --------------------------------------------------------------------------- #

_P = PropertyId
_REASON_AND_USER = frozenset({_P.REASON_STRING, _P.USER_PROPERTY})
WILL_PROPERTIES: Final = "will"
"""Key of ALLOWED_PROPERTIES for the Will Properties of a CONNECT."""

ALLOWED_PROPERTIES: dict[PacketType | str, frozenset[int]] = {
    PacketType.CONNECT: frozenset({
        _P.SESSION_EXPIRY_INTERVAL, _P.AUTHENTICATION_METHOD, _P.AUTHENTICATION_DATA,
        _P.REQUEST_PROBLEM_INFORMATION, _P.REQUEST_RESPONSE_INFORMATION, _P.RECEIVE_MAXIMUM,
        _P.TOPIC_ALIAS_MAXIMUM, _P.USER_PROPERTY, _P.MAXIMUM_PACKET_SIZE,
    }),
    WILL_PROPERTIES: frozenset({
        _P.PAYLOAD_FORMAT_INDICATOR, _P.MESSAGE_EXPIRY_INTERVAL, _P.CONTENT_TYPE,
        _P.RESPONSE_TOPIC, _P.CORRELATION_DATA, _P.WILL_DELAY_INTERVAL, _P.USER_PROPERTY,
    }),
    PacketType.CONNACK: frozenset({
        _P.SESSION_EXPIRY_INTERVAL, _P.ASSIGNED_CLIENT_IDENTIFIER, _P.SERVER_KEEP_ALIVE,
        _P.AUTHENTICATION_METHOD, _P.AUTHENTICATION_DATA, _P.RESPONSE_INFORMATION,
        _P.SERVER_REFERENCE, _P.REASON_STRING, _P.RECEIVE_MAXIMUM, _P.TOPIC_ALIAS_MAXIMUM,
        _P.MAXIMUM_QOS, _P.RETAIN_AVAILABLE, _P.USER_PROPERTY, _P.MAXIMUM_PACKET_SIZE,
        _P.WILDCARD_SUBSCRIPTION_AVAILABLE, _P.SUBSCRIPTION_IDENTIFIER_AVAILABLE,
        _P.SHARED_SUBSCRIPTION_AVAILABLE,
    }),
    PacketType.PUBLISH: frozenset({
        _P.PAYLOAD_FORMAT_INDICATOR, _P.MESSAGE_EXPIRY_INTERVAL, _P.CONTENT_TYPE,
        _P.RESPONSE_TOPIC, _P.CORRELATION_DATA, _P.SUBSCRIPTION_IDENTIFIER, _P.TOPIC_ALIAS,
        _P.USER_PROPERTY,
    }),
    PacketType.PUBACK: _REASON_AND_USER,
    PacketType.PUBREC: _REASON_AND_USER,
    PacketType.PUBREL: _REASON_AND_USER,
    PacketType.PUBCOMP: _REASON_AND_USER,
    PacketType.SUBSCRIBE: frozenset({_P.SUBSCRIPTION_IDENTIFIER, _P.USER_PROPERTY}),
    PacketType.SUBACK: _REASON_AND_USER,
    PacketType.UNSUBSCRIBE: frozenset({_P.USER_PROPERTY}),
    PacketType.UNSUBACK: _REASON_AND_USER,
    PacketType.DISCONNECT: frozenset({
        _P.SESSION_EXPIRY_INTERVAL, _P.SERVER_REFERENCE, _P.REASON_STRING, _P.USER_PROPERTY,
    }),
    PacketType.AUTH: frozenset({
        _P.AUTHENTICATION_METHOD, _P.AUTHENTICATION_DATA, _P.REASON_STRING, _P.USER_PROPERTY,
    }),
}
"""Which properties each packet may carry (the table of section 2.2.2.2)."""

# Properties whose value may only be 0 or 1 (each one's section says "It is a
# Protocol Error to include ... any value other than 0 or 1").
_ZERO_OR_ONE: Final = frozenset({
    _P.PAYLOAD_FORMAT_INDICATOR, _P.REQUEST_PROBLEM_INFORMATION, _P.REQUEST_RESPONSE_INFORMATION,
    _P.MAXIMUM_QOS, _P.RETAIN_AVAILABLE, _P.WILDCARD_SUBSCRIPTION_AVAILABLE,
    _P.SUBSCRIPTION_IDENTIFIER_AVAILABLE, _P.SHARED_SUBSCRIPTION_AVAILABLE,
})
# Properties for which the value 0 is a Protocol Error.
_NOT_ZERO: Final = frozenset({_P.RECEIVE_MAXIMUM, _P.MAXIMUM_PACKET_SIZE, _P.SUBSCRIPTION_IDENTIFIER})

_READERS: dict[PropertyType, Callable[[_Cursor], Any]] = {
    PropertyType.BYTE: _Cursor.u8,
    PropertyType.TWO_BYTE_INT: _Cursor.u16,
    PropertyType.FOUR_BYTE_INT: _Cursor.u32,
    PropertyType.VARINT: _Cursor.varint,
    PropertyType.UTF8: _Cursor.utf8,
    PropertyType.BINARY: _Cursor.binary,
    PropertyType.UTF8_PAIR: lambda cursor: (cursor.utf8(), cursor.utf8()),
}
# property id byte -> (field name, reader)
_PROPERTY_READERS = {int(pid): (name, _READERS[kind]) for pid, (name, kind) in PROPERTY_TABLE.items()}


def _read_properties(cursor: _Cursor, context: PacketType | str) -> Properties:
    """Read a Property Length and the properties after it, checking section 2.2.2.

    A property the packet may not carry, or one given twice (other than User
    Property, and Subscription Identifier in PUBLISH) is a Protocol Error; an
    unknown identifier is Malformed. Reading is linear in the number of properties.
    """
    length = cursor.varint()
    if length == 0:
        return NO_PROPERTIES
    end = cursor.pos + length
    if end > cursor.end:
        raise MalformedPacket("property length runs past the end of the packet")
    allowed = ALLOWED_PROPERTIES[context]
    outer_end, cursor.end = cursor.end, end
    values: dict[str, Any] = {}
    user_properties: list[tuple[str, str]] = []
    subscription_identifiers: list[int] = []
    while cursor.pos < end:
        pid = cursor.u8()
        entry = _PROPERTY_READERS.get(pid)
        if entry is None:
            raise MalformedPacket(f"unknown property identifier 0x{pid:02X}")
        if pid not in allowed:
            raise ProtocolError(f"property 0x{pid:02X} not allowed in {_context_name(context)}")
        name, read = entry
        value = read(cursor)
        if pid == _P.USER_PROPERTY:
            user_properties.append(value)
            continue
        _check_property_value(pid, value)
        if pid == _P.SUBSCRIPTION_IDENTIFIER:
            if subscription_identifiers and context != PacketType.PUBLISH:
                raise ProtocolError("subscription identifier given more than once")
            subscription_identifiers.append(value)
            continue
        if name in values:
            raise ProtocolError(f"property 0x{pid:02X} given more than once")
        values[name] = value
    cursor.end = outer_end
    if user_properties:
        values["user_properties"] = tuple(user_properties)
    if subscription_identifiers:
        values["subscription_identifiers"] = tuple(subscription_identifiers)
    if "authentication_data" in values and "authentication_method" not in values:
        raise ProtocolError("authentication data without an authentication method")
    return _new_properties(values)


def _compile_new_properties() -> Callable[[dict[str, Any]], Properties]:
    """``Properties(**values)`` without the frozen dataclass ``__init__``, whose
    ``object.__setattr__`` a field cost 39,539 instructions for one property (27 fields; each
    MQTT 5 packet with properties makes one): a function of one plain store a field, written
    out here from the dataclass's fields (as dataclasses writes ``__init__``), 12,422."""
    lines = ["def new_properties(values):", "    packet = _new(_PropertiesBuilder)", "    get = values.get"]
    for field in fields(Properties):   # (the defaults are None and (), written as they are)
        lines.append(f"    packet.{field.name} = get({field.name!r}, {field.default!r})")
    lines += ["    packet.__class__ = Properties", "    return packet"]
    namespace: dict[str, Any] = {"_new": object.__new__, "_PropertiesBuilder": PropertiesBuilder, "Properties": Properties}
    exec("\n".join(lines), namespace)
    return namespace["new_properties"]  # type: ignore[no-any-return]


_new_properties = _compile_new_properties()


def _check_property_value(pid: int, value: Any) -> None:
    if pid in _ZERO_OR_ONE and value > 1:
        raise ProtocolError(f"property 0x{pid:02X} must be 0 or 1, got {value}")
    if pid in _NOT_ZERO and value == 0:
        raise ProtocolError(f"property 0x{pid:02X} must not be 0")
    if pid == _P.TOPIC_ALIAS and value == 0:
        raise TopicAliasInvalid("topic alias 0 [MQTT-3.3.2-8]")
    if pid == _P.RESPONSE_TOPIC and ("+" in value or "#" in value or not value):
        raise ProtocolError("response topic must be a topic name [MQTT-3.3.2-14]")


def _context_name(context: PacketType | str) -> str:
    return context.name if isinstance(context, PacketType) else "will properties"


def _encode_utf8(text: str) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) > 65535:
        raise ValueError("string longer than 65535 bytes")
    return _U16.pack(len(raw)) + raw


def _encode_binary(data: bytes) -> bytes:
    if len(data) > 65535:
        raise ValueError("binary data longer than 65535 bytes")
    return _U16.pack(len(data)) + bytes(data)


_WRITERS: dict[PropertyType, Callable[[Any], bytes]] = {
    PropertyType.BYTE: lambda value: bytes((value,)),
    PropertyType.TWO_BYTE_INT: _U16.pack,
    PropertyType.FOUR_BYTE_INT: _U32.pack,
    PropertyType.VARINT: encode_varint,
    PropertyType.UTF8: _encode_utf8,
    PropertyType.BINARY: _encode_binary,
    PropertyType.UTF8_PAIR: lambda pair: _encode_utf8(pair[0]) + _encode_utf8(pair[1]),
}
# (field name, id byte, writer, repeated) in table order
_PROPERTY_WRITERS = [
    (name, bytes((pid,)), _WRITERS[kind], name in ("user_properties", "subscription_identifiers"))
    for pid, (name, kind) in PROPERTY_TABLE.items()
]


def encode_properties(properties: Properties) -> bytes:
    """Property Length plus properties; b"\\x00" when there are none ([MQTT-2.2.2-1])."""
    if properties is NO_PROPERTIES:
        return b"\x00"
    parts = []
    for name, pid, write, repeated in _PROPERTY_WRITERS:
        value = getattr(properties, name)
        if repeated:
            for item in value:
                parts.append(pid)
                parts.append(write(item))
        elif value is not None:
            parts.append(pid)
            parts.append(write(value))
    body = b"".join(parts)
    return encode_varint(len(body)) + body


# --------------------------------------------------------------------------- #
# Reason codes each packet may carry (section 2.4 and each packet's section)
# --------------------------------------------------------------------------- #

_CONNACK_CODES = frozenset({
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90,
    0x95, 0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
})
_PUBACK_CODES = frozenset({0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99})
_PUBREL_CODES = frozenset({0x00, 0x92})
_SUBACK_CODES = frozenset({0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2})
_SUBACK_CODES_311 = frozenset({0x00, 0x01, 0x02, 0x80})
_UNSUBACK_CODES = frozenset({0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91})
_DISCONNECT_CODES = frozenset({
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93,
    0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
})
_AUTH_CODES = frozenset({0x00, 0x18, 0x19})
_311_TO_V5_CONNACK = {0x00: 0x00, 0x01: 0x84, 0x02: 0x85, 0x03: 0x88, 0x04: 0x86, 0x05: 0x87}


def _check_reason(code: int, allowed: frozenset[int], packet: str) -> int:
    if code not in allowed:
        raise ProtocolError(f"reason code 0x{code:02X} is not defined for {packet}")
    return code


# --------------------------------------------------------------------------- #
# Decoding
# --------------------------------------------------------------------------- #

# The flags (low nibble of byte 1) each packet type must carry ([MQTT-2.1.3-1]);
# PUBLISH has its own flags and is absent here.
_REQUIRED_FLAGS: dict[int, int] = {t: 0 for t in PacketType}
_REQUIRED_FLAGS.update({PacketType.PUBREL: 2, PacketType.SUBSCRIBE: 2, PacketType.UNSUBSCRIBE: 2})
del _REQUIRED_FLAGS[PacketType.PUBLISH]


def decode_publish(
    first_byte: int, buf: bytes | bytearray, pos: int, end: int, version: int, raw: bytes | memoryview | None
) -> Publish:
    """Decode a PUBLISH whose body is ``buf[pos:end]`` (section 3.3).

    Written flat for speed: this runs once per inbound message.
    """
    qos = (first_byte >> 1) & 3
    if qos == 3:
        raise MalformedPacket("PUBLISH with QoS 3 [MQTT-3.3.1-4]")
    dup = first_byte & 8 == 8
    if dup and not qos:
        raise MalformedPacket("QoS 0 PUBLISH with DUP set [MQTT-3.3.1-2]")
    if end - pos < 2:
        raise MalformedPacket("PUBLISH too short for its topic name")
    topic_end = pos + 2 + ((buf[pos] << 8) | buf[pos + 1])
    if topic_end > end:
        raise MalformedPacket("topic name runs past the end of the PUBLISH")
    try:
        topic = buf[pos + 2 : topic_end].decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedPacket("topic name is ill-formed UTF-8 [MQTT-1.5.4-1]") from None
    if "+" in topic or "#" in topic:
        raise ProtocolError("wildcard in a topic name [MQTT-3.3.2-2]", reason_code=_TOPIC_NAME_INVALID)
    if "\x00" in topic:
        raise MalformedPacket("U+0000 in a topic name [MQTT-1.5.4-2]")
    pos = topic_end
    packet_id = None
    if qos:
        if end - pos < 2:
            raise MalformedPacket("PUBLISH too short for its packet identifier")
        packet_id = (buf[pos] << 8) | buf[pos + 1]
        if packet_id == 0:
            raise ProtocolError("PUBLISH with packet identifier 0 [MQTT-2.2.1-3]")
        pos += 2
    properties = NO_PROPERTIES
    if version == MQTT_5:
        if pos < end and buf[pos] == 0:
            pos += 1
        else:
            cursor = _Cursor(buf, pos, end)
            properties = _read_properties(cursor, PacketType.PUBLISH)
            pos = cursor.pos
        if not topic and properties.topic_alias is None:
            raise ProtocolError("empty topic name without a topic alias")
    elif not topic:
        raise ProtocolError("empty topic name [MQTT-4.7.3-1]", reason_code=_TOPIC_NAME_INVALID)
    # a memoryview ``raw`` (a large packet) gives a view of the payload, not a copy
    payload = raw[len(raw) - (end - pos):] if type(raw) is memoryview else buf[pos:end]
    return new_publish(topic, payload, qos, first_byte & 1 == 1, dup, packet_id, properties, raw)


_SHORT: Final = "packet shorter than its fields"
_MQTT_LEVELS: Final = {b"\x00\x04MQTT\x04": MQTT_3_1_1, b"\x00\x04MQTT\x05": MQTT_5}
"""The Protocol Name and Level of MQTT 3.1.1 and 5 CONNECTs, as they start the variable header."""
_CONNECT: Final = PacketType.CONNECT   # (a module global: an enum member costs an attribute lookup on its class)


def _field_end(buf: bytes, pos: int, end: int) -> int:
    """Where the string or binary data whose 2-byte length is at ``buf[pos]`` ends (sections
    1.5.4, 1.5.6); Malformed if it runs past ``end``."""
    stop = pos + 2
    if stop > end or (stop := stop + (buf[pos] << 8 | buf[pos + 1])) > end:
        raise MalformedPacket(_SHORT)
    return stop


def _properties_at(buf: bytes | bytearray, pos: int, end: int, context: PacketType | str) -> tuple[Properties, int]:
    """The properties at ``buf[pos]`` and the position after them; a Property Length of 0, the
    usual case, is the shared NO_PROPERTIES without a cursor."""
    if pos < end and not buf[pos]:
        return NO_PROPERTIES, pos + 1
    cursor = _Cursor(buf, pos, end)
    return _read_properties(cursor, context), cursor.pos


def decode_connect(buf: bytes, pos: int, end: int) -> Connect:
    """CONNECT (section 3.1) from ``buf[pos:end]``; the version comes from the packet itself.

    Written flat, in one pass, and the Connect built by packets.new_connect (ConnectBuilder): each
    client of a connection storm sends one, and the plain way (a ``_Cursor`` method a field,
    the dataclass ``__init__``) cost 46,549 instructions for the storm's CONNECT, this way
    13,841 (callgrind, decode_at). tests/protocol/test_connect_decoding.py holds it to that
    plain decoder for any bytes. The reader calls it for a connection's first CONNECT.
    """
    level = _MQTT_LEVELS.get(buf[pos : pos + 7]) if end - pos >= 7 else None
    if level is not None:   # MQTT 3.1.1 or 5: the name and level known at once
        protocol_name = "MQTT"
        pos += 7
    else:
        stop = _field_end(buf, pos, end)
        protocol_name = check_utf8(buf[pos + 2 : stop])
        if stop == end:
            raise MalformedPacket(_SHORT)
        level = buf[stop]
        pos = stop + 1
        if (protocol_name, level) not in _PROTOCOLS:
            error = UnsupportedProtocolVersion(f"protocol {protocol_name!r} level {level} not supported")
            error.protocol_version = level  # type: ignore[attr-defined]
            raise error
    try:
        if pos == end:
            raise MalformedPacket(_SHORT)
        flags = buf[pos]
        if flags & 0x01:
            raise MalformedPacket("CONNECT reserved flag is set [MQTT-3.1.2-3]")
        will_qos = (flags >> 3) & 3
        if not flags & 0x04 and flags & 0x38:
            raise MalformedPacket("will QoS/retain set without a will [MQTT-3.1.2-11] [MQTT-3.1.2-13]")
        if will_qos == 3:
            raise MalformedPacket("will QoS 3 [MQTT-3.1.2-12]")
        if level != MQTT_5 and flags & 0xC0 == 0x40:
            raise MalformedPacket("password without a user name (3.1.1 [MQTT-3.1.2-22])")
        if pos + 3 > end:
            raise MalformedPacket(_SHORT)
        clean_start = flags & 0x02 == 0x02
        keep_alive = buf[pos + 1] << 8 | buf[pos + 2]
        pos += 3
        properties = NO_PROPERTIES
        if level == MQTT_5:
            properties, pos = _properties_at(buf, pos, end, _CONNECT)
        stop = _field_end(buf, pos, end)
        client_id = check_utf8(buf[pos + 2 : stop])
        pos = stop
        will = None
        if flags & 0x04:
            will_properties = NO_PROPERTIES
            if level == MQTT_5:
                will_properties, pos = _properties_at(buf, pos, end, WILL_PROPERTIES)
            stop = _field_end(buf, pos, end)
            will_topic = check_utf8(buf[pos + 2 : stop])
            validate_topic_name(will_topic)
            pos = _field_end(buf, stop, end)
            will = Will(will_topic, buf[stop + 2 : pos], will_qos, flags & 0x20 == 0x20, will_properties)
        username = None
        if flags & 0x80:
            stop = _field_end(buf, pos, end)
            username = check_utf8(buf[pos + 2 : stop])
            pos = stop
        password = None
        if flags & 0x40:
            stop = _field_end(buf, pos, end)
            password = buf[pos + 2 : stop]
            pos = stop
        if pos != end:
            raise MalformedPacket("unexpected bytes at the end of the packet")
    except KushiError as error:
        # Tell the broker which version to answer in, although no CONNECT was decoded.
        if not hasattr(error, "protocol_version"):
            error.protocol_version = level  # type: ignore[attr-defined]
        raise
    return new_connect(protocol_name, level, clean_start, keep_alive, properties, client_id, will,
                       username, password)


def _decode_connack(cursor: _Cursor, version: int) -> Connack:
    flags = cursor.u8()
    if flags & 0xFE:
        raise MalformedPacket("CONNACK reserved flags are set [MQTT-3.2.2-1]")
    code = cursor.u8()
    if version == MQTT_5:
        _check_reason(code, _CONNACK_CODES, "CONNACK")
        properties = _read_properties(cursor, PacketType.CONNACK)
    else:
        if code not in _311_TO_V5_CONNACK:
            raise MalformedPacket(f"CONNACK return code 0x{code:02X} is not defined")
        code = _311_TO_V5_CONNACK[code]
        properties = NO_PROPERTIES
    cursor.expect_end()
    return Connack(session_present=flags == 1, reason_code=code, properties=properties)


def _packet_id(cursor: _Cursor, packet: str) -> int:
    packet_id = cursor.u16()
    if packet_id == 0:
        raise ProtocolError(f"{packet} with packet identifier 0 [MQTT-2.2.1-3]")
    return packet_id


def _decode_ack(cursor: _Cursor, version: int, cls: Any, codes: frozenset[int]) -> Packet:
    """PUBACK, PUBREC, PUBREL, PUBCOMP: packet id, then (v5) optional reason and properties."""
    packet_id = cursor.u16()
    code = 0
    properties = NO_PROPERTIES
    if version == MQTT_5 and cursor.remaining():
        code = _check_reason(cursor.u8(), codes, cls.__name__.upper())
        if cursor.remaining():
            properties = _read_properties(cursor, cls.type)
    cursor.expect_end()
    return cls(packet_id, code, properties)


def _decode_subscribe(cursor: _Cursor, version: int) -> Subscribe:
    packet_id = _packet_id(cursor, "SUBSCRIBE")
    properties = NO_PROPERTIES
    if version == MQTT_5:
        properties = _read_properties(cursor, PacketType.SUBSCRIBE)
    reserved_mask = 0xC0 if version == MQTT_5 else 0xFC
    subscriptions = []
    while cursor.remaining():
        topic_filter = cursor.utf8()
        options = cursor.u8()
        if options & reserved_mask:
            raise MalformedPacket("reserved subscription option bits are set [MQTT-3.8.3-5]")
        qos = options & 3
        retain_handling = (options >> 4) & 3
        if version != MQTT_5 and qos == 3:
            raise MalformedPacket("requested QoS 3 (3.1.1 [MQTT-3-8.3-4])")
        if qos == 3:
            raise ProtocolError("subscription maximum QoS 3 (section 3.8.3.1)")
        if retain_handling == 3:
            raise ProtocolError("retain handling 3 (section 3.8.3.1)")
        no_local = options & 4 == 4
        if no_local and topic_filter.startswith("$share/"):
            raise ProtocolError("no local on a shared subscription [MQTT-3.8.3-4]")
        subscriptions.append(Subscription(topic_filter, qos, no_local, options & 8 == 8, retain_handling))
    if not subscriptions:
        raise ProtocolError("SUBSCRIBE without topic filters [MQTT-3.8.3-2]")
    return Subscribe(packet_id, tuple(subscriptions), properties)


def _reason_code_list(cursor: _Cursor, allowed: frozenset[int], packet: str) -> tuple[int, ...]:
    """The rest of a SUBACK/UNSUBACK: one reason code per topic filter, at least one."""
    codes = tuple(cursor.buf[cursor.pos : cursor.end])
    if not codes:
        raise ProtocolError(f"{packet} without reason codes")
    for code in codes:
        _check_reason(code, allowed, packet)
    cursor.pos = cursor.end
    return codes


def _decode_suback(cursor: _Cursor, version: int) -> Suback:
    packet_id = cursor.u16()
    allowed = _SUBACK_CODES_311
    properties = NO_PROPERTIES
    if version == MQTT_5:
        allowed = _SUBACK_CODES
        properties = _read_properties(cursor, PacketType.SUBACK)
    return Suback(packet_id, _reason_code_list(cursor, allowed, "SUBACK"), properties)


def _decode_unsubscribe(cursor: _Cursor, version: int) -> Unsubscribe:
    packet_id = _packet_id(cursor, "UNSUBSCRIBE")
    properties = NO_PROPERTIES
    if version == MQTT_5:
        properties = _read_properties(cursor, PacketType.UNSUBSCRIBE)
    filters = []
    while cursor.remaining():
        filters.append(cursor.utf8())
    if not filters:
        raise ProtocolError("UNSUBSCRIBE without topic filters [MQTT-3.10.3-2]")
    return Unsubscribe(packet_id, tuple(filters), properties)


def _decode_unsuback(cursor: _Cursor, version: int) -> Unsuback:
    packet_id = cursor.u16()
    if version != MQTT_5:
        cursor.expect_end()
        return Unsuback(packet_id)
    properties = _read_properties(cursor, PacketType.UNSUBACK)
    return Unsuback(packet_id, _reason_code_list(cursor, _UNSUBACK_CODES, "UNSUBACK"), properties)


def _decode_empty(cursor: _Cursor, cls: type) -> Packet:
    cursor.expect_end()
    return cls()


def _decode_reason_and_properties(
    cursor: _Cursor, version: int, cls: Any, codes: frozenset[int]
) -> Packet:
    """DISCONNECT and AUTH: v5 may omit the reason (0) and then the properties."""
    if version != MQTT_5:
        return _decode_empty(cursor, cls)
    code = 0
    properties = NO_PROPERTIES
    if cursor.remaining():
        code = _check_reason(cursor.u8(), codes, cls.__name__.upper())
        if cursor.remaining():
            properties = _read_properties(cursor, cls.type)
    cursor.expect_end()
    return cls(code, properties)


def _decode_auth(cursor: _Cursor, version: int) -> Packet:
    if version != MQTT_5:
        raise MalformedPacket("packet type 15 is reserved before MQTT 5")
    return _decode_reason_and_properties(cursor, version, Auth, _AUTH_CODES)


_DECODERS: dict[int, Callable[[_Cursor, int], Packet]] = {
    PacketType.CONNACK: _decode_connack,
    PacketType.PUBACK: lambda c, v: _decode_ack(c, v, Puback, _PUBACK_CODES),
    PacketType.PUBREC: lambda c, v: _decode_ack(c, v, Pubrec, _PUBACK_CODES),
    PacketType.PUBREL: lambda c, v: _decode_ack(c, v, Pubrel, _PUBREL_CODES),
    PacketType.PUBCOMP: lambda c, v: _decode_ack(c, v, Pubcomp, _PUBREL_CODES),
    PacketType.SUBSCRIBE: _decode_subscribe,
    PacketType.SUBACK: _decode_suback,
    PacketType.UNSUBSCRIBE: _decode_unsubscribe,
    PacketType.UNSUBACK: _decode_unsuback,
    PacketType.PINGREQ: lambda c, v: _decode_empty(c, Pingreq),
    PacketType.PINGRESP: lambda c, v: _decode_empty(c, Pingresp),
    PacketType.DISCONNECT: lambda c, v: _decode_reason_and_properties(c, v, Disconnect, _DISCONNECT_CODES),
    PacketType.AUTH: _decode_auth,
}


def check_fixed_header_flags(first_byte: int, version: int | None) -> None:
    """Reject packet type 0 and reserved flag bits other than the spec's ([MQTT-2.1.3-1])."""
    packet_type = first_byte >> 4
    if packet_type == 0:
        raise MalformedPacket("packet type 0 is reserved")
    if packet_type == PacketType.PUBLISH:
        return
    flags = first_byte & 0x0F
    if version == MQTT_3_1 and flags & 0x08:
        flags &= 0x07  # MQTT 3.1 let clients set DUP on PUBREL/SUBSCRIBE/UNSUBSCRIBE
    if flags != _REQUIRED_FLAGS[packet_type]:
        raise MalformedPacket(f"invalid fixed header flags 0x{flags:X} for {PacketType(packet_type).name}")


_BODILESS: dict[int, Packet] = {
    PacketType.PINGREQ: Pingreq(),
    PacketType.PINGRESP: Pingresp(),
    PacketType.DISCONNECT: Disconnect(),   # v5: no reason code means 0x00, no properties
}
"""The packets that have no body, each always the same: one frozen instance serves them all
(every client of a connection storm sends a PINGREQ and a DISCONNECT)."""


def decode_at(first_byte: int, buf: bytes | bytearray, pos: int, end: int, version: int | None) -> Packet:
    """Decode the packet whose body is ``buf[pos:end]`` (the reader's entry point)."""
    if first_byte == 0x10:   # CONNECT, whose flags are 0 ([MQTT-2.1.3-1]): the storm's packet
        return decode_connect(buf, pos, end)  # type: ignore[arg-type]
    check_fixed_header_flags(first_byte, version)
    packet_type = first_byte >> 4
    if packet_type == _CONNECT:   # (0x18 in MQTT 3.1, which let clients set DUP)
        return decode_connect(buf, pos, end)  # type: ignore[arg-type]
    if version is None:
        raise ProtocolError("the first packet must be CONNECT [MQTT-3.1.0-1]")
    if packet_type == PacketType.PUBLISH:
        return decode_publish(first_byte, buf, pos, end, version, None)
    if pos == end and packet_type in _BODILESS:
        return _BODILESS[packet_type]
    return _DECODERS[packet_type](_Cursor(buf, pos, end), version)


def decode(first_byte: int, body: bytes | memoryview, version: int | None) -> Packet:
    """Decode one packet from its first byte and the bytes after its Remaining Length.

    ``version`` may be None only for a CONNECT (which carries its own version).
    Raises MalformedPacket, ProtocolError (or a subclass), UnsupportedProtocolVersion.
    """
    if not isinstance(body, bytes):
        body = bytes(body)
    return decode_at(first_byte, body, 0, len(body), version)


# --------------------------------------------------------------------------- #
# Encoding
# --------------------------------------------------------------------------- #


def _frame(first_byte: int, body: bytes) -> bytes:
    """Fixed header (type/flags byte + Remaining Length) followed by the body."""
    return bytes((first_byte,)) + encode_varint(len(body)) + body


def _encode_publish(packet: Publish, version: int) -> bytes:
    """PUBLISH, written flat: it is encoded once per wire form of each message."""
    topic = packet.topic.encode("utf-8")
    qos = packet.qos
    first_byte = 0x30 | (qos << 1) | (8 if packet.dup else 0) | (1 if packet.retain else 0)
    header = _pack_u16(len(topic)) + topic
    if qos:
        header += _pack_u16(packet.packet_id or 0)
    if version == MQTT_5:
        properties = packet.properties
        header += b"\x00" if properties is NO_PROPERTIES else encode_properties(properties)
    payload = packet.payload
    remaining = len(header) + len(payload)
    length = _BYTE[remaining] if remaining < 128 else encode_varint(remaining)
    return b"".join((_BYTE[first_byte], length, header, payload))


def _encode_connect(packet: Connect, version: int) -> bytes:
    """CONNECT; the level written is packet.protocol_version, the layout that of ``version``.

    A Connect with protocol_version 3 and the default name "MQTT" is written with
    the 3.1 name "MQIsdp", so ``Connect(protocol_version=3)`` means MQTT 3.1.
    """
    name = packet.protocol_name
    if packet.protocol_version == MQTT_3_1 and name == "MQTT":
        name = "MQIsdp"
    will = packet.will
    flags = (
        (0x02 if packet.clean_start else 0)
        | (0x80 if packet.username is not None else 0)
        | (0x40 if packet.password is not None else 0)
    )
    if will is not None:
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
    parts = [_encode_utf8(name), bytes((packet.protocol_version, flags)), _U16.pack(packet.keep_alive)]
    if version == MQTT_5:
        parts.append(encode_properties(packet.properties))
    parts.append(_encode_utf8(packet.client_id))
    if will is not None:
        if version == MQTT_5:
            parts.append(encode_properties(will.properties))
        parts.append(_encode_utf8(will.topic))
        parts.append(_encode_binary(will.payload))
    if packet.username is not None:
        parts.append(_encode_utf8(packet.username))
    if packet.password is not None:
        parts.append(_encode_binary(packet.password))
    return _frame(0x10, b"".join(parts))


def _encode_connack(packet: Connack, version: int) -> bytes:
    if version == MQTT_5:
        body = bytes((1 if packet.session_present else 0, packet.reason_code))
        return _frame(0x20, body + encode_properties(packet.properties))
    # MQTT 3.1 has no session present flag (the byte is reserved).
    session_present = 1 if packet.session_present and version != MQTT_3_1 else 0
    return _frame(0x20, bytes((session_present, v5_to_311_connack(packet.reason_code))))


def _encode_ack(packet: Puback | Pubrec | Pubrel | Pubcomp, version: int) -> bytes:
    """Shortest form: no reason and no properties when reason is 0 and there are none."""
    first_byte = 0x62 if packet.type == PacketType.PUBREL else packet.type << 4
    body = _U16.pack(packet.packet_id)
    if version == MQTT_5:
        if packet.properties is not NO_PROPERTIES and packet.properties != NO_PROPERTIES:
            body += bytes((packet.reason_code,)) + encode_properties(packet.properties)
        elif packet.reason_code:
            body += bytes((packet.reason_code,))
    return _frame(first_byte, body)


def _encode_subscribe(packet: Subscribe, version: int) -> bytes:
    parts = [_U16.pack(packet.packet_id)]
    if version == MQTT_5:
        parts.append(encode_properties(packet.properties))
    for subscription in packet.subscriptions:
        options = subscription.qos
        if version == MQTT_5:
            options |= (
                (4 if subscription.no_local else 0)
                | (8 if subscription.retain_as_published else 0)
                | (subscription.retain_handling << 4)
            )
        parts.append(_encode_utf8(subscription.filter))
        parts.append(bytes((options,)))
    return _frame(0x82, b"".join(parts))


def _encode_suback(packet: Suback, version: int) -> bytes:
    codes = packet.reason_codes
    if version == MQTT_5:
        body = _U16.pack(packet.packet_id) + encode_properties(packet.properties) + bytes(codes)
    else:
        # 3.1.1 knows only granted QoS 0-2 and failure 0x80 ([MQTT-3.9.3-2] of 3.1.1).
        body = _U16.pack(packet.packet_id) + bytes(code if code < 0x80 else 0x80 for code in codes)
    return _frame(0x90, body)


def _encode_unsubscribe(packet: Unsubscribe, version: int) -> bytes:
    parts = [_U16.pack(packet.packet_id)]
    if version == MQTT_5:
        parts.append(encode_properties(packet.properties))
    parts.extend(_encode_utf8(topic_filter) for topic_filter in packet.filters)
    return _frame(0xA2, b"".join(parts))


def _encode_unsuback(packet: Unsuback, version: int) -> bytes:
    body = _U16.pack(packet.packet_id)
    if version == MQTT_5:
        body += encode_properties(packet.properties) + bytes(packet.reason_codes)
    return _frame(0xB0, body)


def _encode_reason_and_properties(packet: Disconnect | Auth, version: int) -> bytes:
    """DISCONNECT and AUTH: empty body for reason 0 without properties (and always before v5)."""
    first_byte = packet.type << 4
    if version != MQTT_5:
        if packet.type == PacketType.AUTH:
            raise ValueError("AUTH exists only in MQTT 5")
        return bytes((first_byte, 0))
    if packet.properties is not NO_PROPERTIES and packet.properties != NO_PROPERTIES:
        return _frame(first_byte, bytes((packet.reason_code,)) + encode_properties(packet.properties))
    if packet.reason_code:
        return bytes((first_byte, 1, packet.reason_code))
    return bytes((first_byte, 0))


_ENCODERS: dict[type, Callable[[Any, int], bytes]] = {
    Connect: _encode_connect,
    Connack: _encode_connack,
    Publish: _encode_publish,
    Puback: _encode_ack,
    Pubrec: _encode_ack,
    Pubrel: _encode_ack,
    Pubcomp: _encode_ack,
    Subscribe: _encode_subscribe,
    Suback: _encode_suback,
    Unsubscribe: _encode_unsubscribe,
    Unsuback: _encode_unsuback,
    Pingreq: lambda packet, version: b"\xc0\x00",
    Pingresp: lambda packet, version: b"\xd0\x00",
    Disconnect: _encode_reason_and_properties,
    Auth: _encode_reason_and_properties,
}


def encode(packet: Packet, version: int) -> bytes:
    """The full bytes of ``packet`` (fixed header included) in the wire form of ``version``.

    Fields the version has no room for (properties and reason codes before v5)
    are left out. Raises ValueError for values that cannot be written at all.
    """
    if type(packet) is Publish:  # the hot path skips the table
        return _encode_publish(packet, version)
    return _ENCODERS[type(packet)](packet, version)
