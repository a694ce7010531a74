"""Listeners, first with a tiny recording protocol in place of the MQTT connection, then end to
end with a kushi.Server and paho-mqtt clients on every kind of listener.

The listener tests run once on asyncio's loop and once on uvloop (the broker's loop), on real
sockets. The WebSocket frame parser at every read split is tested in test_listeners_ws_framing.py.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import uvloop
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from kushi.errors import ConfigurationError
from kushi.worker.listeners import (
    FRAME_SLACK,
    TCP,
    TLS,
    WSS,
    ListenerHandle,
    Unix,
    WebSocket,
    bind_socket,
    parse_address,
    start_listener,
)

TIMEOUT = 10.0


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Callable[[Coroutine[Any, Any, Any]], Any]:
    """Run a coroutine to completion on a fresh loop of the parametrized kind."""
    runner = asyncio.run if request.param == "asyncio" else uvloop.run

    async def checked(coroutine: Coroutine[Any, Any, Any]) -> Any:
        errors: list[dict[str, Any]] = []
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: errors.append(context))
        result = await asyncio.wait_for(coroutine, TIMEOUT)
        assert errors == [], "errors reached the loop's exception handler"
        return result

    def run_coroutine(coroutine: Coroutine[Any, Any, Any]) -> Any:
        return runner(checked(coroutine))

    return run_coroutine


class Recorder(asyncio.Protocol):
    """Stands in for the MQTT connection: records what it gets, echoes it if asked."""

    def __init__(self, echo: bool = True) -> None:
        self.echo = echo
        self.chunks: list[bytes] = []
        self.transport: Any = None
        self.lost: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()
        self.paused = 0
        self._changed = asyncio.Event()

    @property
    def received(self) -> bytes:
        return b"".join(self.chunks)

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.chunks.append(bytes(data))
        self._changed.set()
        if self.echo:
            self.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set_result(exc)

    def pause_writing(self) -> None:
        self.paused += 1
        self._changed.set()

    async def wait_for(self, condition: Callable[[], bool]) -> None:
        """Wait until ``condition()`` holds, re-checking after each callback."""
        while not condition():
            self._changed.clear()
            await self._changed.wait()


class Accepted:
    """A protocol factory that keeps every Recorder it makes."""

    def __init__(self, echo: bool = True) -> None:
        self.echo = echo
        self.protocols: list[Recorder] = []
        self._made = asyncio.Event()

    def __call__(self) -> Recorder:
        protocol = Recorder(self.echo)
        self.protocols.append(protocol)
        self._made.set()
        return protocol

    async def first(self) -> Recorder:
        await self._made.wait()
        return self.protocols[0]


async def tcp_echo_roundtrip(host: str, port: int, payload: bytes = b"ping", **kwargs: Any) -> bytes:
    reader, writer = await asyncio.open_connection(host, port, **kwargs)
    writer.write(payload)
    echoed = await reader.readexactly(len(payload))
    writer.close()
    return echoed


def ws_url(handle: ListenerHandle, path: str = "/mqtt", scheme: str = "ws") -> str:
    return f"{scheme}://127.0.0.1:{handle.port}{path}"


# -- addresses -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:1883", ("127.0.0.1", 1883)),
        (":1883", (None, 1883)),
        ("localhost:0", ("localhost", 0)),
        ("[::1]:1883", ("::1", 1883)),
    ],
)
def test_parse_address(address: str, expected: tuple[str | None, int]) -> None:
    assert parse_address(address) == expected


@pytest.mark.parametrize("address", ["1883", "host:", "host:port", ":65536", "::1:1883", ""])
def test_bad_address_is_a_configuration_error(address: str) -> None:
    with pytest.raises(ConfigurationError):
        TCP("t", address)


# -- TCP --------------------------------------------------------------------------------------------


def test_tcp_listener_reports_bound_port_and_serves(run: Callable) -> None:
    async def scenario() -> None:
        accepted = Accepted()
        handle = await start_listener(TCP("t1", "127.0.0.1:0"), accepted, None)
        assert (handle.host, handle.config.id) == ("127.0.0.1", "t1")
        assert handle.port > 0 and handle.address == f"127.0.0.1:{handle.port}"
        assert await tcp_echo_roundtrip(handle.host, handle.port) == b"ping"
        await handle.close()

    run(scenario())


def test_two_listeners_share_a_port_with_reuse_port(run: Callable) -> None:
    """SO_REUSEPORT: a second worker process can listen on the same port."""

    async def scenario() -> None:
        first = await start_listener(TCP("a", "127.0.0.1:0"), Accepted(), None)
        second = await start_listener(TCP("b", f"127.0.0.1:{first.port}"), Accepted(), None)
        assert second.port == first.port
        await first.close()
        assert await tcp_echo_roundtrip("127.0.0.1", second.port) == b"ping"
        await second.close()

    run(scenario())


def test_all_interfaces_one_port_for_ipv4_and_ipv6(run: Callable) -> None:
    async def scenario() -> None:
        handle = await start_listener(TCP("t", ":0"), Accepted(), None)
        assert await tcp_echo_roundtrip("127.0.0.1", handle.port) == b"ping"
        if socket.has_dualstack_ipv6():
            assert await tcp_echo_roundtrip("::1", handle.port) == b"ping"
        await handle.close()

    run(scenario())


def test_ipv6_address(run: Callable) -> None:
    async def scenario() -> None:
        handle = await start_listener(TCP("t", "[::1]:0"), Accepted(), None)
        assert handle.host == "::1" and handle.address == f"[::1]:{handle.port}"
        assert await tcp_echo_roundtrip("::1", handle.port) == b"ping"
        await handle.close()

    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    run(scenario())


def test_listen_on_a_socket_bound_beforehand(run: Callable) -> None:
    """The cluster binds (reserves) a port, then a worker listens on that very socket."""

    async def scenario() -> None:
        sock = bind_socket("127.0.0.1", 0)
        port = sock.getsockname()[1]
        handle = await start_listener(TCP("t", "127.0.0.1:0"), Accepted(), None, sock=sock)
        assert handle.port == port
        assert await tcp_echo_roundtrip("127.0.0.1", port) == b"ping"
        await handle.close()

    run(scenario())


def test_close_stops_accepting_but_keeps_connections(run: Callable) -> None:
    async def scenario() -> None:
        accepted = Accepted()
        handle = await start_listener(TCP("t", "127.0.0.1:0"), accepted, None)
        reader, writer = await asyncio.open_connection("127.0.0.1", handle.port)
        await accepted.first()
        await handle.close()
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", handle.port)
        writer.write(b"still here")
        assert await reader.readexactly(10) == b"still here"
        writer.close()

    run(scenario())


def test_port_in_use_without_reuse_port_is_a_configuration_error(run: Callable) -> None:
    async def scenario() -> None:
        blocker = socket.socket()
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        try:
            with pytest.raises(ConfigurationError):
                await start_listener(TCP("t", f"127.0.0.1:{blocker.getsockname()[1]}"), Accepted(), None)
        finally:
            blocker.close()

    run(scenario())


# -- WebSocket ----------------------------------------------------------------------------------------


async def start_ws(accepted: Accepted, **kwargs: Any) -> ListenerHandle:
    path = kwargs.pop("path", None)
    return await start_listener(WebSocket("w", "127.0.0.1:0", path=path), accepted, None, **kwargs)


@pytest.mark.parametrize(
    ("offered", "selected"),
    [(["mqtt"], "mqtt"), (["mqttv3.1"], "mqttv3.1"), (["chat", "mqtt"], "mqtt"), (None, None)],
)
def test_websocket_subprotocol(run: Callable, offered: list[str] | None, selected: str | None) -> None:
    """[MQTT-6.0.0-4] "mqtt" is selected; a client offering none is accepted (leniency)."""

    async def scenario() -> None:
        accepted = Accepted()
        handle = await start_ws(accepted)
        async with ws_connect(ws_url(handle), subprotocols=offered) as ws:
            assert ws.subprotocol == selected
            inner = await accepted.first()
            assert inner.transport.get_extra_info("websocket_subprotocol") == selected
            assert inner.transport.get_extra_info("websocket_path") == "/mqtt"
            assert inner.transport.get_extra_info("peername") == ws.local_address
        await handle.close()

    run(scenario())


def test_websocket_packet_split_across_frames_is_concatenated(run: Callable) -> None:
    """[MQTT-6.0.0-2] one packet in several frames (a fragmented message and separate messages)."""

    async def scenario() -> None:
        accepted = Accepted(echo=False)
        handle = await start_ws(accepted)
        async with ws_connect(ws_url(handle), subprotocols=["mqtt"]) as ws:
            await ws.send([b"\x30\x07\x00", b"\x01t", b"hello"])  # one message in three fragments
            await ws.send(b"\x30\x07\x00\x01")  # then one packet over two messages
            await ws.send(b"tworld")
            inner = await accepted.first()
            expected = b"\x30\x07\x00\x01thello\x30\x07\x00\x01tworld"
            await inner.wait_for(lambda: len(inner.received) >= len(expected))
            assert inner.received == expected
        await handle.close()

    run(scenario())


def test_websocket_several_packets_in_one_frame(run: Callable) -> None:
    """[MQTT-6.0.0-2] a frame holding several packets reaches the inner protocol whole."""

    async def scenario() -> None:
        accepted = Accepted(echo=False)
        handle = await start_ws(accepted)
        packets = b"\xc0\x00" * 3 + b"\x30\x03\x00\x01t"
        async with ws_connect(ws_url(handle), subprotocols=["mqtt"]) as ws:
            await ws.send(packets)
            inner = await accepted.first()
            await inner.wait_for(lambda: len(inner.received) >= len(packets))
            assert inner.chunks == [packets]
        await handle.close()

    run(scenario())


def test_websocket_text_frame_closes_the_connection(run: Callable) -> None:
    """[MQTT-6.0.0-1] a text frame: close 1003, the inner protocol sees the connection end."""

    async def scenario() -> None:
        accepted = Accepted()
        handle = await start_ws(accepted)
        async with ws_connect(ws_url(handle), subprotocols=["mqtt"]) as ws:
            await ws.send("\x30\x03\x00\x01t")
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1003
        inner = await accepted.first()
        assert await inner.lost is None
        assert inner.chunks == []
        await handle.close()

    run(scenario())


def test_websocket_each_inner_write_is_one_binary_frame(run: Callable) -> None:
    async def scenario() -> None:
        accepted = Accepted(echo=False)
        handle = await start_ws(accepted)
        async with ws_connect(ws_url(handle), subprotocols=["mqtt"]) as ws:
            inner = await accepted.first()
            inner.transport.write(b"\x20\x02\x00\x00")
            inner.transport.writelines([b"\xd0", b"\x00"])
            inner.transport.write(memoryview(b"\x90\x03\x00\x01\x00"))
            assert [await ws.recv() for _ in range(3)] == [
                b"\x20\x02\x00\x00",
                b"\xd0\x00",
                b"\x90\x03\x00\x01\x00",
            ]
        await handle.close()

    run(scenario())


def test_websocket_inner_close_sends_data_then_normal_close(run: Callable) -> None:
    async def scenario() -> None:
        accepted = Accepted(echo=False)
        handle = await start_ws(accepted)
        async with ws_connect(ws_url(handle), subprotocols=["mqtt"]) as ws:
            inner = await accepted.first()
            inner.transport.write(b"\xe0\x00")  # a DISCONNECT, then close
            inner.transport.close()
            assert inner.transport.is_closing()
            inner.transport.write(b"dropped after close")
            assert await ws.recv() == b"\xe0\x00"
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000
        assert await inner.lost is None
        await handle.close()

    run(scenario())


def test_websocket_client_close_and_ping(run: Callable) -> None:
    async def scenario() -> None:
        accepted = Accepted()
        handle = await start_ws(accepted)
        async with ws_connect(ws_url(handle), subprotocols=["mqtt"]) as ws:
            pong = await ws.ping(b"are you there")
            await pong
            await ws.send(b"\xc0\x00")
            assert await ws.recv() == b"\xc0\x00"
        assert ws.close_code == 1000
        assert await (await accepted.first()).lost is None
        await handle.close()

    run(scenario())


def test_websocket_path_restriction(run: Callable) -> None:
    async def scenario() -> None:
        accepted = Accepted()
        handle = await start_ws(accepted, path="/mqtt")
        with pytest.raises(InvalidStatus) as refused:
            async with ws_connect(ws_url(handle, "/other"), subprotocols=["mqtt"]):
                pass
        assert refused.value.response.status_code == 404
        async with ws_connect(ws_url(handle, "/mqtt?x=1"), subprotocols=["mqtt"]) as ws:
            await ws.send(b"\xc0\x00")
            assert await ws.recv() == b"\xc0\x00"
        await handle.close()

    run(scenario())


def test_websocket_any_path_by_default(run: Callable) -> None:
    async def scenario() -> None:
        handle = await start_ws(Accepted())
        async with ws_connect(ws_url(handle, "/"), subprotocols=["mqtt"]) as ws:
            await ws.send(b"\xc0\x00")
            assert await ws.recv() == b"\xc0\x00"
        await handle.close()

    run(scenario())


def test_websocket_frame_above_the_limit_fails_the_connection(run: Callable) -> None:
    """A client cannot make us buffer more than one packet limit (plus slack) per frame."""

    async def scenario() -> None:
        accepted = Accepted()
        handle = await start_ws(accepted, max_packet_size=1000)
        async with ws_connect(ws_url(handle), subprotocols=["mqtt"], max_size=None) as ws:
            await ws.send(b"x" * (1000 + FRAME_SLACK + 1))
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        assert (await accepted.first()).chunks == []
        await handle.close()

    run(scenario())


def test_websocket_bad_handshake_ends_the_inner_connection(run: Callable) -> None:
    async def scenario() -> None:
        accepted = Accepted()
        handle = await start_ws(accepted)
        reader, writer = await asyncio.open_connection("127.0.0.1", handle.port)
        writer.write(b"GET /mqtt HTTP/1.1\r\nHost: x\r\n\r\n")  # no Upgrade: websocket
        status_line = await reader.readline()
        assert status_line.startswith(b"HTTP/1.1 426")
        assert await (await accepted.first()).lost is None
        writer.close()
        await handle.close()

    run(scenario())


def test_websocket_flow_control_passes_through(run: Callable) -> None:
    """The inner protocol sees the socket's write buffer and gets pause_writing from it."""

    async def scenario() -> None:
        accepted = Accepted(echo=False)
        handle = await start_ws(accepted)
        async with ws_connect(ws_url(handle), subprotocols=["mqtt"], max_size=None) as ws:
            inner = await accepted.first()
            inner.transport.set_write_buffer_limits(high=64 * 1024)
            assert inner.transport.get_write_buffer_limits() == (16 * 1024, 64 * 1024)  # (low, high)
            inner.transport.pause_reading()
            inner.transport.resume_reading()
            inner.transport.write(b"\x00" * (16 * 1024 * 1024))  # more than the kernel buffers
            assert inner.transport.get_write_buffer_size() > 64 * 1024
            await inner.wait_for(lambda: inner.paused > 0)
            assert len(await ws.recv()) == 16 * 1024 * 1024
        await handle.close()

    run(scenario())


