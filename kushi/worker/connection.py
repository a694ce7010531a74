"""MQTTConnection: one client's network connection, as an asyncio BufferedProtocol.

The connection owns what belongs to the wire and dies with it: the packet
reader, the write buffer, the connection's state (waiting for CONNECT,
authenticating, connected, closed), keep alive, and the inbound topic aliases.
What a packet *means* is the broker's business (``kushi.worker.broker``): the
connection decodes, checks the connection-level rules, and hands packets over.

Reading: TCP, TLS and Unix transports read into the reader's buffers
(``get_buffer``/``buffer_updated``: large PUBLISH packets land in buffers kept for
them, several to a read, and are passed on as views, never copied in Python); the WebSocket layer
hands over bytes (``data_received``). Every read's packets are *all* parsed before
anything is written. Writing: packets are collected in a list and flushed once
per loop iteration (the broker flushes every connection written to with one
``call_soon``), so a burst of messages for one client
costs one system call, not one per message (ARCHITECTURE.md, "The hot path").

The connection never knows its transport: TCP, TLS, WebSocket and Unix sockets
all look the same from here. It is also the ``ClientInfo`` the hooks see.

The opt-in compiled build (build_backend.py) compiles this module with mypyc: there the
annotations are checked at run time, module constants are ``Final``, and the class is a
native one (no instance ``__dict__``; a method patched on the class is not what its own
compiled calls reach).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from enum import Enum
from time import monotonic
from typing import TYPE_CHECKING, Any, Callable, Final

from ..errors import KeepAliveTimeout, KushiError, ProtocolError, TopicAliasInvalid
from ..protocol.codec import encode
from ..protocol.errors_to_wire import error_packet, reply_version
from ..protocol.packets import Auth, Connect, Disconnect, Packet, PacketType, Publish
from ..protocol.reader import PacketReader

if TYPE_CHECKING:
    from .broker import Broker
    from .session import Session

log = logging.getLogger("kushi.connection")

PUBLISH: Final = PacketType.PUBLISH
CONNACK: Final = PacketType.CONNACK
DISCONNECT: Final = PacketType.DISCONNECT


class State(Enum):
    WAITING_FOR_CONNECT = 1
    CONNECTING = 2        # CONNECT received, hooks / enhanced authentication under way
    CONNECTED = 3         # CONNACK 0x00 sent
    CLOSED = 4


# The states as module constants, as the code here reads them: on Python 3.11 reading a
# member from an Enum class (``State.CLOSED``) goes through EnumType.__getattr__, ~1,100
# instructions against a few for a global (callgrind: 9 such reads per CONNECT were 10k of
# its 158k instructions; ``write`` made one per message). Final: compiled with mypyc (the
# opt-in build), a Final global is a C variable, any other a dict lookup
WAITING_FOR_CONNECT: Final = State.WAITING_FOR_CONNECT
CONNECTING: Final = State.CONNECTING
CONNECTED: Final = State.CONNECTED
CLOSED: Final = State.CLOSED

_UNREAD: Final = object()
"""``_remote_address`` of a connection whose transport was not asked for it yet."""

# the transport whose peer's address is read when first asked for (see remote_address)
_ADDRESS_KEEPING: type | None
try:
    import uvloop.loop
    _ADDRESS_KEEPING = uvloop.loop.TCPTransport  # type: ignore[attr-defined]  # (not in its .pyi)
except ImportError:   # (no uvloop on Windows)
    _ADDRESS_KEEPING = None


class MQTTConnection(asyncio.BufferedProtocol):
    """One network connection speaking MQTT to one client."""

    # slots: an idle connection should cost little memory (10,000 of them are benchmarked)
    __slots__ = (
        "broker", "listener", "reader", "write_buffer_limit", "topic_alias_maximum", "state",
        "transport", "opened_at", "last_received", "client_id", "username", "_remote_address",
        "protocol_version", "clean_start", "session", "keep_alive", "maximum_packet_size",
        "authentication_method", "requested_session_expiry", "inbound_aliases",
        "topic_alias_out_maximum", "outbound_aliases", "auth_waiter", "error", "_out", "_out_size",
        "_flush_scheduled", "_writing_paused", "_broker_told", "_reading_paused",
        "problem_information", "get_buffer",
    )
    # an attribute, not asyncio.BufferedProtocol's method: the reader's own (see __init__)
    get_buffer: Callable[[int], memoryview]  # type: ignore[assignment]  # (a method there)

    def __init__(self, broker: Broker, listener: str) -> None:
        self.broker = broker
        self.listener = listener
        options = broker.options
        self.reader = PacketReader(options.maximum_packet_size, broker.read_scratch)
        # asyncio.BufferedProtocol's get_buffer: TCP, TLS and Unix transports read into the
        # reader's buffer, so a large PUBLISH is received in place and never copied in Python
        # (PacketReader). The reader's own method, not one here that calls it: a call less a
        # read, ~220 instructions (the transport takes the method when it is made, before
        # connection_made; callgrind, profile_hotpath.py SP --buffered: 42,223 -> 42,001)
        self.get_buffer = self.reader.get_buffer
        self.write_buffer_limit = options.write_buffer_limit
        self.topic_alias_maximum = options.topic_alias_maximum
        self.state = WAITING_FOR_CONNECT
        self.transport: asyncio.Transport | None = None
        self.opened_at = 0.0
        self.last_received = 0.0
        # ClientInfo (what hooks read)
        self.client_id = ""
        self.username: str | None = None
        # the peer's address, or _UNREAD until asked for (see ``remote_address``)
        self._remote_address: tuple[str, int] | str | None | object = None
        self.protocol_version = 0
        self.clean_start = True
        # set when the CONNECT is accepted
        self.session: Session | None = None
        self.keep_alive = 0
        self.maximum_packet_size = 0          # the client's limit on what we send; 0 = none
        self.problem_information = True       # v5 Request Problem Information (0 = keep them short)
        self.authentication_method: str | None = None
        self.requested_session_expiry = 0     # as the CONNECT asked; DISCONNECT may not raise it from 0
        # the topic aliases, each way: None until the first is set (most clients never use
        # them; two empty dicts were 128 of an idle connection's ~1,800 bytes, tracemalloc)
        self.inbound_aliases: dict[int, str] | None = None
        self.topic_alias_out_maximum = 0      # the client's Topic Alias Maximum; 0 = send none
        self.outbound_aliases: dict[str, int] | None = None
        self.auth_waiter: asyncio.Future[Auth] | None = None
        self.error: BaseException | None = None
        # () while nothing waits to be written: an idle connection keeps no list (one
        # GC-tracked object less for each of a storm's 10,000 clients)
        self._out: list[bytes | memoryview] | tuple[()] = ()
        self._out_size = 0
        self._flush_scheduled = False
        self._writing_paused = False
        self._broker_told = False
        self._reading_paused = False

    # ---- ClientInfo ------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self.state is CONNECTED

    @property
    def remote_address(self) -> tuple[str, int] | str | None:
        """The peer's address, ``(host, port)`` (or the socket path), also once closed.

        uvloop's TCP transport saves the peer's address at accept and makes the tuple anew
        each time it is asked (inet_ntop and snprintf: ~2.4k instructions, 3% of a live
        connect under callgrind): on it the tuple is made when first asked for, at the
        latest when the connection is lost (``connection_lost``), not for every connect."""
        address = self._remote_address
        if address is _UNREAD:
            address = self._read_remote_address()
        return address  # type: ignore[return-value]

    @remote_address.setter
    def remote_address(self, address: tuple[str, int] | str | None) -> None:
        self._remote_address = address

    def _read_remote_address(self) -> tuple[str, int] | str | None:
        transport = self.transport
        address = transport.get_extra_info("peername") if transport is not None else None
        self._remote_address = address
        return address  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"<MQTTConnection {self.client_id!r} {self.remote_address} {self.state.name}>"

    # ---- asyncio.Protocol ------------------------------------------------------
    # (asyncio types the argument BaseTransport; every transport kushi serves is a Transport, and
    # mypyc, which compiles this module in the opt-in build, needs its write and pause methods)
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        self.opened_at = self.last_received = monotonic()
        # asked at once on other transports: they may not answer once closed (TLS: not in
        # connection_lost)
        self._remote_address = _UNREAD if type(transport) is _ADDRESS_KEEPING else \
            transport.get_extra_info("peername")
        self.broker.connection_opened(self)

    def buffer_updated(self, nbytes: int) -> None:
        self.reader.buffer_updated(nbytes)
        self.process_packets(nbytes)

    def data_received(self, data: bytes) -> None:
        """Bytes from a layer that hands them over (the WebSocket transport, the benchmarks)."""
        self.reader.feed(data)
        self.process_packets(len(data))

    def eof_received(self) -> bool | None:
        """The client closed without DISCONNECT (after one, the broker was told already):
        ``on_disconnect`` must see an error, not the None of a clean DISCONNECT."""
        if self.error is None:
            self.error = ConnectionResetError("the client closed the connection without DISCONNECT")
        return None   # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if self._remote_address is _UNREAD:
            # now, while the transport is at hand: a session keeps this object as its
            # ClientInfo, and the closed transport kept for a later read would be ~800 bytes
            # more per detached session (the address tuple ~150)
            self._read_remote_address()
        self.transport = None
        self._ended(exc)

    def _ended(self, exc: BaseException | None) -> None:
        """The connection is over for the broker (told once, at the first sign of it)."""
        if self._broker_told:
            return
        self.state = CLOSED
        self._broker_told = True
        self._out = ()
        # the session keeps this object as its ClientInfo: let go of what only the wire needed
        self.reader = PacketReader(0)
        self.get_buffer = self.reader.get_buffer
        self.inbound_aliases = self.outbound_aliases = None
        if self.auth_waiter is not None and not self.auth_waiter.done():
            self.auth_waiter.cancel()
        self.broker.connection_lost(self, exc or self.error, monotonic())

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._out:
            self.flush()

    # ---- reading ------------------------------------------------------------------
    def process_packets(self, received: int = 0) -> None:
        """Handle every complete packet the reader holds, ``received`` bytes after the last time
        (0: none came, the connection reads on after a pause); a bad packet ends the connection.

        One method for the read and its packets, not two: in sparse traffic a read is one
        packet, and the call less is ~340 instructions a message (callgrind,
        ``profile_hotpath.py SP --buffered``: 42,559 -> 42,223)."""
        now = monotonic()
        if received:
            self.last_received = now
            self.broker.bytes_received += received
        try:
            reader = self.reader
            broker = self.broker
            while True:
                state = self.state
                if state is CONNECTED:
                    # all of this read at once (the hot path); consecutive PUBACKs as one PubackRun,
                    # unless the async filters queue the packets one by one
                    packets = reader.read_packets(broker.async_filters is None)
                    if not packets:
                        return
                    broker.handle_packets(self, packets, now)
                    if reader.error_behind is None:
                        return   # the read was handled whole: a second read_packets finds nothing
                elif state is WAITING_FOR_CONNECT:
                    packet = reader.next_packet()
                    if packet is None:
                        return
                    if not isinstance(packet, Connect):
                        # [MQTT-3.1.0-1] close without a CONNACK
                        self.abort()
                        return
                    self.protocol_version = packet.protocol_version
                    self.state = CONNECTING
                    broker.begin_connect(self, packet, now)
                    if not reader.buffered():
                        # the CONNECT came alone, as nearly always: asking costs less than a
                        # read_packets that finds nothing (~900 against ~1,800 instructions)
                        return
                elif state is CONNECTING:
                    if self.auth_waiter is None:
                        # bytes after the CONNECT wait until it is answered; the socket is paused
                        # only once such bytes came (a system call less for most CONNECTs)
                        if self.reader.buffered():
                            self.hold_input()
                        return
                    packet = reader.next_packet()
                    if packet is None:
                        return
                    self._authentication_packet(packet)
                else:
                    return
        except KushiError as error:
            self.fail(error)
        except Exception:  # a bug or a failing hook: this connection ends, the worker goes on
            log.exception("internal error on the connection of %r", self.client_id)
            self.fail(KushiError("internal error", reason_code=0x83))

    def hold_input(self) -> None:
        """Stop reading from the socket (while a CONNECT waits for hooks): memory stays bounded."""
        if not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()

    def release_input(self) -> None:
        """Read from the socket again, and handle what was kept meanwhile."""
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()
        self.process_packets()

    def _authentication_packet(self, packet: Packet) -> None:
        """A packet during enhanced authentication: only AUTH may come [MQTT-3.1.2-30]."""
        waiter = self.auth_waiter
        self.auth_waiter = None
        if isinstance(packet, Auth) and waiter is not None and not waiter.done():
            waiter.set_result(packet)
            return
        if isinstance(packet, Disconnect):
            self.close()
            return
        raise ProtocolError("only AUTH may be sent during authentication")

    def resolve_topic_alias(self, packet: Publish) -> Publish:
        """Apply the inbound Topic Alias of a v5 PUBLISH; the result has no alias [MQTT-3.3.2-12]."""
        alias = packet.properties.topic_alias
        topic: str | None = packet.topic
        if alias is None:
            if not topic:
                raise ProtocolError("empty topic name without a topic alias")
            return packet
        if alias == 0 or alias > self.topic_alias_maximum:
            raise TopicAliasInvalid(f"topic alias {alias} is outside 1..{self.topic_alias_maximum}")
        aliases = self.inbound_aliases
        if topic:
            if aliases is None:
                aliases = self.inbound_aliases = {}
            aliases[alias] = topic
        else:
            topic = aliases.get(alias) if aliases is not None else None
            if topic is None:
                raise TopicAliasInvalid(f"topic alias {alias} was never set")
        return replace(packet, topic=topic, properties=replace(packet.properties, topic_alias=None),
                       raw=None)

    def outbound_alias(self, topic: str) -> tuple[int, bool] | None:
        """(alias, send the topic too) for a PUBLISH to this client, or None to send the topic only.

        The first ``topic_alias_out_maximum`` topics get aliases 1..maximum for the
        life of the connection [MQTT-3.1.2-26] [MQTT-3.3.2-7]; later topics go in full.
        """
        aliases = self.outbound_aliases
        if aliases is None:
            aliases = self.outbound_aliases = {}
        alias = aliases.get(topic)
        if alias is not None:
            return alias, False
        if len(aliases) >= self.topic_alias_out_maximum:
            return None
        alias = aliases[topic] = len(aliases) + 1
        return alias, True

    def alias_not_sent(self, topic: str, alias: tuple[int, bool] | None) -> None:
        """The PUBLISH that was to set up ``alias`` was dropped: the client never learnt it."""
        if alias is not None and alias[1]:
            del self.outbound_aliases[topic]  # type: ignore[union-attr]  # made with the alias

    def timer_deadline(self) -> float | None:
        """When this connection's timer runs out: the connect timeout until the CONNACK, then
        1.5 x keep alive after the last packet [MQTT-3.1.2-22]; None once closed, or without
        keep alive. The broker files the connection by it (``kushi.worker.deadlines``)."""
        state = self.state
        if state is CONNECTED:
            return self.last_received + 1.5 * self.keep_alive if self.keep_alive else None
        if state is CLOSED:
            return None
        return self.opened_at + self.broker.options.connect_timeout

    def check_timers(self, now: float) -> float | None:
        """Called by the broker's tick: connect timeout and keep alive [MQTT-3.1.2-22].

        Closes the connection if its timer ran out before ``now``; returns the deadline
        still ahead (None: none, or the connection is closing).
        """
        deadline = self.timer_deadline()
        if deadline is None or now <= deadline:
            return deadline
        if self.state is CONNECTED:
            self.fail(KeepAliveTimeout("no packet within 1.5 x keep alive"))
        else:
            self.abort()
        return None

    # ---- writing ------------------------------------------------------------------
    def send(self, packet: Packet) -> None:
        """Encode ``packet`` for this client and queue it for the next flush."""
        hooks = self.broker.hooks
        if hooks.provides("on_packet_encode"):
            packet = hooks.on_packet_encode(self, packet)
        data = encode(packet, self.protocol_version)
        properties = getattr(packet, "properties", None)
        if properties is not None and (properties.reason_string is not None
                                       or properties.user_properties) and packet.type is not PUBLISH:
            packet, data = self._without_problem_information(packet, data)
        self.write(data)
        if hooks.provides("on_packet_sent"):
            hooks.on_packet_sent(self, packet, data)

    def _without_problem_information(self, packet: Any, data: bytes) -> tuple[Any, bytes]:
        """Take the Reason String and User Properties off a packet where the client does not
        want them [MQTT-3.1.2-29], or, first the one then the other, where they would pass its
        Maximum Packet Size [MQTT-3.2.2-19/20] [MQTT-3.4.2-2/3] ... [MQTT-3.15.2-2/3]."""
        if not self.problem_information and packet.type not in (CONNACK, DISCONNECT):
            changes: tuple[dict[str, Any], ...] = ({"reason_string": None, "user_properties": ()},)
        else:
            changes = ({"reason_string": None}, {"user_properties": ()})
            limit = self.maximum_packet_size
            if not limit or len(data) <= limit:
                return packet, data
        for change in changes:
            packet = replace(packet, properties=replace(packet.properties, **change))
            data = encode(packet, self.protocol_version)
            if not self.maximum_packet_size or len(data) <= self.maximum_packet_size:
                break
        return packet, data

    def write(self, data: bytes | memoryview) -> None:
        """Queue bytes for this client; they go out once per loop iteration."""
        if self.transport is None or self.state is CLOSED:
            return
        out = self._out
        if out:
            out.append(data)
        else:
            self._out = [data]
        self._out_size += len(data)
        if not self._flush_scheduled:
            # flushed at the end of this loop iteration, with every connection written to in it,
            # by one callback (Broker.flush_all); written out here, not a call of the broker's:
            # a call less a message in sparse traffic (callgrind, profile_hotpath.py SP
            # --buffered: 42,001 -> 41,662 instructions a message)
            self._flush_scheduled = True
            broker = self.broker
            to_flush = broker.to_flush
            if not to_flush:
                broker.loop.call_soon(broker.flush_all)
            to_flush.append(self)

    def write_at_once(self, data: bytes) -> None:
        """Hand ``data`` to the transport now, unless bytes wait to be flushed (it goes behind
        them then: nothing overtakes what was written before).

        For the CONNACK: in a connection storm nearly every CONNACK is the one thing its
        connection writes in the loop iteration, and scheduling a flush for it (``write``'s
        call_soon, flush_all, flush) cost more than the write itself. The transport sends at once
        either way (no system call more, strace); what comes after goes out with the next
        flush.
        """
        transport = self.transport
        if self._out or self._writing_paused or transport is None or self.state is CLOSED:
            self.write(data)
            return
        self.broker.bytes_sent += len(data)
        transport.write(data)
        if transport.get_write_buffer_size() > self.write_buffer_limit:
            self._slow_consumer()

    def flush(self) -> None:
        """Hand what is buffered to the transport (the broker calls it once per loop iteration)."""
        self._flush_scheduled = False
        transport = self.transport
        if transport is None or not self._out:
            return
        if self._writing_paused:
            # the transport is full: hold the bytes here, within the limit
            if self._out_size + transport.get_write_buffer_size() > self.write_buffer_limit:
                self._slow_consumer()
            return
        out = self._out
        self._out = ()
        self.broker.bytes_sent += self._out_size
        self._out_size = 0
        transport.writelines(out)
        if transport.get_write_buffer_size() > self.write_buffer_limit:
            self._slow_consumer()

    def _slow_consumer(self) -> None:
        """The client reads slower than it is sent to: drop it, the others go on."""
        self.broker.slow_consumers_disconnected += 1
        log.warning("client %r disconnected: write buffer over %d bytes",
                    self.client_id, self.write_buffer_limit)
        self.abort()

    # ---- closing -----------------------------------------------------------------
    def fail(self, error: KushiError) -> None:
        """Report ``error`` to the client as the spec says (CONNACK, DISCONNECT or nothing), then close."""
        if self.state is CLOSED:
            return
        self.error = error
        connack_sent = self.state is CONNECTED
        version = reply_version(error, self.protocol_version or None)
        self.protocol_version = version  # the answer is encoded in it
        packet = error_packet(error, version, connack_sent)
        if packet is not None:
            self.send(packet)
        self.close()

    def close(self) -> None:
        """Write what is buffered, then close the connection."""
        transport = self.transport
        if transport is None or self.state is CLOSED:
            return
        self._flush_now()
        transport.close()
        self._ended(None)

    def abort(self) -> None:
        """Close at once, dropping anything unsent (bad first packet, timeout, slow consumer)."""
        transport = self.transport
        if transport is None:
            return
        self._out = ()
        transport.abort()
        self._ended(None)

    def _flush_now(self) -> None:
        if self._out and self.transport is not None:
            self._writing_paused = False
            self.flush()
