"""kushi.protocol.reader.PacketReader: incremental framing of a byte stream into packets."""

from __future__ import annotations

import dataclasses
import tracemalloc

import pytest
from support.rawclient import frame, mqtt_string

from kushi.errors import MalformedPacket, PacketTooLarge, ProtocolError
from kushi.protocol.codec import encode
from kushi.protocol.packets import MQTT_3_1_1, MQTT_5, Connect, Pingreq, Puback, Publish
from kushi.protocol.properties import Properties
from kushi.protocol.reader import DEFAULT_MAX_PACKET_SIZE, PacketReader, scratch_buffer


def reader_for(version: int | None = MQTT_5, max_packet_size: int = DEFAULT_MAX_PACKET_SIZE) -> PacketReader:
    reader = PacketReader(max_packet_size)
    reader.version = version
    return reader


def drain(reader: PacketReader) -> list[object]:
    packets = []
    while (packet := reader.next_packet()) is not None:
        packets.append(packet)
    return packets


def test_needs_more_bytes_returns_none() -> None:
    reader = reader_for()
    assert reader.next_packet() is None
    reader.feed(b"\x30")
    assert reader.next_packet() is None
    reader.feed(b"\x04\x00\x01")
    assert reader.next_packet() is None
    reader.feed(b"a\x00")
    assert reader.next_packet() == Publish("a")


def test_one_chunk_with_many_packets_gives_them_all_in_order() -> None:
    sent = [Publish("a", b"1"), Puback(7), Pingreq(), Publish("b/c", b"2" * 300, qos=1, packet_id=9)]
    reader = reader_for()
    reader.feed(b"".join(encode(packet, MQTT_5) for packet in sent))
    assert drain(reader) == sent
    assert reader.buffered() == 0


def test_one_byte_at_a_time_gives_the_same_packets() -> None:
    sent = [Connect(client_id="c"), Publish("t" * 200, b"x" * 20_000, qos=2, packet_id=1), Pingreq()]
    stream = b"".join(encode(packet, MQTT_5) for packet in sent)
    reader = PacketReader()
    received = []
    for index in range(len(stream)):
        reader.feed(stream[index : index + 1])
        received.extend(drain(reader))
    assert received == sent


def test_accepts_bytearray_and_memoryview_chunks() -> None:
    data = encode(Publish("a", b"xyz"), MQTT_5)
    reader = reader_for()
    reader.feed(bytearray(data[:3]))
    reader.feed(memoryview(data)[3:])
    assert drain(reader) == [Publish("a", b"xyz")]


def test_publish_raw_is_the_exact_packet_bytes() -> None:
    first = encode(Publish("a/b", b"one", retain=True), MQTT_5)
    second = encode(Publish("c", b"two", qos=1, packet_id=3, properties=Properties(content_type="t")), MQTT_5)
    reader = reader_for()
    reader.feed(first + second[:5])
    reader.feed(second[5:])
    one, two = drain(reader)
    assert bytes(one.raw) == first and bytes(two.raw) == second
    assert one.payload == b"one" and two.payload == b"two"