# -- TLS and WSS ----------------------------------------------------------------------------------------


def _self_signed(directory: Path, name: str) -> tuple[str, str]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(cert),
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True,
        capture_output=True,
    )
    return str(cert), str(key)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, str]]:
    """Self-signed server and client certificates made with the openssl command."""
    directory = tmp_path_factory.mktemp("certs")
    return {"server": _self_signed(directory, "server"), "client": _self_signed(directory, "client")}


def client_context(certs: dict[str, tuple[str, str]], with_client_cert: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=certs["server"][0])
    if with_client_cert:
        context.load_cert_chain(*certs["client"])
    return context


def test_tls_listener(run: Callable, certs: dict[str, tuple[str, str]]) -> None:
    async def scenario() -> None:
        handle = await start_listener(TLS("s", "127.0.0.1:0", *certs["server"]), Accepted(), None)
        echoed = await tcp_echo_roundtrip("127.0.0.1", handle.port, ssl=client_context(certs))
        assert echoed == b"ping"
        await handle.close()

    run(scenario())


def test_tls_with_cafile_requires_a_client_certificate(run: Callable, certs: dict[str, tuple[str, str]]) -> None:
    async def scenario() -> None:
        config = TLS("s", "127.0.0.1:0", *certs["server"], cafile=certs["client"][0])
        handle = await start_listener(config, Accepted(), None)
        echoed = await tcp_echo_roundtrip(
            "127.0.0.1", handle.port, ssl=client_context(certs, with_client_cert=True)
        )
        assert echoed == b"ping"
        # TLS 1.3: the refusal of a missing client certificate arrives on the first read.
        with pytest.raises((ssl.SSLError, ConnectionResetError, asyncio.IncompleteReadError)):
            await tcp_echo_roundtrip("127.0.0.1", handle.port, ssl=client_context(certs))
        await handle.close()

    run(scenario())


