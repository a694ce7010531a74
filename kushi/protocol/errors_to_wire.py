"""The one place that turns an error into the packet reporting it (MQTT 4.13).

Before the CONNACK was sent, an error is reported in the CONNACK itself (a v5
server sends no DISCONNECT before a successful CONNACK, [MQTT-3.14.0-1]); after
it, v5 clients get a DISCONNECT and 3.1/3.1.1 clients just see the connection
close (they have no server DISCONNECT). Either way the connection is then closed.

MQTT 3.1.1 has six CONNACK return codes only: errors that none of them fits,
notably a malformed CONNECT, close the connection without a CONNACK
(3.1.1 [MQTT-3.1.4-1], [MQTT-3.2.2-6]).
"""

from __future__ import annotations

from kushi.errors import (
    ClientIdentifierNotValid,
    ConnectRefused,
    KushiError,
    ProtocolError,
    ServerShuttingDown,
    UnsupportedProtocolVersion,
    UseAnotherServer,
)

from .packets import MQTT_3_1_1, MQTT_5, Connack, Disconnect
from .properties import Properties
from .reason_codes import ReasonCode

__all__ = ["error_packet", "reply_version"]

_CONNACK_CODES = frozenset({
    0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90,
    0x95, 0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
})
_DISCONNECT_CODES = frozenset({
    0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95,
    0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
})
# Errors a 3.1/3.1.1 CONNACK return code can express (the others close silently).
_REPORTED_IN_311_CONNACK = (
    UnsupportedProtocolVersion, ClientIdentifierNotValid, ConnectRefused, ServerShuttingDown, UseAnotherServer,
)


def reply_version(error: KushiError, version: int | None) -> int:
    """The protocol version in which to encode the answer to ``error``.

    ``version`` is what the connection knows (None before a CONNECT was decoded).
    An error raised while decoding a CONNECT carries the CONNECT's level as
    ``error.protocol_version``; an unsupported level other than 5 is answered in
    the 3.1.1 form (return code 0x01), which 3.1 clients read the same way.
    """
    if version is not None:
        return version
    level = getattr(error, "protocol_version", None)
    if level == MQTT_5:
        return MQTT_5
    if level in (3, 4) and not isinstance(error, UnsupportedProtocolVersion):
        return level
    return MQTT_3_1_1


def _v5_code(error: KushiError, allowed: frozenset[int]) -> int:
    """The error's reason code if the packet may carry it, else the nearest one it may."""
    code = error.reason_code
    if code in allowed:
        return code
    if isinstance(error, ProtocolError):
        return ReasonCode.PROTOCOL_ERROR
    if isinstance(error, ServerShuttingDown) or code == ReasonCode.SERVER_SHUTTING_DOWN:
        return ReasonCode.SERVER_UNAVAILABLE
    return ReasonCode.UNSPECIFIED_ERROR


def error_packet(
    error: KushiError, version: int, connack_sent: bool, reason_string: str | None = None
) -> Connack | Disconnect | None:
    """The CONNACK or DISCONNECT reporting ``error``, or None: just close.

    ``version`` is the version the answer is encoded in (see ``reply_version``).
    The CONNACK carries a v5 reason code; the codec maps it to the 3.1.1 return
    code. ``reason_string`` (v5 only) goes into the Reason String property.
    """
    properties = Properties(reason_string=reason_string) if reason_string and version == MQTT_5 else None
    if version == MQTT_5:
        if connack_sent:
            code = _v5_code(error, _DISCONNECT_CODES)
            return Disconnect(code, properties) if properties else Disconnect(code)
        code = _v5_code(error, _CONNACK_CODES)
        return Connack(False, code, properties) if properties else Connack(False, code)
    if connack_sent or not isinstance(error, _REPORTED_IN_311_CONNACK):
        return None
    return Connack(False, error.reason_code)
