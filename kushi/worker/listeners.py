"""Listeners: where clients connect (TCP, WebSocket, TLS, WSS, Unix socket).

A listener config is a small frozen dataclass naming an address; ``start_listener`` opens it
and hands every accepted connection to ``protocol_factory()``, the MQTT connection protocol,
which never knows which transport it runs on:

    handle = await start_listener(TCP("t1", ":1883"), Connection, loop)
    handle.port        # the bound port (useful with port 0)
    await handle.close()   # stop accepting; open connections are left alone

Addresses are "host:port", ":port" (all interfaces, IPv4 and IPv6) or "[v6addr]:port".
TCP-based listeners set SO_REUSEPORT, so several worker processes can listen on one port and
the kernel spreads connections between them; a socket bound beforehand (for instance by a
supervisor reserving a port) may be passed as ``sock``. See ``bind_socket``.

WebSocket and WSS wrap the protocol in ``kushi.worker.websocket_transport.WebSocketProtocol``.
"""

from __future__ import annotations

import asyncio
import functools
import os
import socket
import ssl
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from kushi.errors import ConfigurationError
from kushi.worker.websocket_transport import WebSocketProtocol

__all__ = [
    "TCP",
    "TLS",
    "WSS",
    "ListenerConfig",
    "ListenerHandle",
    "Unix",
    "WebSocket",
    "bind_socket",
    "parse_address",
    "start_listener",
]

BACKLOG = 4096
# Seconds a client has to complete the TLS handshake; the MQTT connection (and its connect
# timeout) only starts after it.
TLS_HANDSHAKE_TIMEOUT = 10.0

# The default inbound MQTT packet limit (Options.maximum_packet_size) ...
DEFAULT_MAX_PACKET_SIZE = 1_048_576
# ... and what a WebSocket frame may carry beyond one packet, since a client may batch a few
# small packets with a large one into one frame.
FRAME_SLACK = 65_536


def parse_address(address: str) -> tuple[str | None, int]:
    """Split "host:port" into (host, port); host is None for ":port" (all interfaces).

    "[::1]:1883" gives ("::1", 1883). Raises ConfigurationError on anything else.
    """
    host, sep, port_text = address.rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigurationError(f"bad listener address {address!r}: expected host:port or :port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ConfigurationError(f"bad listener address {address!r}: write IPv6 as [addr]:port")
    return (host or None), int(port_text)


@dataclass(frozen=True)
class _AddressListener:
    """The fields of every listener on a host and port; the address is checked on creation."""

    id: str
    address: str

    def __post_init__(self) -> None:
        parse_address(self.address)


@dataclass(frozen=True)
class TCP(_AddressListener):
    """Plain MQTT over TCP."""

    kind: ClassVar[str] = "tcp"


@dataclass(frozen=True)
class WebSocket(_AddressListener):
    """MQTT over WebSocket; ``path`` None accepts any request path (clients often use /mqtt)."""

    kind: ClassVar[str] = "ws"
    path: str | None = None


@dataclass(frozen=True)
class TLS(_AddressListener):
    """MQTT over TLS. With ``cafile``, clients must present a certificate signed by it."""

    kind: ClassVar[str] = "tls"
    certfile: str
    keyfile: str
    cafile: str | None = None


@dataclass(frozen=True)
class WSS(_AddressListener):
    """MQTT over WebSocket over TLS; ``cafile`` and ``path`` as for TLS and WebSocket."""

    kind: ClassVar[str] = "wss"
    certfile: str
    keyfile: str
    cafile: str | None = None
    path: str | None = None


@dataclass(frozen=True)
class Unix:
    """MQTT over a Unix domain socket at ``path`` (one process only: no SO_REUSEPORT here)."""

    kind: ClassVar[str] = "unix"
    id: str
    path: str


ListenerConfig = TCP | WebSocket | TLS | WSS | Unix


class ListenerHandle:
    """An open listener: its config, the bound host and port, and ``close()``."""

    def __init__(
        self,
        config: ListenerConfig,
        host: str,
        port: int | None,
        server: asyncio.AbstractServer,
        socket_file: str | None = None,
    ) -> None:
        self.config = config
        self.host = host
        self.port = port  # None for a Unix socket
        self._server = server
        self._socket_file = socket_file  # a Unix socket file we created, removed on close

    @property
    def address(self) -> str:
        """Where clients connect, as "host:port", "[v6]:port" or the Unix socket path."""
        if self.port is None:
            return self.host
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    async def close(self) -> None:
        """Stop accepting connections; connections already accepted stay open.

        Not ``wait_closed()``: from Python 3.12 it also waits for every connection to end.
        """
        self._server.close()
        if self._socket_file is not None:
            _remove_socket_file(self._socket_file)

    def __repr__(self) -> str:
        return f"<ListenerHandle {self.config.kind} {self.config.id} {self.address}>"


def bind_socket(host: str | None, port: int) -> socket.socket:
    """A TCP socket bound with SO_REUSEPORT (not listening yet), ready for ``start_listener``.

    host None binds all interfaces with one dual-stack socket when IPv6 is available, so port 0
    yields a single port for both families. A supervisor can bind port 0 this way to learn a
    free port, then have each worker bind the same port with SO_REUSEPORT.
    """
    if host is None:
        if socket.has_dualstack_ipv6():
            return _bound(("", port), socket.AF_INET6, dualstack=True)
        return _bound(("", port), socket.AF_INET, dualstack=False)
    family, _, _, _, sockaddr = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    return _bound(sockaddr, family, dualstack=False)


def _bound(sockaddr: tuple, family: socket.AddressFamily, *, dualstack: bool) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if dualstack else 1)
        sock.bind(sockaddr)
    except BaseException:
        sock.close()
        raise
    return sock


