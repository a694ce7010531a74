"""MQTT over WebSocket: an asyncio.Protocol that unwraps WebSocket frames for an MQTT protocol.

The MQTT connection (kushi.worker.connection) reads and writes a byte stream (an
asyncio.BufferedProtocol that also takes ``data_received``, which is what this layer calls). To serve it over WebSocket, ``WebSocketProtocol`` sits between the socket and it:

    socket --> WebSocketProtocol --(frame payloads)--> inner MQTT protocol
    socket <-- WebSocketProtocol <--(one binary frame per write)-- WebSocketTransport <-- inner

Who does what:
- The ``websockets`` library's sans-I/O ``ServerProtocol`` does the opening handshake (HTTP
  upgrade, subprotocol), control frames (ping -> pong, the closing handshake), validation of
  anything unusual (reserved bits, unknown opcodes) and failing the connection with a close code.
- The hot path is here: binary data frames both ways (RFC 6455 section 5.2: a header, a mask
  from the client, none from the server). Through the library a data frame cost 3 to 5 times
  more (generator-based parsing, a Frame object and its checks per frame; measured in-process
  with a stand-in socket). Each frame is split off here and, unless it is a binary or
  continuation frame, handed whole to the library, so the library always sees whole frames and
  never needs to know about the data frames in between.

MQTT rules applied here (MQTT 3.1.1 and 5.0 chapter 6):
- [MQTT-6.0.0-1] only binary frames carry MQTT; a text frame fails the connection (close 1003).
- [MQTT-6.0.0-2] frames are not packets: payloads are handed on in order as one byte stream,
  so a packet may span frames and a frame may hold several packets.
- [MQTT-6.0.0-4] the subprotocol "mqtt" is selected when offered ("mqttv3.1" for old 3.1
  clients). Leniency: a client offering no MQTT subprotocol is still accepted, without a
  ``Sec-WebSocket-Protocol`` answer ([MQTT-6.0.0-3] allows refusing it, it does not require it).
- Any request path is accepted unless the listener names one (the docs use ``/mqtt``).

The inner protocol is created when the TCP connection is accepted, not when the handshake
ends: its connect timeout then also bounds a client that never finishes the handshake, and a
failed handshake looks to it like a client that left before sending CONNECT.

Memory: no permessage-deflate; at most one incomplete frame is buffered, and a frame larger
than ``max_frame_size`` fails the connection (close 1009) from its header alone. Fragmented
messages are never assembled: each fragment goes to the inner protocol as it arrives.
"""

from __future__ import annotations

import asyncio
import http
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any, cast

from websockets.frames import CloseCode
from websockets.http11 import Request
from websockets.protocol import CONNECTING, OPEN
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - the C extension is built for common platforms
    from websockets.utils import apply_mask

__all__ = ["MQTT_SUBPROTOCOLS", "WebSocketProtocol", "WebSocketTransport"]

# In order of preference; "mqttv3.1" is what MQTT 3.1 clients (and some old libraries) offer.
MQTT_SUBPROTOCOLS: tuple[Subprotocol, ...] = (Subprotocol("mqtt"), Subprotocol("mqttv3.1"))


class _ConnectionEventsAtDebug(logging.LoggerAdapter):  # type: ignore[type-arg]
    """websockets logs every connection's open and close at INFO; kushi logs connections at
    DEBUG, so 10,000 WebSocket clients do not mean 20,000 INFO lines."""

    def info(self, msg: object, *args: Any, **kwargs: Any) -> None:
        self.debug(msg, *args, **kwargs)


_LOGGER = _ConnectionEventsAtDebug(logging.getLogger("kushi.websocket"), {})

# First header byte without FIN: the opcode with the reserved bits, which must be 0.
_CONTINUATION, _TEXT, _BINARY = 0x0, 0x1, 0x2
_MASKED = 0x80
_FIN = 0x80
_END_OF_REQUEST = b"\r\n\r\n"


def select_mqtt_subprotocol(
    protocol: ServerProtocol, offered: Sequence[Subprotocol]
) -> Subprotocol | None:
    """Pick "mqtt" (or "mqttv3.1") if the client offers it; else accept without a subprotocol."""
    for name in MQTT_SUBPROTOCOLS:
        if name in offered:
            return name
    return None


def binary_frame_header(length: int) -> bytes:
    """The header of an unmasked, final binary frame of ``length`` bytes (server to client)."""
    if length < 126:
        return bytes((_FIN | _BINARY, length))
    if length < 65536:
        return bytes((_FIN | _BINARY, 126)) + length.to_bytes(2, "big")
    return bytes((_FIN | _BINARY, 127)) + length.to_bytes(8, "big")


class WebSocketProtocol(asyncio.Protocol):
    """Speaks WebSocket on a socket and MQTT bytes to an inner protocol."""

    def __init__(
        self,
        inner_factory: Callable[[], asyncio.BaseProtocol],
        *,
        max_frame_size: int,
        path: str | None = None,
    ) -> None:
        self._inner_factory = inner_factory
        self._path = path
        self._max_frame_size = max_frame_size
        self._ws = ServerProtocol(
            subprotocols=list(MQTT_SUBPROTOCOLS),
            select_subprotocol=select_mqtt_subprotocol,
            max_size=max_frame_size,
            logger=_LOGGER,
        )
        self._closing = False
        self._request_tail = b""  # the last bytes of the request, to find its end across reads
        self._pending = bytearray()  # the start of a frame whose end has not arrived yet
        self._pending_needed = 0  # how many bytes _pending must reach before parsing again
        self._in_fragmented_message = False
        self.request_path: str | None = None
        self.transport: asyncio.Transport | None = None
        self.inner: Any = None

    # -- asyncio.Protocol, called by the socket transport ---------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.inner = self._inner_factory()
        self.inner.connection_made(WebSocketTransport(self))

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return  # after a close frame, data is discarded (RFC 6455 1.4)
        state = self._ws.state
        if state is OPEN:
            self._receive_frames(data)
        elif state is CONNECTING:
            self._receive_request(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._ws.receive_eof()  # idempotent; moves the sans-I/O state to CLOSED
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    # -- used by WebSocketTransport, on behalf of the inner protocol -----------------------------

    def send_binary(self, data: bytes | bytearray | memoryview) -> None:
        """Send ``data`` as one binary frame; dropped unless the connection is open."""
        if self._closing or self._ws.state is not OPEN:
            return
        assert self.transport is not None
        self.transport.write(binary_frame_header(len(data)) + data)

    def send_binary_chunks(self, chunks: list[bytes | bytearray | memoryview]) -> None:
        """Send ``chunks`` as one binary frame without joining them (uvloop writes them with
        one writev); dropped unless the connection is open."""
        if self._closing or self._ws.state is not OPEN:
            return
        assert self.transport is not None
        self.transport.writelines([binary_frame_header(sum(map(len, chunks))), *chunks])

    def close(self) -> None:
        """Send a normal close frame, then close the socket once it is written."""
        if self._closing:
            return
        self._closing = True
        if self._ws.state is OPEN:
            self._ws.send_close(CloseCode.NORMAL_CLOSURE)
            self._send_pending()
        # Not waiting for the client's echo of the close frame: a server may end the
        # TCP connection first (RFC 6455 7.1.1), and no close timer is then needed.
        assert self.transport is not None
        self.transport.close()

    def is_closing(self) -> bool:
        assert self.transport is not None
        return self._closing or self.transport.is_closing()

    @property
    def subprotocol(self) -> str | None:
        return self._ws.subprotocol

    # -- internals --------------------------------------------------------------------------------

    def _receive_request(self, data: bytes) -> None:
        """Give the library the HTTP request only; frames sent right behind it are parsed here."""
        seen = self._request_tail + data
        end = seen.find(_END_OF_REQUEST)
        if end < 0:
            self._request_tail = seen[-3:]
            self._feed_library(data)
            return
        split = end + len(_END_OF_REQUEST) - len(self._request_tail)
        self._feed_library(data[:split])
        if split < len(data):
            self.data_received(data[split:])

    def _receive_frames(self, data: bytes) -> None:
        """Split the stream into frames: binary data to the inner protocol, the rest to the library."""
        if self._pending:
            self._pending += data
            if len(self._pending) < self._pending_needed:
                return
            data, self._pending = self._pending, bytearray()
        view = memoryview(data)
        size, start = len(data), 0
        needed = 0  # how long the incomplete frame at `start` is, once its header is known
        while size - start >= 2:
            first, second = data[start], data[start + 1]
            if not second & _MASKED:
                return self._fail(CloseCode.PROTOCOL_ERROR, "incorrect masking")
            length = second & 0x7F
            mask_at = start + (2 if length < 126 else 4 if length == 126 else 10)
            payload_at = mask_at + 4
            if payload_at > size:
                break
            if length >= 126:
                length = int.from_bytes(view[start + 2 : mask_at], "big")
            if length > self._max_frame_size:
                return self._fail(CloseCode.MESSAGE_TOO_BIG, "frame larger than the packet limit")
            end = payload_at + length
            if end > size:
                needed = end - start
                break
            opcode = first & 0x7F  # reserved bits included: a frame with any set is not ours
            if opcode == _BINARY or opcode == _CONTINUATION:
                if (opcode == _CONTINUATION) != self._in_fragmented_message:
                    return self._fail(CloseCode.PROTOCOL_ERROR, "bad continuation frame")
                self._in_fragmented_message = not first & _FIN
                self.inner.data_received(apply_mask(view[payload_at:end], view[mask_at:payload_at]))
            elif opcode == _TEXT:
                # [MQTT-6.0.0-1] MQTT travels in binary frames only.
                return self._fail(CloseCode.UNSUPPORTED_DATA, "MQTT needs binary frames")
            else:  # a control frame, or something invalid for the library to refuse
                self._feed_library(bytes(view[start:end]))
            start = end
            if self._closing:  # the inner protocol or the library ended the connection
                return
        if start < size:
            self._pending = bytearray(view[start:])
            self._pending_needed = needed

    def _feed_library(self, data: bytes) -> None:
        """Let the sans-I/O layer handle the request or one control frame, and send its answer."""
        ws = self._ws
        ws.receive_data(data)
        for event in ws.events_received():
            if isinstance(event, Request):
                self._answer_handshake(event)
            # Other events are control frames, which the library has answered already.
        self._send_pending()

    def _fail(self, code: CloseCode, reason: str) -> None:
        """Fail the WebSocket connection: a close frame with ``code``, then the socket closes."""
        self._ws.fail(code, reason)
        self._send_pending()

    def _answer_handshake(self, request: Request) -> None:
        ws = self._ws
        path = request.path.partition("?")[0]
        if self._path is not None and path != self._path:
            response = ws.reject(http.HTTPStatus.NOT_FOUND, "No MQTT endpoint at this path.\n")
        else:
            response = ws.accept(request)
            self.request_path = path
        ws.send_response(response)

    def _send_pending(self) -> None:
        """Write what the sans-I/O layer produced; its end-of-stream mark closes the socket."""
        transport = self.transport
        assert transport is not None
        for chunk in self._ws.data_to_send():
            if chunk:
                transport.write(chunk)
            else:
                # The server side ends the TCP connection itself (RFC 6455 7.1.1).
                self._closing = True
                transport.close()


class WebSocketTransport(asyncio.Transport):
    """The transport the inner MQTT protocol sees: MQTT bytes in, binary frames out.

    Flow control, buffer sizes and extra info are those of the socket transport below, so a
    slow WebSocket client is measured and paused exactly like a slow TCP client. Extra info
    adds "websocket_subprotocol" and "websocket_path".
    """

    __slots__ = ("_protocol",)

    def __init__(self, protocol: WebSocketProtocol) -> None:
        super().__init__()
        self._protocol = protocol

    @property
    def _socket_transport(self) -> asyncio.Transport:
        transport = self._protocol.transport
        assert transport is not None
        return transport

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._protocol.send_binary(data)

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        self._protocol.send_binary_chunks(list(list_of_data))

    def close(self) -> None:
        self._protocol.close()

    def abort(self) -> None:
        self._socket_transport.abort()

    def is_closing(self) -> bool:
        return self._protocol.is_closing()

    def can_write_eof(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "websocket_subprotocol":
            return self._protocol.subprotocol
        if name == "websocket_path":
            return self._protocol.request_path
        return self._socket_transport.get_extra_info(name, default)

    def get_write_buffer_size(self) -> int:
        return self._socket_transport.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._socket_transport.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._socket_transport.set_write_buffer_limits(high, low)

    def pause_reading(self) -> None:
        self._socket_transport.pause_reading()

    def resume_reading(self) -> None:
        self._socket_transport.resume_reading()

    def is_reading(self) -> bool:
        return self._socket_transport.is_reading()

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol.inner

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol.inner = protocol