def test_decoded_publish_is_a_true_frozen_publish() -> None:
    """The fast construction path yields exactly what the dataclass constructor would."""
    reader = reader_for()
    reader.feed(encode(Publish("a", b"x", qos=1, packet_id=2), MQTT_5))
    packet = reader.next_packet()
    expected = Publish("a", b"x", qos=1, packet_id=2)
    assert type(packet) is Publish
    assert packet == expected and hash(packet) == hash(expected)
    assert repr(packet) == repr(expected)
    assert dataclasses.replace(packet, qos=0, packet_id=None) == Publish("a", b"x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        packet.topic = "b"  # type: ignore[misc]


def test_version_is_set_by_the_connect() -> None:
    reader = PacketReader()
    assert reader.version is None
    reader.feed(encode(Connect(protocol_version=MQTT_3_1_1, client_id="c"), MQTT_3_1_1))
    assert isinstance(reader.next_packet(), Connect)
    assert reader.version == MQTT_3_1_1
    reader.feed(encode(Puback(1, 0x10), MQTT_5))  # a v5 form is not read as 3.1.1
    with pytest.raises(MalformedPacket):
        reader.next_packet()


def test_a_second_connect_does_not_change_the_version() -> None:
    reader = PacketReader()
    reader.feed(encode(Connect(client_id="c"), MQTT_5) + encode(Connect(protocol_version=4, client_id="c"), 4))
    assert [type(packet) for packet in drain(reader)] == [Connect, Connect]
    assert reader.version == MQTT_5


def test_first_packet_other_than_connect_is_refused() -> None:
    """[MQTT-3.1.0-1] the broker closes the connection, without a CONNACK."""
    reader = PacketReader()
    reader.feed(encode(Publish("a"), MQTT_3_1_1))
    with pytest.raises(ProtocolError):
        reader.next_packet()


def test_packet_too_large_is_refused_from_the_fixed_header_alone() -> None:
    """[MQTT-3.2.2-15] refused before the body arrives: only the 5 header bytes were fed."""
    reader = reader_for(max_packet_size=1024)
    reader.feed(b"\x30\xff\xff\xff\x7f")  # declares 268,435,455 bytes
    with pytest.raises(PacketTooLarge) as caught:
        reader.next_packet()
    assert caught.value.reason_code == 0x95
    assert reader.buffered() == 5


def test_nothing_is_allocated_from_the_declared_length() -> None:
    """A header declaring 256 MB within the limit allocates nothing for it while the body is missing."""
    reader = reader_for()
    tracemalloc.start()
    try:
        reader.feed(b"\x30\xff\xff\xff\x7f" + b"\x00\x01a")
        assert reader.next_packet() is None
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 100_000


def test_maximum_packet_size_counts_the_fixed_header() -> None:
    packet = frame(0x30, mqtt_string("a") + b"\x00" + b"x" * 95)  # 2 + 3 + 1 + 95 = 101 bytes
    assert len(packet) == 101
    reader = reader_for(max_packet_size=101)
    reader.feed(packet)
    assert reader.next_packet() == Publish("a", b"x" * 95)
    reader = reader_for(max_packet_size=100)
    reader.feed(packet[:2])
    with pytest.raises(PacketTooLarge):
        reader.next_packet()


def test_max_packet_size_may_change_after_connect() -> None:
    reader = PacketReader()
    reader.feed(encode(Connect(client_id="c"), MQTT_5))
    reader.next_packet()
    reader.max_packet_size = 10
    reader.feed(encode(Publish("a", b"x" * 20), MQTT_5))
    with pytest.raises(PacketTooLarge):
        reader.next_packet()


def test_a_fifth_remaining_length_byte_is_malformed() -> None:
    reader = reader_for()
    reader.feed(b"\x30\x80\x80\x80\x80")
    with pytest.raises(MalformedPacket):
        reader.next_packet()


def test_a_non_shortest_remaining_length_is_malformed() -> None:
    """[MQTT-1.5.5-1] C0 80 00: a remaining length of 0 written in two bytes."""
    reader = reader_for()
    reader.feed(b"\xc0\x80\x00")
    with pytest.raises(MalformedPacket):
        reader.next_packet()


def test_a_large_packet_in_small_pieces_is_joined_once() -> None:
    """Waiting for a body does not re-copy the buffer on each piece (no quadratic cost)."""
    payload = bytes(range(256)) * 4096  # 1 MiB
    data = encode(Publish("big", payload), MQTT_5)
    reader = reader_for()
    for start in range(0, len(data), 4096):
        reader.feed(data[start : start + 4096])
        assert len(reader._data) <= 4096  # later pieces wait in the pending list
        if start + 4096 < len(data):
            assert reader.next_packet() is None
    assert reader.next_packet() == Publish("big", payload)


def test_buffered_counts_the_bytes_read_in_place_and_not_yet_taken() -> None:
    """A large PUBLISH is read into a landing buffer: its bytes count while it is cut off there
    and once it is whole, until the connection takes it."""
    reader = reader_for(MQTT_5)
    sent = Publish("t", b"x" * 5000)
    packet = encode(sent, MQTT_5)

    def read(data: bytes) -> None:
        buffer = reader.get_buffer()
        buffer[: len(data)] = data
        reader.buffer_updated(len(data))

    read(packet)   # the first one comes through the scratch buffer; later reads land in place
    assert reader.buffered() == len(packet)
    assert reader.next_packet() == sent and reader.buffered() == 0
    read(packet[:3000])
    assert reader.buffered() == 3000
    read(packet[3000:])
    assert reader.buffered() == len(packet)
    assert reader.next_packet() == sent and reader.buffered() == 0


def test_readers_given_one_scratch_buffer_read_into_it_and_keep_their_own_bytes() -> None:
    """A broker's connections share one scratch buffer (``PacketReader(scratch=)``): each read
    lands there and is copied out by ``buffer_updated``, so readers taking turns, a packet cut
    between two reads included, each get their own packets."""
    scratch = scratch_buffer()
    first, second = PacketReader(scratch=scratch), PacketReader(scratch=scratch)
    first.version = second.version = MQTT_3_1_1
    mine, theirs = Publish("a", b"1" * 100), Publish("b", b"2" * 100)
    data = {first: encode(mine, MQTT_3_1_1), second: encode(theirs, MQTT_3_1_1)}

    def read(reader: PacketReader, part: bytes) -> None:
        buffer = reader.get_buffer()
        assert buffer.obj is scratch.obj   # the scratch given, not the thread's
        buffer[: len(part)] = part
        reader.buffer_updated(len(part))

    read(first, data[first][:50])
    read(second, data[second][:70])
    read(first, data[first][50:])
    read(second, data[second][70:])
    assert first.read_packets() == [mine] and second.read_packets() == [theirs]


def test_read_packets_gives_a_read_whole_packets_in_place_and_the_small_ones_behind() -> None:
    """A read into a landing buffer brings a large PUBLISH (taken in place) and a small one
    behind it (buffered): one read_packets gives both, in order, and a call after it finds
    nothing, so the connection makes one call a read (the second found nothing, always)."""
    reader = reader_for(MQTT_5)
    large = Publish("t", b"x" * 5000)
    small = Publish("s", b"y")

    def read(data: bytes) -> None:
        buffer = reader.get_buffer()
        buffer[: len(data)] = data
        reader.buffer_updated(len(data))

    read(encode(large, MQTT_5))   # through the scratch buffer: landing buffers from now on
    assert reader.read_packets() == [large]
    read(encode(large, MQTT_5))   # fills a landing buffer of one: the next has room for two
    assert reader.read_packets() == [large]
    read(encode(large, MQTT_5) + encode(small, MQTT_5))
    assert reader.read_packets() == [large, small]
    assert reader.error_behind is None and reader.read_packets() == []


def test_a_read_of_one_puback_is_a_puback_run_of_one_and_nothing_more() -> None:
    """A subscriber acknowledging sparse traffic sends one PUBACK a read: read_packets gives it
    as a PubackRun of its packet id (puback_runs), or as the Puback itself, and the reader has
    nothing left; a PUBACK cut in two is given once whole (by the general decoder, a Puback)."""
    reader = reader_for(MQTT_3_1_1)
    reader.feed(b"\x40\x02\x12\x34")
    [run] = reader.read_packets(puback_runs=True)
    assert run.packet_ids == [0x1234] and reader.buffered() == 0 and reader.read_packets(True) == []
    reader.feed(b"\x40\x02\x00\x07")
    assert reader.read_packets() == [Puback(7)]
    reader.feed(b"\x40\x02")
    assert reader.read_packets(puback_runs=True) == []
    reader.feed(b"\x00\x09")
    assert reader.read_packets(puback_runs=True) == [Puback(9)] and reader.buffered() == 0