def server_ssl_context(config: TLS | WSS) -> ssl.SSLContext:
    """The server TLS context for ``config``; requires client certificates when cafile is set."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(config.certfile, config.keyfile)
        if config.cafile is not None:
            context.load_verify_locations(cafile=config.cafile)
            context.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(f"listener {config.id}: cannot load TLS files: {exc}") from exc
    return context


async def start_listener(
    config: ListenerConfig,
    protocol_factory: Callable[[], asyncio.BaseProtocol],
    loop: asyncio.AbstractEventLoop | None = None,
    *,
    sock: socket.socket | None = None,
    max_packet_size: int = DEFAULT_MAX_PACKET_SIZE,
) -> ListenerHandle:
    """Open the listener ``config`` and serve each connection with ``protocol_factory()``.

    ``sock``: an already bound socket to listen on instead of binding ``config.address``.
    ``max_packet_size``: the broker's inbound packet limit; WebSocket frames above it (plus
    a little slack) fail the connection, so a client cannot make us buffer without bound.
    """
    loop = loop or asyncio.get_running_loop()
    if isinstance(config, Unix):
        return await _start_unix(config, protocol_factory, loop, sock)

    factory: Callable[[], asyncio.BaseProtocol] = protocol_factory
    if isinstance(config, (WebSocket, WSS)):
        factory = functools.partial(
            WebSocketProtocol,
            protocol_factory,
            max_frame_size=max_packet_size + FRAME_SLACK,
            path=config.path,
        )

    ssl_context = server_ssl_context(config) if isinstance(config, (TLS, WSS)) else None
    tls_options: dict[str, Any] = {}
    if ssl_context is not None:
        tls_options = {"ssl": ssl_context, "ssl_handshake_timeout": TLS_HANDSHAKE_TIMEOUT}
    host, port = parse_address(config.address)
    own_socket: socket.socket | None = None
    try:
        if sock is None and host is None:
            sock = own_socket = bind_socket(None, port)
        if sock is not None:
            server = await loop.create_server(factory, sock=sock, backlog=BACKLOG, **tls_options)
        else:
            server = await loop.create_server(
                factory, host, port, reuse_port=True, backlog=BACKLOG, **tls_options
            )
    except OSError as exc:
        if own_socket is not None:
            own_socket.close()
        message = f"listener {config.id}: cannot listen on {config.address}: {exc}"
        raise ConfigurationError(message) from exc
    bound_host, bound_port = server.sockets[0].getsockname()[:2]
    return ListenerHandle(config, bound_host, bound_port, server)


async def _start_unix(
    config: Unix,
    protocol_factory: Callable[[], asyncio.BaseProtocol],
    loop: asyncio.AbstractEventLoop,
    sock: socket.socket | None,
) -> ListenerHandle:
    socket_file = None if sock is not None else config.path
    try:
        if sock is not None:
            server = await loop.create_unix_server(protocol_factory, sock=sock, backlog=BACKLOG)
        else:
            _remove_socket_file(config.path)  # left over by a process that died
            server = await loop.create_unix_server(protocol_factory, config.path, backlog=BACKLOG)
    except OSError as exc:
        message = f"listener {config.id}: cannot listen on {config.path}: {exc}"
        raise ConfigurationError(message) from exc
    return ListenerHandle(config, config.path, None, server, socket_file)


def _remove_socket_file(path: str) -> None:
    """Remove ``path`` if it is a Unix socket; never touch a regular file someone put there."""
    try:
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass
