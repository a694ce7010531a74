"""PacketReader: bytes in, in any split; whole packets out (sans-I/O).

The connection feeds every chunk it receives and then takes packets until
``next_packet()`` returns None, or takes them all at once with ``read_packets()``
(the hot path: one call per read, small PUBLISH packets decoded inline). The fixed header is read first: a packet
declaring more than ``max_packet_size`` bytes is refused right there, before
its body is buffered, and nothing is ever allocated from a declared length.

Buffering: the reader keeps the chunk it is working through as one immutable
``bytes`` and walks an offset over it, so a chunk holding many packets is
parsed without copying it. Chunks that arrive while a packet is incomplete wait
in a list and are joined once, when enough bytes are there for that packet,
so a large packet arriving in small pieces costs one copy, not one per piece.

A decoded Publish has ``.raw``: the exact bytes of the whole packet, for
forwarding unchanged. Below LARGE_PUBLISH bytes, raw and payload are ``bytes``
slices (small slices of bytes are cheaper than memoryviews in CPython, and they
do not pin the chunk); from it on, they are memoryviews of the bytes read, so a
large payload is not copied in Python between the socket and its subscribers.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import replace
from struct import unpack_from
from typing import Any, Final

from kushi.errors import KushiError, MalformedPacket, PacketTooLarge

from .codec import decode_at, decode_connect, decode_publish
from .packets import MQTT_5, Packet, PubackBuilder, Publish, new_publish
from .properties import NO_PROPERTIES

__all__ = ["PacketReader", "PubackRun", "DEFAULT_MAX_PACKET_SIZE"]

DEFAULT_MAX_PACKET_SIZE: Final = 268_435_460
"""The largest packet MQTT can express: 1 + 4 + 268,435,455 bytes."""

PUBACK_WORDS: Final = 64
"""How many 4-byte words behind a PUBACK ``read_packets`` unpacks at once to find the PUBACKs after it."""

LARGE_PUBLISH: Final = 4096
"""From this size on, a PUBLISH's ``raw`` and ``payload`` are memoryviews of the bytes read."""

IN_PLACE_MAX: Final = 1_048_576
"""The largest PUBLISH received in place (``get_buffer``)."""

LANDING_READ: Final = 262_144
"""A landing buffer has room for one packet of the connection's large size at first, twice as
many after each read that filled one to its end (the socket held more), up to as many as fit
in this many bytes: one read then takes several large packets, handled as one batch (one run,
one route) instead of one read and one route each, while a connection that sends a large
packet now and then keeps a buffer of one."""

LANDING_POOL: Final = 24
"""Landing buffers a connection keeps for reuse once their packets are let go of (more than a
publisher's usual window of QoS 1 messages in flight, so the oldest is free when asked) ..."""

LANDING_POOL_BYTES: Final = 2_097_152
"""... and at most this many bytes of them (at least two buffers). S6 (64 KiB QoS 1 pairs, up to
1,024 messages in flight per subscriber): with 1 MiB, 39% of the buffers asked for were new
(zero-filled, 192 KiB each), with 2 MiB 3%."""

READ_SIZE: Final = 65_536
"""The size of the scratch buffer ``get_buffer`` offers between packets."""

_scratch = threading.local()   # one scratch buffer per thread (per event loop): filled and copied
                               # out within one get_buffer/buffer_updated pair, never kept


def scratch_buffer() -> memoryview:
    """A new scratch buffer, for the readers that read on one thread (``PacketReader(scratch=)``)."""
    return memoryview(bytearray(READ_SIZE))


def _thread_scratch() -> memoryview:
    """This thread's scratch buffer. A reader given none keeps it at its first read: reading
    the threading.local costs ~670 instructions (callgrind), and a connection reads on one thread."""
    view = getattr(_scratch, "view", None)
    if view is None:
        view = _scratch.view = scratch_buffer()
    return view


