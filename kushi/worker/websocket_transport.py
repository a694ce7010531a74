"""MQTT over WebSocket: an asyncio.Protocol that unwraps WebSocket frames for an MQTT protocol.

The MQTT connection (kushi.worker.connection) is a plain asyncio.Protocol that reads and writes
a byte stream. To serve it over WebSocket, ``WebSocketProtocol`` sits between the socket and it:

    socket --> WebSocketProtocol --(frame payloads)--> inner MQTT protocol
    socket <-- WebSocketProtocol <--(one binary frame per write)-- WebSocketTransport <-- inner

The WebSocket protocol itself (HTTP upgrade, framing, masking, ping/pong, the closing
handshake) is done by the ``websockets`` library's sans-I/O ``ServerProtocol``; this module only
moves bytes between it, the socket and the inner protocol.

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

Memory: no permessage-deflate; one frame is buffered at most, and frames larger than
``max_frame_size`` fail the connection (close 1009). Fragmented messages are never assembled:
each fragment goes to the inner protocol as it arrives.
"""

from __future__ import annotations

import asyncio
import http
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any, cast

from websockets.frames import BINARY, CONT, TEXT, CloseCode, Frame
from websockets.http11 import Request
from websockets.protocol import OPEN
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

__all__ = ["MQTT_SUBPROTOCOLS", "WebSocketProtocol", "WebSocketTransport"]

# In order of preference; "mqttv3.1" is what MQTT 3.1 clients (and some old libraries) offer.
MQTT_SUBPROTOCOLS: tuple[Subprotocol, ...] = (Subprotocol("mqtt"), Subprotocol("mqttv3.1"))

# websockets logs "connection open"/"connection closed" at INFO for each connection.
_LOGGER = logging.getLogger("kushi.websocket")


def select_mqtt_subprotocol(
    protocol: ServerProtocol, offered: Sequence[Subprotocol]
) -> Subprotocol | None:
    """Pick "mqtt" (or "mqttv3.1") if the client offers it; else accept without a subprotocol."""
    for name in MQTT_SUBPROTOCOLS:
        if name in offered:
            return name
    return None


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
        self._ws = ServerProtocol(
            subprotocols=list(MQTT_SUBPROTOCOLS),
            select_subprotocol=select_mqtt_subprotocol,
            # (message, fragment) limits: messages are streamed, only a frame is buffered.
            max_size=(None, max_frame_size),
            logger=_LOGGER,
        )
        self._closing = False
        self.request_path: str | None = None
        self.transport: asyncio.Transport | None = None
        self.inner: Any = None

    # -- asyncio.Protocol, called by the socket transport ---------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.inner = self._inner_factory()
        self.inner.connection_made(WebSocketTransport(self))

    def data_received(self, data: bytes) -> None:
        ws = self._ws
        ws.receive_data(data)
        for event in ws.events_received():
            if self._closing:
                break
            if isinstance(event, Frame):
                opcode = event.opcode
                # A continuation always belongs to a binary message: a text one fails at once.
                if opcode is BINARY or opcode is CONT:
                    self.inner.data_received(event.data)
                elif opcode is TEXT:
                    # [MQTT-6.0.0-1] MQTT travels in binary frames only.
                    ws.fail(CloseCode.UNSUPPORTED_DATA, "MQTT needs binary frames")
                    break
                # ping, pong and close were answered by the sans-I/O layer already.
            elif isinstance(event, Request):
                self._answer_handshake(event)
        self._send_pending()

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
        """Send ``data`` as one binary frame; dropped once the connection is closing."""
        if self._closing or self._ws.state is not OPEN:
            return
        self._ws.send_binary(data)
        self._send_pending()

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
        self._protocol.send_binary(b"".join(list_of_data))

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
