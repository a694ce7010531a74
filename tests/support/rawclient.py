"""A raw-socket MQTT client for the packets a real client library will not send.

It encodes packets with ``kushi.protocol.codec.encode`` (or sends any bytes you
give it, for malformed input) and decodes what the broker answers with
``kushi.protocol.reader.PacketReader``. Every wait has a timeout; nothing sleeps.
The decoder refuses reason codes a packet may not carry, so every packet a test
receives through this client is also checked against the tables of defined
reason codes ([MQTT-3.2.2-8] [MQTT-3.4.2-1] [MQTT-3.5.2-1] [MQTT-3.6.2-1]
[MQTT-3.7.2-1] [MQTT-3.9.3-2] [MQTT-3.11.3-2] [MQTT-3.14.2-1] [MQTT-3.15.2-1]).

Helpers at the bottom build wire fragments by hand (``frame``, ``mqtt_string``,
``varint``) for packets the codec refuses to produce.
"""

from __future__ import annotations

import errno
import socket
import time
from collections.abc import Collection
from typing import Any

from kushi.protocol.codec import encode
from kushi.protocol.packets import (
    MQTT_3_1,
    MQTT_5,
    Connack,
    Connect,
    Disconnect,
    Packet,
)
from kushi.protocol.reader import PacketReader

DEFAULT_TIMEOUT = 2.0


class ConnectionClosed(AssertionError):
    """The server closed the connection while the test waited for a packet."""


class NoPacket(AssertionError):
    """No packet arrived before the timeout (the connection is still open)."""


