"""The WebSocket wrapper's own frame parsing, fed byte streams directly.

Sockets decide where reads split; these tests choose every split point instead, which a socket
test cannot do. Frames are produced, and the server's output checked, by the websockets
library's sans-I/O *client*, so the framing is judged by an independent implementation.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from websockets.client import ClientProtocol
from websockets.frames import BINARY, CLOSE, PONG, Frame
from websockets.protocol import OPEN
from websockets.uri import parse_uri

from kushi.worker.websocket_transport import WebSocketProtocol, binary_frame_header


class SocketStandIn:
    """Collects what the wrapper writes to its socket."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += data

    def writelines(self, chunks: list[bytes]) -> None:
        for chunk in chunks:
            self.written += chunk

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


class Inner(asyncio.Protocol):
    def __init__(self) -> None:
        self.received = bytearray()
        self.lost = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.received += data


class Pair:
    """A sans-I/O client and our server wrapper, wired by hand."""

    def __init__(self, max_frame_size: int = 1 << 20) -> None:
        self.client = ClientProtocol(parse_uri("ws://localhost/mqtt"), subprotocols=["mqtt"])
        self.client.send_request(self.client.connect())
        self.request = b"".join(self.client.data_to_send())
        self.socket = SocketStandIn()
        self.server = WebSocketProtocol(Inner, max_frame_size=max_frame_size)
        self.server.connection_made(self.socket)  # type: ignore[arg-type]
        self.inner: Inner = self.server.inner

    def handshake(self) -> None:
        self.server.data_received(self.request)
        self.deliver_to_client()
        assert self.client.state is OPEN and self.client.subprotocol == "mqtt"

    def deliver_to_client(self) -> list[Frame]:
        """Feed what the server wrote to the client; the frames the client read."""
        self.client.receive_data(bytes(self.socket.written))
        self.socket.written.clear()
        return [event for event in self.client.events_received() if isinstance(event, Frame)]

    def frames(self, *sends: tuple[str, bytes, bool]) -> bytes:
        """Masked client frames for (kind, payload, fin) triples, as one byte string."""
        for kind, payload, fin in sends:
            getattr(self.client, f"send_{kind}")(payload, **({} if kind == "ping" else {"fin": fin}))
        return b"".join(self.client.data_to_send())