class PubackRun:
    """Consecutive PUBACKs with reason 0 and no properties, as one item of ``read_packets``.

    Not an MQTT packet: what ``read_packets(puback_runs=True)`` returns in place of
    a stretch of such PUBACKs, so that a subscriber's acknowledgements of a burst
    are taken in one step (the QoS 1 hot path). ``packet_ids`` are in wire order.
    """

    __slots__ = ("packet_ids",)

    def __init__(self, packet_ids: list[int]) -> None:
        self.packet_ids = packet_ids

    def __repr__(self) -> str:
        return f"PubackRun({self.packet_ids!r})"


class PacketReader:
    """Incremental MQTT packet parser for one connection.

    ``version`` is None until a CONNECT has been decoded (it is then that
    CONNECT's protocol level); the owner may set it, e.g. a client that knows
    the version it connected with. ``max_packet_size`` counts the whole packet,
    fixed header included, as MQTT 5's Maximum Packet Size does.
    """

    __slots__ = ("version", "max_packet_size", "_data", "_pos", "_pending", "_pending_size", "error_behind",
                 "_big", "_big_start", "_big_body", "_big_fill", "_big_end", "_done", "_landing",
                 "_landing_at", "_landing_size", "_landing_packets", "_offered", "_retired", "_scratch")

    def __init__(self, max_packet_size: int = DEFAULT_MAX_PACKET_SIZE,
                 scratch: memoryview | None = None) -> None:
        self.version: int | None = None
        self.max_packet_size = max_packet_size
        self._data = b""  # the chunk being parsed
        self._pos = 0  # offset of the next unparsed byte in _data
        self._pending: list[bytes] = []  # chunks received after _data
        self._pending_size = 0
        # found by read_packets behind the good packets it returned; the next call raises it
        self.error_behind: KushiError | None = None
        self._big: bytearray | None = None  # the landing buffer a large PUBLISH is being read into:
        self._big_start = 0                 # where it starts there, its body, how far it is read,
        self._big_body = 0                  # and its end
        self._big_fill = 0
        self._big_end = 0
        self._landing: bytearray | None = None   # the landing buffer reads go to (see get_buffer) ...
        self._landing_at = 0                     # ... from this offset on
        self._landing_size = 0                   # 0 until a large PUBLISH came; then its size
        self._landing_packets = 1                # room in a new landing buffer, in such packets
        self._offered: bytearray | None = None   # the landing buffer get_buffer gave, if it did
        self._retired: deque[bytearray] | None = None   # landing buffers whose packets may be held
        # the scratch buffer of get_buffer: ``scratch``, shared by the readers that read on
        # this thread (a broker's connections: no lookup a connection), else the thread's,
        # kept at the first get_buffer
        self._scratch: memoryview | None = scratch
        # PUBLISH packets read in place, an error last; () while there are none (an idle
        # connection keeps no list)
        self._done: list[Packet | KushiError] | tuple[()] = ()

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Add received bytes. Bytes objects are kept as they are, without a copy."""
        if not data:
            return
        if self._pos >= len(self._data) and not self._pending:
            self._data = data if type(data) is bytes else bytes(data)
            self._pos = 0
        else:
            self._pending.append(bytes(data))
            self._pending_size += len(data)

    def buffered(self) -> int:
        """How many received bytes are not yet returned as packets.

        A connection whose CONNECT waits for its hooks asks after each read (every client of a
        storm, in a cluster's worker): no generator unless packets were read in place
        (callgrind: 3,985 -> 1,483 instructions a call)."""
        size = len(self._data) - self._pos + self._pending_size
        if self._big is not None:
            size += self._big_fill - self._big_start
        if self._done:
            size += sum(len(packet.raw) for packet in self._done if isinstance(packet, Publish))  # type: ignore[misc, arg-type]
        return size

    # ---- receiving in place (asyncio.BufferedProtocol) ---------------------------------
    def get_buffer(self, sizehint: int = -1) -> memoryview:
        """Where the next read should go (``buffer_updated`` then says how much came).
        (``sizehint``, asyncio.BufferedProtocol's, is not read: the connection hands this
        method to its transport as its own.)

        Between packets, a scratch buffer shared by the thread's readers, whose bytes
        ``buffer_updated`` copies out (as a transport's new ``bytes`` would be). Once a
        connection has sent a large PUBLISH (LARGE_PUBLISH to IN_PLACE_MAX bytes), the
        rest of a *landing* buffer instead, with room for one or more packets of that size
        (LANDING_READ): the large PUBLISH packets a read brings are views of it, so their
        bytes are never copied or joined in Python, and one read may take several of them.
        One cut off at the end of a read is read on into place, up to its end and no further.
        """
        if self._landing_size:
            return self._landing_buffer()
        scratch = self._scratch
        if scratch is None:
            scratch = self._scratch = _thread_scratch()
        return scratch

    def buffer_updated(self, nbytes: int) -> None:
        """``nbytes`` were read into the buffer ``get_buffer`` gave.

        Until a large PUBLISH came, they are in the scratch buffer: copied out as the chunk
        to parse (``feed``'s usual case written out here: one call less a read, which is
        one packet in sparse traffic)."""
        if self._landing_size:
            self._landed(nbytes)
            return
        data = self._scratch[:nbytes].tobytes()   # type: ignore[index]  # (get_buffer set it)
        if self._pos >= len(self._data) and not self._pending:
            self._data = data
            self._pos = 0
            if nbytes < LARGE_PUBLISH:
                return
        else:
            self.feed(data)
        if len(self._data) - self._pos + self._pending_size >= LARGE_PUBLISH:
            # a large PUBLISH may be buffered: if so, later reads use landing buffers for its size
            header = self._large_publish_at(self._data, self._pos, len(self._data))
            if header is not None:
                self._landing_size = header[0]

    def _landing_buffer(self) -> memoryview:
        """``get_buffer`` once the connection has sent a large PUBLISH (see there)."""
        big = self._big
        if big is not None:
            return memoryview(big)[self._big_fill:self._big_end]
        if not self._done and self._pos == len(self._data) and not self._pending:
            landing = self._landing
            if landing is None or len(landing) - self._landing_at < self._landing_size:
                landing = self._landing = self._free_landing()
                self._landing_at = 0
            self._offered = landing
            return memoryview(landing)[self._landing_at:]
        self._offered = None
        scratch: memoryview = self._scratch   # type: ignore[assignment]  # (set by the read that
        if self._pos < len(self._data):         # found the large packet, through get_buffer)
            # a large packet begun: read no further than its end, so the next read starts a packet
            header = self._large_publish_at(self._data, self._pos, len(self._data))
            unread = len(self._data) - self._pos + self._pending_size
            if header is not None and header[0] > unread:
                return scratch[:min(READ_SIZE, header[0] - unread)]
        return scratch

    def _landed(self, nbytes: int) -> None:
        """``buffer_updated`` once the connection has sent a large PUBLISH: the read went into
        place (the large packet begun, or a landing buffer) or to the scratch buffer."""
        big = self._big
        if big is not None:
            self._big_fill += nbytes
            if self._big_fill == self._big_end:
                self._big = None
                packet = self._decode_in_place(big, self._big_start, self._big_body, self._big_end)
                if self._done:
                    self._done.append(packet)   # type: ignore[union-attr]
                else:
                    self._done = [packet]
            return
        landing = self._offered
        if landing is not None:
            self._offered = None
            self._take_landed(landing, self._landing_at, self._landing_at + nbytes)
            return
        self.feed(self._scratch[:nbytes].tobytes())   # type: ignore[index]

    def _take_landed(self, landing: bytearray, pos: int, end: int) -> None:
        """A read put ``landing[pos:end]``: its whole large PUBLISH packets are taken as views
        of it, and one cut off at the end is read on into place. Anything else (small packets)
        goes the general way, copied out as a scratch read would be."""
        if end == len(landing) and self._landing_packets < LANDING_READ // self._landing_size:
            self._landing_packets *= 2   # the read filled the buffer: the next one has more room
        if not self._done:
            self._done = []
        done = self._done
        while pos < end:
            header = self._large_publish_at(landing, pos, end)
            if header is None:
                break
            size, body = header
            if pos + size > end:
                if pos + size > len(landing):
                    # no room for the rest: what came of it moves to the start of a new buffer
                    # (a copy, only where packet sizes vary), sized for it if it is larger
                    self._landing_size = max(self._landing_size, size)
                    fresh = self._landing = self._free_landing()
                    view = memoryview(landing)[pos:end]
                    # the same buffer, free again: no overlapping copy
                    part: bytes | memoryview = view.tobytes() if fresh is landing else view
                    fresh[:end - pos] = part
                    landing, body, end, pos = fresh, body - pos, end - pos, 0
                self._big, self._big_start, self._big_body, self._big_fill, self._big_end = \
                    landing, pos, body, end, pos + size
                self._landing_at = pos + size
                return
            packet = self._decode_in_place(landing, pos, body, pos + size)
            done.append(packet)
            pos += size
            if isinstance(packet, KushiError):
                self._landing_at = len(landing)   # the stream is broken there: nothing behind it is read
                return
        self._landing_at = end
        if pos < end:
            self.feed(memoryview(landing)[pos:end])

    def _free_landing(self) -> bytearray:
        """A landing buffer for ``_landing_packets`` packets of ``_landing_size`` (at most as many
        as fit in LANDING_READ, at least one): the oldest one handed out before if its packets
        are let go of by now (no view of it left: not in flight, not being written), else a new one."""
        size = self._landing_size
        capacity = size * max(1, min(self._landing_packets, LANDING_READ // size))
        retired = self._retired
        if not retired or len(retired[-1]) != capacity:
            # a new size: the pool keeps none of the old (their packets hold them while they need them)
            length = max(2, min(LANDING_POOL, LANDING_POOL_BYTES // capacity))
            retired = self._retired = deque(maxlen=length)
        landing = retired[0] if retired else None
        if landing is not None:
            try:   # a bytearray with views alive cannot be resized: a packet of it is still held
                del landing[-1:]
            except BufferError:
                landing = None
            else:
                landing.append(0)
                retired.popleft()
        if landing is None:
            landing = bytearray(capacity)   # (zero-filled: the cost of a new one)
        retired.append(landing)
        return landing

    def _large_publish_at(self, data: bytes | bytearray, pos: int, end: int) -> tuple[int, int] | None:
        """(size, offset of the body) of a PUBLISH of LARGE_PUBLISH to IN_PLACE_MAX bytes (and
        within the maximum packet size) starting at ``data[pos]`` (``data[pos:end]`` read so far);
        None if it is anything else or its fixed header is not complete."""
        if self.version is None or end - pos < 2 or data[pos] >> 4 != 3:
            return None
        try:
            header = self._read_remaining_length(data, pos, min(end, pos + 5))  # type: ignore[arg-type]
        except KushiError:
            return None   # the parse that comes next names the error
        if header is None:
            return None
        remaining, body = header
        size = body - pos + remaining
        return (size, body) if LARGE_PUBLISH <= size <= min(IN_PLACE_MAX, self.max_packet_size) else None

    def _decode_in_place(self, landing: bytearray, start: int, body: int, end: int) -> Packet | KushiError:
        """The PUBLISH received whole into ``landing[start:end]`` (raw and payload are views of
        it), or the error decoding it (raised by the next read, in its turn)."""
        try:
            packet = decode_publish(landing[start], landing, body, end, self.version,  # type: ignore[arg-type]
                                    memoryview(landing)[start:end])
        except KushiError as error:
            return error
        # a slice of the bytearray, though the property is declared bytes: read through Any,
        # since a compiled build (mypyc) checks a declared attribute's type when it reads it
        properties: Any = packet.properties
        correlation = properties.correlation_data
        if correlation is not None and type(correlation) is not bytes:
            packet = replace(packet, properties=replace(properties, correlation_data=bytes(correlation)))
        return packet

    def _take_done(self) -> list[Packet | PubackRun]:
        """The packets read in place, in order; an error behind them is raised by the next call."""
        done: list[Any] = self._done   # type: ignore[assignment]
        self._done = ()
        if isinstance(done[-1], KushiError):
            error = done.pop()
            if not done:
                raise error
            self.error_behind = error
        return done   # type: ignore[return-value]

    def next_packet(self) -> Packet | None:
        """The next complete packet, or None if more bytes are needed.

        Raises PacketTooLarge as soon as a fixed header declares a packet bigger
        than max_packet_size, MalformedPacket for a Remaining Length of more than
        4 bytes, and whatever decoding the packet raises (kushi.errors classes).
        After an error the connection is to be closed; the reader is not reusable.
        """
        if self._done:
            done = self._done.pop(0)   # type: ignore[union-attr]
            if isinstance(done, KushiError):
                raise done
            return done
        data = self._data
        pos = self._pos
        size = len(data)
        # Fixed header: type byte, then Remaining Length (1 to 4 bytes).
        if size - pos >= 2 and data[pos + 1] < 128:
            remaining = data[pos + 1]
            body_start = pos + 2
        else:
            header = self._read_remaining_length(data, pos, size)
            if header is None:
                if self._pending and self._join_pending():
                    return self.next_packet()
                return None
            remaining, body_start = header
        end = body_start + remaining
        if end - pos > self.max_packet_size:
            raise PacketTooLarge(
                f"packet of {end - pos} bytes exceeds the maximum packet size {self.max_packet_size}"
            )
        if end > size:
            if self._pending and size - pos + self._pending_size >= end - pos:
                self._join_pending()
                return self.next_packet()
            return None
        self._pos = end
        first_byte = data[pos]
        if first_byte >> 4 == 3 and self.version is not None:
            if end - pos >= LARGE_PUBLISH:  # a view: the payload is not copied on its way through
                return decode_publish(first_byte, data, body_start, end, self.version,
                                      memoryview(data)[pos:end])
            raw = data[pos:end]
            return decode_publish(first_byte, raw, body_start - pos, end - pos, self.version, raw)
        if first_byte == 0x10 and self.version is None:
            # The first CONNECT fixes the version; a second one is the broker's
            # Protocol Error [MQTT-3.1.0-2] and must not switch the wire form.
            packet = decode_connect(data, body_start, end)
            self.version = packet.protocol_version
            return packet
        return decode_at(first_byte, data, body_start, end, self.version)

    def read_packets(self, puback_runs: bool = False) -> list[Packet | PubackRun]:
        """Every complete packet buffered, in order; an empty list if more bytes are needed.

        The batch form of ``next_packet``, for a connection that handles a whole
        read before writing anything (ARCHITECTURE.md, "The hot path"). A PUBLISH
        of fewer than 128 bytes with QoS 0 or 1 and no properties, and a PUBACK with
        reason 0, are decoded right here, in the loop; anything else goes through the same code as
        ``next_packet``, so both give the same packets and raise the same errors.

        Before a CONNECT has set the version, at most that one packet is returned:
        how the packets behind it are read depends on it. If a bad packet follows
        good ones, the good ones are returned and the error is raised by the next
        call, so the owner handles the packets in the order they came. Otherwise
        (a version set, no ``error_behind``) a call right after finds nothing: the owner
        of a read need not make it (one call less a read, where a read is one packet).

        ``puback_runs``: consecutive PUBACKs with reason 0 come as one ``PubackRun``
        (for an owner that needs no PUBACK one by one: no hook reads packets).
        """
        broken = self.error_behind
        if broken is not None:   # the stream is broken there: nothing behind the bad packet is read
            self.error_behind = None
            self._data, self._pos, self._pending, self._pending_size = b"", 0, [], 0
            raise broken
        data = self._data
        pos = self._pos
        if self._done:   # the packets read in place come before any bytes buffered
            packets = self._take_done()
            if self.error_behind is not None:
                return packets
        elif pos == len(data) and not self._pending:
            return []
        elif (puback_runs and len(data) - pos == 4 and data[pos] == 0x40 and data[pos + 1] == 2
                and not self._pending and self.version is not None and self.max_packet_size >= 4):
            # a read of one PUBACK with reason 0 (a subscriber acknowledging sparse traffic):
            # the PubackRun the loop below makes, without its set-up (callgrind,
            # profile_hotpath.py L3 --buffered: 88,288 -> 85,066 instructions a message)
            self._pos = pos + 4
            return [PubackRun([data[pos + 2] << 8 | data[pos + 3]])]
        else:
            packets = []
        version = self.version
        if version is None:   # (never with packets read in place: they need the version)
            packet = self.next_packet()
            return [] if packet is None else [packet]
        v5 = version == MQTT_5
        append = packets.append
        acks: list[int] | None = None   # the packet ids of the PubackRun last appended
        size = len(data)
        small_fits = self.max_packet_size >= 129  # any packet of < 128 bytes is within the limit
        last_head = b"\x00"   # the bytes up to the topic's end of the last good PUBLISH, and its topic
        last_topic = ""
        # The last PUBLISH decoded inline: its head, size, where its body and packet id start
        # (0: QoS 0), flags. A packet with the same head is taken in a few steps (a run).
        # (run_topic, run_size, run_body, run_id_at, run_qos, run_retain are set with run_head and
        # read only while it is set: not made for a read of one packet; declared, not assigned)
        run_head: bytes | None = None
        run_topic: str
        run_size: int
        run_body: int
        run_id_at: int
        run_qos: int
        run_retain: bool
        try:
            while True:
                if pos == size and not self._pending:
                    return packets   # all read, the common end
                if run_head is not None and data.startswith(run_head, pos) and pos + run_size <= size:
                    end = pos + run_size
                    packet_id = data[pos + run_id_at] << 8 | data[pos + run_id_at + 1] if run_id_at else None
                    if packet_id != 0 and not (v5 and data[pos + run_body - 1]):
                        append(new_publish(run_topic, data[pos + run_body:end], run_qos, run_retain,
                                           False, packet_id, NO_PROPERTIES, data[pos:end]))
                        pos = end
                        continue
                length = data[pos + 1] if pos + 2 <= size else 128
                end = pos + 2 + length
                if length >= 128 or end > size or not small_fits:
                    # incomplete, long or maybe too large: the general path decides
                    self._pos = pos
                    packet = self.next_packet()
                    if packet is None:
                        return packets
                    append(packet)
                    data = self._data
                    pos = self._pos
                    size = len(data)
                    continue
                first_byte = data[pos]
                if first_byte & 0xF6 != 0x30 and first_byte & 0xF6 != 0x32:
                    # not a QoS 0/1 PUBLISH (with any retain flag and DUP)
                    if first_byte >> 4 == 3:
                        raw = data[pos:end]
                        append(decode_publish(first_byte, raw, 2, end - pos, version, raw))
                    elif first_byte == 0x40 and length == 2:  # PUBACK, reason 0: the QoS 1 hot path
                        if not puback_runs:
                            append(PubackBuilder(data[pos + 2] << 8 | data[pos + 3]))  # type: ignore[arg-type]
                        elif acks is not None and type(packets[-1]) is PubackRun:
                            acks.append(data[pos + 2] << 8 | data[pos + 3])
                        else:
                            # a subscriber acknowledges a burst in one write: the PUBACKs
                            # right behind this one are taken as 32-bit words, 0x4002 <id>
                            count = (size - end) >> 2   # (not min(): ~1,300 instructions a call)
                            if count > PUBACK_WORDS:
                                count = PUBACK_WORDS
                            acks = [data[pos + 2] << 8 | data[pos + 3]]
                            if count:
                                for word in unpack_from(f">{count}I", data, end):
                                    if word >> 16 != 0x4002:
                                        break
                                    acks.append(word & 0xFFFF)
                                    end += 4
                            append(PubackRun(acks))
                    else:
                        append(decode_at(first_byte, data, pos + 2, end, version))
                    pos = end
                    continue
                # PUBLISH inline: fixed header (2 bytes), topic, [packet id], [properties], payload.
                # A packet starting with the same bytes as the last good one, up to the end of
                # its topic, has the same flags, length and topic: the topic is not read again.
                if last_topic and data.startswith(last_head, pos):   # (no call for a read's first)
                    topic_end = pos + len(last_head)
                    topic = last_topic
                else:
                    topic_end = pos + 4 + (data[pos + 2] << 8 | data[pos + 3]) if length >= 2 else end + 1
                    topic = None
                if first_byte & 2:
                    body = topic_end + 2
                    packet_id = data[topic_end] << 8 | data[topic_end + 1] if body <= end else 0
                else:
                    body = topic_end
                    packet_id = None
                    if first_byte & 8:
                        body = end + 1  # DUP on QoS 0: the full decoder names the error
                if v5:
                    body += 1
                    if body <= end and data[body - 1]:
                        body = end + 1  # properties: the full decoder reads them
                if topic is None and body <= end:
                    topic = data[pos + 4 : topic_end].decode("utf-8", "replace")
                    if topic and "+" not in topic and "#" not in topic and "\x00" not in topic \
                            and "\ufffd" not in topic:
                        if end < size:   # (for the packets behind it: none behind a read's last)
                            last_head = data[pos:topic_end]
                            last_topic = topic
                    else:
                        body = end + 1
                if body > end or packet_id == 0:
                    # an error, properties, an empty topic (alias) or a U+FFFD to check: the full decoder
                    raw = data[pos:end]
                    append(decode_publish(first_byte, raw, 2, end - pos, version, raw))
                else:
                    append(new_publish(topic, data[body:end], first_byte & 2 and 1, first_byte & 1 == 1,  # type: ignore[arg-type]
                                       first_byte & 8 == 8, packet_id, NO_PROPERTIES,
                                       data[pos:end]))
                    # a run may follow (not behind the read's last packet; DUP: never a run)
                    if end < size and run_head is not last_head and not first_byte & 8:
                        run_head = last_head
                        run_topic = topic  # type: ignore[assignment]  # (a str: body <= end)
                        run_size = end - pos
                        run_body = body - pos
                        run_id_at = topic_end - pos if first_byte & 2 else 0
                        run_qos = first_byte & 2 and 1
                        run_retain = first_byte & 1 == 1
                pos = end
        except KushiError as error:
            if not packets:
                raise
            self.error_behind = error
            return packets
        finally:
            if data is self._data:
                self._pos = pos

    @staticmethod
    def _read_remaining_length(data: bytes | bytearray, pos: int, size: int) -> tuple[int, int] | None:
        """(Remaining Length, offset of the body), or None if the header is incomplete.

        The shortest-form rule of [MQTT-1.5.5-1] is checked by the decoder for
        varints inside packets; here only the 4-byte limit matters for safety.
        """
        value = 0
        shift = 0
        index = pos + 1
        while index < size:
            byte = data[index]
            value |= (byte & 0x7F) << shift
            index += 1
            if byte < 128:
                if byte == 0 and index - pos > 2:
                    raise MalformedPacket("remaining length not in its shortest form [MQTT-1.5.5-1]")
                return value, index
            if index - pos > 4:
                raise MalformedPacket("remaining length longer than 4 bytes")
            shift += 7
        return None

    def _join_pending(self) -> bool:
        """Move the pending chunks behind the unparsed rest of _data; True if any moved."""
        if not self._pending:
            return False
        rest = memoryview(self._data)[self._pos :]  # one copy for all: the join
        self._data = b"".join([rest, *self._pending])
        rest.release()
        self._pos = 0
        self._pending = []
        self._pending_size = 0
        return True
