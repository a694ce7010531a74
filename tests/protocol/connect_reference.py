"""The CONNECT decoder as it was at 0f4c6b7, kept as the oracle the decoder in codec.py is held to.

It reads a CONNECT the plain way, one ``_Cursor`` method a field, and builds the Connect with
its dataclass ``__init__``; codec.py reads it in one flat pass (the connect path of a connection
storm: benchmarks/PROFILE.md). test_connect_decoding.py checks that both give the same Connect,
or the same error class with the same reason code and protocol version, for any bytes.
"""

from __future__ import annotations

from kushi.errors import KushiError, MalformedPacket, UnsupportedProtocolVersion
from kushi.protocol.codec import WILL_PROPERTIES, _Cursor, _read_properties, check_fixed_header_flags
from kushi.protocol.packets import MQTT_5, Connect, PacketType, Will
from kushi.protocol.properties import NO_PROPERTIES
from kushi.protocol.topics import validate_topic_name

PROTOCOLS = {("MQTT", 4), ("MQTT", 5), ("MQIsdp", 3)}


def reference_decode_connect(first_byte: int, body: bytes, version: int | None = None) -> Connect:
    """Decode a CONNECT from its first byte and its body, or raise what 0f4c6b7 raised
    (``version``: the connection's, None before its first CONNECT)."""
    if first_byte >> 4 != PacketType.CONNECT:
        raise ValueError("not a CONNECT")
    check_fixed_header_flags(first_byte, version)
    cursor = _Cursor(body, 0, len(body))
    protocol_name = cursor.utf8()
    level = cursor.u8()
    if (protocol_name, level) not in PROTOCOLS:
        error = UnsupportedProtocolVersion(f"protocol {protocol_name!r} level {level} not supported")
        error.protocol_version = level  # type: ignore[attr-defined]
        raise error
    try:
        return _after_level(cursor, protocol_name, level)
    except KushiError as error:
        if not hasattr(error, "protocol_version"):
            error.protocol_version = level  # type: ignore[attr-defined]
        raise


def _after_level(cursor: _Cursor, protocol_name: str, level: int) -> Connect:
    flags = cursor.u8()
    if flags & 0x01:
        raise MalformedPacket("CONNECT reserved flag is set [MQTT-3.1.2-3]")
    will_flag = flags & 0x04
    will_qos = (flags >> 3) & 3
    will_retain = flags & 0x20 == 0x20
    has_password = flags & 0x40
    has_username = flags & 0x80
    if not will_flag and (will_qos or will_retain):
        raise MalformedPacket("will QoS/retain set without a will [MQTT-3.1.2-11] [MQTT-3.1.2-13]")
    if will_qos == 3:
        raise MalformedPacket("will QoS 3 [MQTT-3.1.2-12]")
    if level != MQTT_5 and has_password and not has_username:
        raise MalformedPacket("password without a user name (3.1.1 [MQTT-3.1.2-22])")
    keep_alive = cursor.u16()
    properties = _read_properties(cursor, PacketType.CONNECT) if level == MQTT_5 else NO_PROPERTIES
    client_id = cursor.utf8()
    will = None
    if will_flag:
        will_properties = NO_PROPERTIES
        if level == MQTT_5:
            will_properties = _read_properties(cursor, WILL_PROPERTIES)
        will_topic = cursor.utf8()
        validate_topic_name(will_topic)
        will = Will(will_topic, cursor.binary(), will_qos, will_retain, will_properties)
    username = cursor.utf8() if has_username else None
    password = cursor.binary() if has_password else None
    cursor.expect_end()
    return Connect(
        protocol_version=level,
        client_id=client_id,
        clean_start=flags & 0x02 == 0x02,
        keep_alive=keep_alive,
        will=will,
        username=username,
        password=password,
        properties=properties,
        protocol_name=protocol_name,
    )