class RawClient:
    """One TCP connection to the broker, speaking MQTT ``version`` (3, 4 or 5)."""

    def __init__(self, host: str, port: int, version: int = MQTT_5) -> None:
        self.sock = socket.create_connection((host, port), timeout=DEFAULT_TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = PacketReader()
        self.version = version
        self.closed_by_server = False

    # ---- version ---------------------------------------------------------
    @property
    def version(self) -> int:
        return self._version

    @version.setter
    def version(self, value: int) -> None:
        self._version = value
        self.reader.version = value

    # ---- sending ---------------------------------------------------------
    def send(self, packet: Packet | bytes | bytearray) -> None:
        """Send a packet (encoded for this client's version) or raw bytes."""
        data = packet if isinstance(packet, (bytes, bytearray)) else encode(packet, self.version)
        self.sock.sendall(data)

    def connect(self, client_id: str = "", version: int | None = None, **fields: Any) -> Packet:
        """Send a CONNECT (``fields`` are ``Connect`` fields) and return the broker's answer.

        The answer is normally a Connack; whatever packet comes first is returned
        so that a test can assert it is a Connack.
        """
        if version is not None:
            self.version = version
        if self.version == MQTT_3_1:
            fields.setdefault("protocol_name", "MQIsdp")
        self.send(Connect(protocol_version=self.version, client_id=client_id, **fields))
        return self.recv_packet()

    def connect_ok(self, client_id: str = "", version: int | None = None, **fields: Any) -> Connack:
        """``connect`` and assert the CONNACK accepted the connection."""
        connack = self.connect(client_id, version, **fields)
        assert isinstance(connack, Connack), f"expected CONNACK, got {connack!r}"
        assert connack.reason_code == 0, f"connection refused: {connack!r}"
        return connack

    # ---- receiving -------------------------------------------------------
    def recv_packet(self, timeout: float = DEFAULT_TIMEOUT) -> Packet:
        """The next packet from the broker; fails the test after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            packet = self.reader.next_packet()
            if packet is not None:
                return packet
            data = self._recv(deadline)
            if data is None:
                raise NoPacket(f"no packet from the broker within {timeout} s")
            if not data:
                self.closed_by_server = True
                raise ConnectionClosed("the broker closed the connection instead of sending a packet")
            self.reader.feed(data)

    def recv_bytes(self, count: int, timeout: float = DEFAULT_TIMEOUT) -> bytes:
        """Exactly ``count`` raw bytes (bypassing the packet reader), or fewer if the broker closed."""
        deadline = time.monotonic() + timeout
        chunks = bytearray()
        while len(chunks) < count:
            data = self._recv(deadline, count - len(chunks))
            if not data:
                break
            chunks += data
        return bytes(chunks)

    def expect_closed(self, timeout: float = DEFAULT_TIMEOUT) -> bool:
        """True once the broker closes the connection (EOF or reset) within ``timeout``.

        Packets that arrive before the close are decoded and kept in
        ``self.received_before_close``; a packet that cannot be decoded is ignored.
        """
        deadline = time.monotonic() + timeout
        self.received_before_close: list[Packet] = []
        while True:
            data = self._recv(deadline)
            if data is None:
                return False
            if not data:
                self.closed_by_server = True
                return True
            try:
                self.reader.feed(data)
                while (packet := self.reader.next_packet()) is not None:
                    self.received_before_close.append(packet)
            except Exception:  # noqa: BLE001 - we only wait for the close here
                pass

    def expect_disconnect(self, reason_code: int | Collection[int],
                          timeout: float = DEFAULT_TIMEOUT) -> Disconnect:
        """Assert the broker sends DISCONNECT with ``reason_code`` (or one of several
        acceptable codes, where the spec allows a choice) and then closes."""
        expected = _codes(reason_code)
        packet = self.recv_packet(timeout)
        assert isinstance(packet, Disconnect), f"expected DISCONNECT {expected}, got {packet!r}"
        assert packet.reason_code in reason_code_set(reason_code), (
            f"expected DISCONNECT {expected}, got 0x{packet.reason_code:02X} {packet!r}"
        )
        assert self.expect_closed(timeout), "[MQTT-3.14.4-2] the broker did not close after its DISCONNECT"
        assert self.received_before_close == [], (
            f"[MQTT-3.14.4-1] packets sent after DISCONNECT: {self.received_before_close!r}"
        )
        return packet

    def expect_connack_refusal(self, reason_code: int | Collection[int],
                               timeout: float = DEFAULT_TIMEOUT) -> Connack:
        """Assert the next packet is a CONNACK with ``reason_code`` (v5) and the broker closes."""
        expected = _codes(reason_code)
        packet = self.recv_packet(timeout)
        assert isinstance(packet, Connack), f"expected CONNACK {expected}, got {packet!r}"
        assert packet.reason_code in reason_code_set(reason_code), (
            f"expected CONNACK {expected}, got 0x{packet.reason_code:02X}"
        )
        assert not packet.session_present, "[MQTT-3.2.2-6] refused CONNACK must have session present 0"
        assert self.expect_closed(timeout), "[MQTT-3.2.2-7] the broker did not close after refusing"
        assert self.received_before_close == [], (
            f"[MQTT-3.1.4-6] packets sent after a refusing CONNACK: {self.received_before_close!r}"
        )
        return packet

    def _recv(self, deadline: float, size: int = 65536) -> bytes | None:
        """Bytes read before ``deadline``: b"" on EOF or reset, None on timeout."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        self.sock.settimeout(remaining)
        try:
            return self.sock.recv(size)
        except TimeoutError:
            return None
        except ConnectionResetError:
            return b""
        except OSError as error:
            if error.errno in (errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED):
                return b""
            raise

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def reason_code_set(reason_code: int | Collection[int]) -> frozenset[int]:
    """One code or several acceptable ones, as a set."""
    return frozenset([reason_code]) if isinstance(reason_code, int) else frozenset(reason_code)


def _codes(reason_code: int | Collection[int]) -> str:
    return "/".join(f"0x{code:02X}" for code in sorted(reason_code_set(reason_code)))


# ---- hand-built wire fragments ---------------------------------------------

def varint(value: int) -> bytes:
    """A Variable Byte Integer, shortest form (section 1.5.5)."""
    out = bytearray()
    while True:
        byte, value = value % 128, value // 128
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def mqtt_string(text: str | bytes) -> bytes:
    """A two-byte-length-prefixed string; bytes are sent as given (for invalid UTF-8)."""
    data = text.encode() if isinstance(text, str) else text
    return len(data).to_bytes(2, "big") + data


def frame(first_byte: int, body: bytes) -> bytes:
    """A whole packet: fixed header byte, remaining length, body."""
    return bytes([first_byte]) + varint(len(body)) + body


def connect_body(
    client_id: str | bytes = "raw",
    version: int = MQTT_5,
    flags: int = 0x02,
    keep_alive: int = 60,
    properties: bytes = b"",
    payload_tail: bytes = b"",
    protocol_name: str | bytes = "MQTT",
) -> bytes:
    """The body of a CONNECT built by hand (for reserved flags and bad fields).

    ``properties`` is the raw property bytes (v5 only; their length is added);
    ``payload_tail`` follows the client id (will fields, user name, password).
    """
    head = mqtt_string(protocol_name) + bytes([version, flags]) + keep_alive.to_bytes(2, "big")
    if version == MQTT_5:
        head += varint(len(properties)) + properties
    return head + mqtt_string(client_id) + payload_tail
