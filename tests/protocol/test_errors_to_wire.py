"""kushi.protocol.errors_to_wire: which CONNACK or DISCONNECT reports an error (4.13)."""

from __future__ import annotations

import pytest

from kushi.errors import (
    BadUsernameOrPassword,
    ClientIdentifierNotValid,
    KeepAliveTimeout,
    KushiError,
    MalformedPacket,
    NotAuthorized,
    PacketTooLarge,
    ProtocolError,
    QuotaExceeded,
    ReceiveMaximumExceeded,
    ServerBusy,
    ServerShuttingDown,
    SessionTakenOver,
    TopicAliasInvalid,
    UnsupportedProtocolVersion,
)
from kushi.protocol.codec import decode, encode
from kushi.protocol.errors_to_wire import error_packet, reply_version
from kushi.protocol.packets import MQTT_3_1, MQTT_3_1_1, MQTT_5, Connack, Disconnect
from kushi.protocol.properties import Properties


def unsupported(level: int) -> UnsupportedProtocolVersion:
    error = UnsupportedProtocolVersion()
    error.protocol_version = level  # as the decoder sets it
    return error


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (MalformedPacket(), 0x81), (ProtocolError(), 0x82), (PacketTooLarge(), 0x95),
        (UnsupportedProtocolVersion(), 0x84), (ClientIdentifierNotValid(), 0x85),
        (BadUsernameOrPassword(), 0x86), (NotAuthorized(), 0x87), (ServerBusy(), 0x89), (QuotaExceeded(), 0x97),
        (ProtocolError(reason_code=0x90), 0x90),
        # codes a CONNACK cannot carry fall back to the nearest one it can ([MQTT-3.2.2-8])
        (TopicAliasInvalid(), 0x82), (ReceiveMaximumExceeded(), 0x82), (ServerShuttingDown(), 0x88),
        (KeepAliveTimeout(), 0x80), (KushiError(), 0x80),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else hex(value),
)
def test_v5_before_connack_the_connack_reports_the_error(error: KushiError, code: int) -> None:
    """[MQTT-3.14.0-1] no DISCONNECT before a CONNACK: the CONNACK carries the code, session present 0."""
    assert error_packet(error, MQTT_5, connack_sent=False) == Connack(False, code)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (MalformedPacket(), 0x81), (ProtocolError(), 0x82), (TopicAliasInvalid(), 0x94),
        (ReceiveMaximumExceeded(), 0x93), (PacketTooLarge(), 0x95), (ServerShuttingDown(), 0x8B),
        (KeepAliveTimeout(), 0x8D), (SessionTakenOver(), 0x8E), (ProtocolError(reason_code=0x8F), 0x8F),
        # not DISCONNECT codes
        (ClientIdentifierNotValid(), 0x80), (UnsupportedProtocolVersion(), 0x80),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else hex(value),
)
def test_v5_after_connack_a_disconnect_reports_the_error(error: KushiError, code: int) -> None:
    """[MQTT-4.13.1-1]"""
    assert error_packet(error, MQTT_5, connack_sent=True) == Disconnect(code)


def test_reason_string_goes_in_the_v5_packet_only() -> None:
    assert error_packet(MalformedPacket(), MQTT_5, True, "bad") == Disconnect(0x81, Properties(reason_string="bad"))
    assert error_packet(NotAuthorized(), MQTT_3_1_1, False, "no") == Connack(False, 0x87)


@pytest.mark.parametrize("version", [MQTT_3_1, MQTT_3_1_1])
@pytest.mark.parametrize("error", [MalformedPacket(), ProtocolError(), ServerShuttingDown(), KeepAliveTimeout()])
def test_v3_after_connack_the_connection_just_closes(version: int, error: KushiError) -> None:
    """3.1.1 [MQTT-4.8.0-1]: a 3.1.1 server sends no DISCONNECT."""
    assert error_packet(error, version, connack_sent=True) is None


@pytest.mark.parametrize(
    ("error", "return_code"),
    [(unsupported(6), 0x01), (ClientIdentifierNotValid(), 0x02), (ServerBusy(), 0x03), (ServerShuttingDown(), 0x03),
     (BadUsernameOrPassword(), 0x04), (NotAuthorized(), 0x05)],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else hex(value),
)
def test_v3_refused_connect_gets_its_return_code(error: KushiError, return_code: int) -> None:
    """3.1.1 [MQTT-3.1.2-2] 0x01, [MQTT-3.1.3-9] 0x02 ..., written by the codec as the 3.1.1 return code."""
    packet = error_packet(error, MQTT_3_1_1, connack_sent=False)
    assert encode(packet, MQTT_3_1_1) == bytes([0x20, 2, 0, return_code])


@pytest.mark.parametrize("error", [MalformedPacket(), ProtocolError(), PacketTooLarge(), KushiError()])
def test_v3_malformed_connect_closes_without_connack(error: KushiError) -> None:
    """3.1.1 [MQTT-3.1.4-1] and [MQTT-3.2.2-6]: no return code fits, so no CONNACK."""
    assert error_packet(error, MQTT_3_1_1, connack_sent=False) is None


def test_unsupported_level_is_answered_in_the_clients_version() -> None:
    """A v5 client gets a v5 CONNACK 0x84; any other level the 3.1.1 form, return code 0x01."""
    assert reply_version(unsupported(5), None) == MQTT_5
    for level in (0, 3, 4, 6, 7):
        assert reply_version(unsupported(level), None) == MQTT_3_1_1
    connack = error_packet(unsupported(6), reply_version(unsupported(6), None), connack_sent=False)
    assert encode(connack, MQTT_3_1_1).hex() == "20020001"
    connack = error_packet(unsupported(5), MQTT_5, connack_sent=False)
    assert encode(connack, MQTT_5).hex() == "2003008400"


def test_reply_version_of_a_bad_connect_is_the_connects_level() -> None:
    with pytest.raises(MalformedPacket) as caught:
        decode(0x10, b"\x00\x04MQTT\x05\x01\x00\x3c\x00\x00\x00", None)  # reserved flag set
    assert reply_version(caught.value, None) == MQTT_5
    assert reply_version(MalformedPacket(), None) == MQTT_3_1_1
    assert reply_version(MalformedPacket(), MQTT_3_1) == MQTT_3_1