def test_every_split_of_a_stream_gives_the_same_bytes() -> None:
    """[MQTT-6.0.0-2] short, 16-bit and 64-bit length frames, a fragmented message and a ping
    in the middle of it, cut at every byte around each frame start (one cut per run), reach the
    inner protocol as the same concatenated bytes."""
    payloads = [b"\x10" * 16, b"\x20" * 300, b"\x30" * 70_000, b"frag", b"ment", b"ed"]
    template = Pair()
    template.handshake()
    frames = [
        template.frames(("binary", payloads[0], True)),
        template.frames(("binary", payloads[1], True)),
        template.frames(("binary", payloads[2], True)),
        template.frames(("binary", payloads[3], False)),
        template.frames(("ping", b"hi", True)),
        template.frames(("continuation", payloads[4], False)),
        template.frames(("continuation", payloads[5], True)),
    ]
    stream = b"".join(frames)
    expected = b"".join(payloads)
    starts = [sum(map(len, frames[:i])) for i in range(len(frames))]
    # Every cut from just before a frame to past its longest header (14 bytes), and mid-payload.
    cuts = {start + offset for start in starts for offset in range(-2, 17)} | {len(stream) // 2}
    for cut in sorted(cut for cut in cuts if 0 < cut < len(stream)):
        pair = Pair()
        pair.handshake()
        pair.server.data_received(stream[:cut])
        pair.server.data_received(stream[cut:])
        assert pair.inner.received == expected, f"cut at {cut}"
        assert [(f.opcode, f.data) for f in pair.deliver_to_client()] == [(PONG, b"hi")]


def test_one_byte_at_a_time() -> None:
    pair = Pair()
    pair.handshake()
    stream = pair.frames(("binary", b"\x30\x03\x00\x01t", True), ("binary", b"x" * 200, True))
    for i in range(len(stream)):
        pair.server.data_received(stream[i : i + 1])
    assert pair.inner.received == b"\x30\x03\x00\x01t" + b"x" * 200


def test_frames_right_behind_the_request_in_one_read() -> None:
    pair = Pair()
    # The client may send its CONNECT before reading the 101 answer.
    pair.client.state = OPEN
    frames = pair.frames(("binary", b"\x10\x00", True))
    pair.server.data_received(pair.request + frames)
    assert pair.inner.received == b"\x10\x00"


def test_request_end_split_across_reads() -> None:
    pair = Pair()
    cut = len(pair.request) - 2  # between the "\r\n" pairs that end the request
    pair.server.data_received(pair.request[:cut])
    pair.server.data_received(pair.request[cut:])
    pair.deliver_to_client()
    assert pair.client.state is OPEN


def test_server_frames_are_read_by_an_independent_client() -> None:
    """The hand-written header, for each of the three length encodings."""
    pair = Pair()
    pair.handshake()
    sizes = [0, 125, 126, 65_535, 65_536, 100_000]
    for size in sizes:
        pair.inner.transport.write(b"p" * size)
    pair.inner.transport.writelines([b"p" * 65_000, memoryview(b"q" * 1000), bytearray(b"r")])
    frames = pair.deliver_to_client()
    assert [(f.opcode, f.fin, len(f.data)) for f in frames] == [(BINARY, True, n) for n in sizes + [66_001]]
    assert frames[-1].data == b"p" * 65_000 + b"q" * 1000 + b"r"
    assert len(binary_frame_header(70_000)) == 10


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        pytest.param(b"\x82\x02ab", 1002, id="unmasked frame"),
        pytest.param(b"\xc2\x80\x00\x00\x00\x00", 1002, id="reserved bit set"),
        pytest.param(b"\x80\x80\x00\x00\x00\x00", 1002, id="continuation with no message"),
        pytest.param(b"\x83\x80\x00\x00\x00\x00", 1002, id="reserved opcode"),
        pytest.param(b"\x81\x81\x00\x00\x00\x00a", 1003, id="text frame [MQTT-6.0.0-1]"),
        pytest.param(b"\x82\xff" + (1 << 40).to_bytes(8, "big"), 1009, id="huge length"),
    ],
)
def test_bad_frames_fail_the_connection(raw: bytes, code: int) -> None:
    pair = Pair()
    pair.handshake()
    pair.server.data_received(raw + pair.frames(("binary", b"after", True)))
    closes = [f for f in pair.deliver_to_client() if f.opcode is CLOSE]
    assert len(closes) == 1 and int.from_bytes(closes[0].data[:2], "big") == code
    assert pair.socket.closed
    assert pair.inner.received == b""  # nothing after the bad frame is read


def test_binary_while_a_fragmented_message_is_open_fails() -> None:
    pair = Pair()
    pair.handshake()
    first = pair.frames(("binary", b"a", False))
    pair.client.expect_continuation_frame = False  # let the client misbehave
    pair.server.data_received(first + pair.frames(("binary", b"b", True)))
    closes = [f for f in pair.deliver_to_client() if f.opcode is CLOSE]
    assert int.from_bytes(closes[0].data[:2], "big") == 1002
    assert pair.inner.received == b"a"


def test_client_close_is_echoed_and_ends_the_socket() -> None:
    pair = Pair()
    pair.handshake()
    pair.client.send_close(1000)
    pair.server.data_received(b"".join(pair.client.data_to_send()))
    closes = [f for f in pair.deliver_to_client() if f.opcode is CLOSE]
    assert int.from_bytes(closes[0].data[:2], "big") == 1000
    assert pair.socket.closed
    assert pair.server.is_closing()