def test_tls_bad_certificate_file_is_a_configuration_error(run: Callable, tmp_path: Path) -> None:
    async def scenario() -> None:
        missing = str(tmp_path / "missing.pem")
        with pytest.raises(ConfigurationError):
            await start_listener(TLS("s", "127.0.0.1:0", missing, missing), Accepted(), None)

    run(scenario())


def test_wss_listener(run: Callable, certs: dict[str, tuple[str, str]]) -> None:
    async def scenario() -> None:
        handle = await start_listener(WSS("s", "127.0.0.1:0", *certs["server"]), Accepted(), None)
        url = ws_url(handle, scheme="wss")
        async with ws_connect(url, subprotocols=["mqtt"], ssl=client_context(certs)) as ws:
            assert ws.subprotocol == "mqtt"
            await ws.send([b"\xc0", b"\x00"])  # each fragment is echoed as a frame of its own
            assert [await ws.recv(), await ws.recv()] == [b"\xc0", b"\x00"]
        await handle.close()

    run(scenario())


# -- Unix socket ---------------------------------------------------------------------------------------


def test_unix_listener_replaces_a_stale_socket_and_removes_it_on_close(run: Callable, tmp_path: Path) -> None:
    path = str(tmp_path / "kushi.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)  # as left behind by a process that died
    stale.close()

    async def scenario() -> None:
        handle = await start_listener(Unix("u", path), Accepted(), None)
        assert (handle.host, handle.port, handle.address) == (path, None, path)
        reader, writer = await asyncio.open_unix_connection(path)
        writer.write(b"ping")
        assert await reader.readexactly(4) == b"ping"
        writer.close()
        await handle.close()
        assert not os.path.exists(path)

    run(scenario())


def test_unix_listener_leaves_a_regular_file_alone(run: Callable, tmp_path: Path) -> None:
    path = tmp_path / "not-a-socket"
    path.write_text("keep me")

    async def scenario() -> None:
        with pytest.raises(ConfigurationError):
            await start_listener(Unix("u", str(path)), Accepted(), None)

    run(scenario())
    assert path.read_text() == "keep me"


# -- end to end: a kushi.Server and paho-mqtt clients on every transport ------------------------------


class ServerOnEveryListener:
    """A kushi.Server with one listener of each kind, on uvloop in a background thread."""

    def __init__(self, certs: dict[str, tuple[str, str]], unix_path: str) -> None:
        import kushi

        self.loop = uvloop.new_event_loop()
        self.loop_errors: list[dict[str, Any]] = []
        self.loop.set_exception_handler(lambda loop, context: self.loop_errors.append(context))
        self.thread = threading.Thread(target=self.loop.run_forever, name="kushi-e2e", daemon=True)
        self.thread.start()
        self.server = kushi.Server(kushi.Options(sys_interval=0))
        cert, key = certs["server"]
        for listener in (
            TCP("tcp", "127.0.0.1:0"),
            WebSocket("ws", "127.0.0.1:0"),
            TLS("tls", "127.0.0.1:0", cert, key),
            WSS("wss", "127.0.0.1:0", cert, key),
            TLS("mtls", "127.0.0.1:0", cert, key, cafile=certs["client"][0]),
            Unix("unix", unix_path),
        ):
            self.server.add_listener(listener)
        self.call(self.server.start())

    def call(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(TIMEOUT)

    def endpoint(self, listener_id: str) -> SimpleNamespace:
        """What support.paho.PahoFactory needs: host, port and ws_port."""
        handle = self.server.listeners[listener_id]
        if handle.port is None:  # a Unix socket: paho takes the path as host, the port is unused
            return SimpleNamespace(host=handle.host, port=1, ws_port=1)
        return SimpleNamespace(host=handle.host, port=handle.port, ws_port=handle.port)

    def close(self) -> None:
        try:
            self.call(self.server.close())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(TIMEOUT)
            self.loop.close()


@pytest.fixture
def every_listener(
    certs: dict[str, tuple[str, str]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerOnEveryListener]:
    running = ServerOnEveryListener(certs, str(tmp_path_factory.mktemp("unix") / "kushi.sock"))
    yield running
    running.close()
    assert running.loop_errors == [], "errors reached the broker loop's exception handler"


# (listener id, paho transport, TLS files for paho or None)
E2E_TRANSPORTS = [
    ("tcp", "tcp", None),
    ("ws", "websockets", None),
    ("tls", "tcp", "server-ca"),
    ("wss", "websockets", "server-ca"),
    ("mtls", "tcp", "client-cert"),
    ("unix", "unix", None),
]


def connect_over(paho: Any, every_listener: ServerOnEveryListener, certs: dict[str, tuple[str, str]],
                 listener_id: str, transport: str, tls: str | None) -> Any:
    client = paho(every_listener.endpoint(listener_id), f"over-{listener_id}", transport=transport)
    if tls is not None:
        client_files = certs["client"] if tls == "client-cert" else (None, None)
        client.client.tls_set(ca_certs=certs["server"][0], certfile=client_files[0], keyfile=client_files[1])
    client.connect()
    return client


def test_paho_on_every_transport_reaches_every_other(
    every_listener: ServerOnEveryListener, paho: Any, certs: dict[str, tuple[str, str]]
) -> None:
    """TCP, WebSocket (path /mqtt), TLS, WSS, TLS with a client certificate and a Unix socket:
    a message published over each arrives at subscribers on all of them."""
    clients = {
        listener_id: connect_over(paho, every_listener, certs, listener_id, transport, tls)
        for listener_id, transport, tls in E2E_TRANSPORTS
    }
    for client in clients.values():
        assert client.subscribe("e2e/+", qos=1) == [1]
    for listener_id, client in clients.items():
        client.publish(f"e2e/{listener_id}", listener_id.encode(), qos=1)
    expected = {(f"e2e/{listener_id}", listener_id.encode()) for listener_id in clients}
    for listener_id, client in clients.items():
        got = {(m.topic, m.payload) for m in (client.wait_for_message() for _ in expected)}
        assert got == expected, f"subscriber over {listener_id}"


def test_large_message_over_websocket_both_ways(
    every_listener: ServerOnEveryListener, paho: Any, certs: dict[str, tuple[str, str]]
) -> None:
    """A 300 kB publish: a 64-bit frame length, read in many socket reads, and sent back."""
    publisher = connect_over(paho, every_listener, certs, "ws", "websockets", None)
    subscriber = connect_over(paho, every_listener, certs, "wss", "websockets", "server-ca")
    subscriber.subscribe("e2e/big", qos=1)
    payload = os.urandom(300_000)
    publisher.publish("e2e/big", payload, qos=1)
    subscriber.expect_message("e2e/big", payload)


@pytest.mark.parametrize(("listener_id", "transport", "tls"),
                         [t for t in E2E_TRANSPORTS if t[0] in ("tcp", "tls", "unix")])
def test_large_messages_received_in_place_arrive_whole(
    every_listener: ServerOnEveryListener, paho: Any, certs: dict[str, tuple[str, str]],
    listener_id: str, transport: str, tls: str | None
) -> None:
    """TCP, TLS and Unix read into the broker's buffers (asyncio.BufferedProtocol); large
    PUBLISH packets are read into landing buffers with room for several of their size, the
    larger ones cut off and moved on: several of them, back to back, each arrive whole."""
    publisher = connect_over(paho, every_listener, certs, listener_id, transport, tls)
    subscriber = connect_over(paho, every_listener, certs, "ws", "websockets", None)
    subscriber.subscribe("e2e/large", qos=1)
    payloads = [os.urandom(size) for size in (4_000, 65_536, 65_536, 65_536, 65_536, 200_000, 70_001,
                                              65_536, 900_000, 65_536)]
    for payload in payloads:
        publisher.publish("e2e/large", payload, qos=1)
    for payload in payloads:
        subscriber.expect_message("e2e/large", payload)


def test_websocket_handshake_is_bounded_by_the_connect_timeout(make_broker: Any) -> None:
    """A client that opens the WebSocket port and never finishes the HTTP upgrade is closed
    by the MQTT connect timeout: the inner connection exists from the TCP accept on."""
    running = make_broker(connect_timeout=0.5)
    with socket.create_connection((running.host, running.ws_port), timeout=TIMEOUT) as client:
        client.sendall(b"GET /mqtt HTTP/1.1\r\nHost: x\r\n")  # the request never ends
        assert client.recv(1024) == b""  # the server closed the connection
