"""The one error hierarchy of kushi; every error carries its MQTT reason code.

This module is a leaf: it imports nothing of kushi, so the sans-I/O protocol
layer may raise these errors while still importing nothing above it.

    KushiError                      (0x80 Unspecified error)
    ├── ProtocolViolation           errors a peer caused; answered on the wire
    │   ├── MalformedPacket         0x81
    │   ├── ProtocolError           0x82
    │   │   ├── ReceiveMaximumExceeded  0x93
    │   │   └── TopicAliasInvalid   0x94
    │   ├── PacketTooLarge          0x95
    │   ├── UnsupportedProtocolVersion  0x84 (3.1.1: return code 0x01)
    │   └── ClientIdentifierNotValid    0x85 (3.1.1: return code 0x02)
    ├── ConnectRefused              a CONNECT that is understood but refused
    │   ├── BadUsernameOrPassword   0x86 (3.1.1: 0x04)
    │   ├── NotAuthorized           0x87 (3.1.1: 0x05)
    │   ├── ServerUnavailable       0x88 (3.1.1: 0x03)
    │   ├── ServerBusy              0x89 (3.1.1: 0x03)
    │   ├── BadAuthenticationMethod 0x8C (3.1.1: 0x05)
    │   └── QuotaExceeded           0x97
    └── ConnectionClosedByServer    the server ends a healthy connection
        ├── ServerShuttingDown      0x8B
        ├── KeepAliveTimeout        0x8D
        ├── SessionTakenOver        0x8E
        ├── UseAnotherServer        0x9C
        └── AdministrativeAction    0x98

Exactly one function, ``kushi.protocol.errors_to_wire.error_packet``, turns an
error into the CONNACK or DISCONNECT that reports it.
"""

from __future__ import annotations


class KushiError(Exception):
    """Base of every kushi error. ``reason_code`` is the MQTT 5 reason code."""

    reason_code: int = 0x80

    def __init__(self, message: str = "", *, reason_code: int | None = None) -> None:
        super().__init__(message or self.__class__.__name__)
        if reason_code is not None:
            self.reason_code = reason_code


class ProtocolViolation(KushiError):
    """The peer broke the protocol; the connection is ended after reporting it."""


class MalformedPacket(ProtocolViolation):
    reason_code = 0x81


class ProtocolError(ProtocolViolation):
    reason_code = 0x82


class ReceiveMaximumExceeded(ProtocolError):
    reason_code = 0x93


class TopicAliasInvalid(ProtocolError):
    reason_code = 0x94


class PacketTooLarge(ProtocolViolation):
    reason_code = 0x95


class UnsupportedProtocolVersion(ProtocolViolation):
    reason_code = 0x84


class ClientIdentifierNotValid(ProtocolViolation):
    reason_code = 0x85


class ConnectRefused(KushiError):
    """A well-formed CONNECT the server refuses (authentication, limits)."""


class BadUsernameOrPassword(ConnectRefused):
    reason_code = 0x86


class NotAuthorized(ConnectRefused):
    reason_code = 0x87


class ServerUnavailable(ConnectRefused):
    reason_code = 0x88


class ServerBusy(ConnectRefused):
    reason_code = 0x89


class BadAuthenticationMethod(ConnectRefused):
    reason_code = 0x8C


class QuotaExceeded(ConnectRefused):
    reason_code = 0x97


class ConnectionClosedByServer(KushiError):
    """The server ends a connection that did nothing wrong."""


class ServerShuttingDown(ConnectionClosedByServer):
    reason_code = 0x8B


class KeepAliveTimeout(ConnectionClosedByServer):
    reason_code = 0x8D


class SessionTakenOver(ConnectionClosedByServer):
    reason_code = 0x8E


class UseAnotherServer(ConnectionClosedByServer):
    reason_code = 0x9C


class AdministrativeAction(ConnectionClosedByServer):
    reason_code = 0x98


class ConfigurationError(KushiError):
    """Bad configuration given to the server (not an MQTT wire error)."""
