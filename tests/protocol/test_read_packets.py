"""PacketReader.read_packets: the batch form of next_packet gives the same packets and errors.

read_packets decodes small QoS 0/1 PUBLISH packets inline, in its own loop; these
tests hold it to what next_packet (the general decoder) gives for the same bytes,
in any split, valid or not.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from packet_strategies import VERSIONS, packets, publishes

from kushi.errors import KushiError, MalformedPacket, ProtocolError
from kushi.protocol.codec import encode
from kushi.protocol.packets import MQTT_3_1_1, MQTT_5, Connect, Pingreq, Puback, Publish
from kushi.protocol.properties import Properties
from kushi.protocol import reader as reader_module
from kushi.protocol.reader import LANDING_READ, LARGE_PUBLISH, PUBACK_WORDS, PacketReader, PubackRun

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def reader_for(version: int | None, max_packet_size: int = 268_435_460) -> PacketReader:
    reader = PacketReader(max_packet_size)
    reader.version = version
    return reader


def outcome_one_by_one(chunks: list[bytes], version: int | None) -> tuple[list[object], type | None]:
    """(packets, error class) when the stream is read with next_packet."""
    reader, received = reader_for(version, 4096), []
    try:
        for chunk in chunks:
            reader.feed(chunk)
            while (packet := reader.next_packet()) is not None:
                received.append(packet)
    except KushiError as error:
        return received, type(error)
    return received, None


def batches(reader: PacketReader, puback_runs: bool = False) -> Iterator[list[object]]:
    """The batches of read_packets for what the reader holds, as MQTTConnection takes them:
    once the version is known, one call gives all there is, unless an error waits behind the
    packets (``error_behind``, raised by the next call), so that a call after it finds nothing
    and the connection does not make it."""
    while True:
        version_known = reader.version is not None
        batch = reader.read_packets(puback_runs)
        if not batch:
            return
        yield batch
        if version_known and reader.error_behind is None:
            assert reader.read_packets(puback_runs) == []
            return


def outcome_batched(chunks: list[bytes], version: int | None, puback_runs: bool = False,
                    max_packet_size: int = 4096) -> tuple[list[object], type | None]:
    """(packets, error class) when the stream is read with read_packets (a PubackRun counted
    as the PUBACKs it stands for)."""
    reader, received = reader_for(version, max_packet_size), []
    try:
        for chunk in chunks:
            reader.feed(chunk)
            for batch in batches(reader, puback_runs):
                for packet in batch:
                    if type(packet) is PubackRun:
                        received.extend(Puback(packet_id) for packet_id in packet.packet_ids)
                    else:
                        received.append(packet)
    except KushiError as error:
        return received, type(error)
    return received, None


def split(stream: bytes, cuts: list[int]) -> list[bytes]:
    cuts = sorted(cuts)
    return [stream[start:end] for start, end in zip([0, *cuts], [*cuts, len(stream)])]


@pytest.mark.parametrize("puback_runs", [False, True])
@pytest.mark.parametrize("version", VERSIONS)
@SETTINGS
@given(data=st.data())
def test_any_split_of_a_stream_gives_what_next_packet_gives(version: int, puback_runs: bool,
                                                            data: st.DataObject) -> None:
    sent = data.draw(st.lists(packets(version) | st.builds(Puback, st.integers(1, 65535)),
                              min_size=1, max_size=8))
    stream = b"".join(encode(packet, version) for packet in sent)
    chunks = split(stream, data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    received, error = outcome_batched(chunks, version, puback_runs)
    assert error is None
    assert received == sent
    one_by_one, _ = outcome_one_by_one(chunks, version)
    assert [bytes(p.raw) for p in received if isinstance(p, Publish)] == \
        [bytes(p.raw) for p in one_by_one if isinstance(p, Publish)]


@pytest.mark.parametrize("puback_runs", [False, True])
@pytest.mark.parametrize("version", VERSIONS)
@SETTINGS
@given(data=st.data(), position=st.integers(0, 10_000), replacement=st.integers(0, 255))
def test_a_corrupted_stream_gives_the_same_packets_and_error(
    version: int, puback_runs: bool, data: st.DataObject, position: int, replacement: int
) -> None:
    """One byte changed anywhere: the same good packets first, then the same error class."""
    sent = data.draw(st.lists(packets(version) | st.builds(Puback, st.integers(1, 65535)),
                              min_size=1, max_size=6))
    stream = bytearray(b"".join(encode(packet, version) for packet in sent))
    stream[position % len(stream)] = replacement
    chunks = split(bytes(stream), data.draw(st.lists(st.integers(0, len(stream)), max_size=4)))
    assert outcome_batched(chunks, version, puback_runs) == outcome_one_by_one(chunks, version)


GOOD = Publish("a/b", b"payload", qos=1, packet_id=5)

BAD_PUBLISHES = [
    pytest.param(b"\x30\x05\x00\x03a/+", ProtocolError, id="wildcard-in-topic"),
    pytest.param(b"\x30\x05\x00\x03a\x00b", MalformedPacket, id="nul-in-topic"),
    pytest.param(b"\x30\x04\x00\x02\xc3\x28", MalformedPacket, id="ill-formed-utf8"),
    pytest.param(b"\x32\x05\x00\x01a\x00\x00", ProtocolError, id="packet-id-0"),
    pytest.param(b"\x38\x03\x00\x01a", MalformedPacket, id="dup-on-qos-0"),
    pytest.param(b"\x36\x05\x00\x01a\x00\x01", MalformedPacket, id="qos-3"),
    pytest.param(b"\x30\x02\x00\x00", ProtocolError, id="empty-topic"),
    pytest.param(b"\x30\x01\x00", MalformedPacket, id="too-short"),
    pytest.param(b"\x30\x04\x00\x09ab", MalformedPacket, id="topic-past-the-end"),
]


@pytest.mark.parametrize(("bad", "error"), BAD_PUBLISHES)
def test_good_packets_before_a_bad_one_come_first_then_its_error(bad: bytes, error: type) -> None:
    reader = reader_for(MQTT_3_1_1)
    reader.feed(encode(GOOD, MQTT_3_1_1) * 2 + bad + encode(Pingreq(), MQTT_3_1_1))
    assert reader.read_packets() == [GOOD, GOOD]
    with pytest.raises(error):
        reader.read_packets()


@pytest.mark.parametrize(("bad", "error"), BAD_PUBLISHES)
def test_a_bad_publish_alone_raises_at_once(bad: bytes, error: type) -> None:
    reader = reader_for(MQTT_3_1_1)
    reader.feed(bad)
    with pytest.raises(error):
        reader.read_packets()


def test_before_the_connect_only_the_connect_is_returned() -> None:
    """What follows a CONNECT is read in its version, so the batch stops after it."""
    reader = reader_for(None)
    reader.feed(encode(Connect(protocol_version=MQTT_3_1_1, client_id="c"), MQTT_3_1_1)
                + encode(GOOD, MQTT_3_1_1))
    assert [type(p) for p in reader.read_packets()] == [Connect]
    assert reader.version == MQTT_3_1_1
    assert reader.read_packets() == [GOOD]
    assert reader.read_packets() == []


def test_an_inline_decoded_publish_is_a_true_frozen_publish_with_its_raw_bytes() -> None:
    encoded = encode(Publish("t", b"x", qos=1, retain=True, dup=True, packet_id=3), MQTT_5)
    reader = reader_for(MQTT_5)
    reader.feed(encoded)
    [packet] = reader.read_packets()
    assert type(packet) is Publish
    assert (packet.retain, packet.dup, packet.qos, packet.packet_id) == (True, True, 1, 3)
    assert bytes(packet.raw) == encoded
    with pytest.raises(AttributeError):
        packet.topic = "other"  # type: ignore[misc]


def test_an_inline_decoded_puback_is_a_true_frozen_puback() -> None:
    reader = reader_for(MQTT_3_1_1)
    reader.feed(b"\x40\x02\x01\x02" + b"\x40\x02\x00\x00")
    first, second = reader.read_packets()
    assert type(first) is Puback and first == Puback(0x102)
    assert second == Puback(0)  # packet id 0 is the broker's business, as with next_packet
    with pytest.raises(AttributeError):
        first.packet_id = 5  # type: ignore[misc]


def test_consecutive_pubacks_come_as_one_run_when_asked() -> None:
    """A PUBACK with reason 0 joins the PubackRun right before it; anything else ends the run."""
    reader = reader_for(MQTT_5)
    acks = [Puback(1), Puback(2), Puback(3, 0x10), Puback(4), Publish("t", b"x"), Puback(5), Puback(6)]
    reader.feed(b"".join(encode(packet, MQTT_5) for packet in acks))
    first, coded, second, publish, third = reader.read_packets(puback_runs=True)
    assert [type(first), type(second), type(third)] == [PubackRun] * 3
    assert (first.packet_ids, second.packet_ids, third.packet_ids) == ([1, 2], [4], [5, 6])
    assert coded == Puback(3, 0x10) and publish == Publish("t", b"x")


def test_a_burst_of_pubacks_longer_than_one_look_ahead_is_one_run_in_order() -> None:
    """The PUBACKs behind a PUBACK are taken PUBACK_WORDS at a time: a longer burst, and one
    ending in a half-received PUBACK, still give every id once, in wire order."""
    ids = [(n * 7919) % 65535 + 1 for n in range(3 * PUBACK_WORDS + 5)]
    data = b"".join(encode(Puback(packet_id), MQTT_3_1_1) for packet_id in ids)
    reader = reader_for(MQTT_3_1_1)
    reader.feed(data + b"\x40\x02\x00")   # the next PUBACK, one byte short
    (run,) = reader.read_packets(puback_runs=True)
    assert type(run) is PubackRun and run.packet_ids == ids
    reader.feed(b"\x09")
    assert reader.read_packets(puback_runs=True) == [Puback(9)]   # completed across reads: read whole


@pytest.mark.parametrize("version", VERSIONS)
def test_a_run_on_one_topic_reuses_the_topic_and_keeps_each_packet_its_own(version: int) -> None:
    """Consecutive packets with the same head (flags, length, topic) share the decoded topic."""
    sent = [Publish("run/topic", bytes([n]) * 8, qos=n % 2, packet_id=(n + 1) if n % 2 else None)
            for n in range(6)] + [Publish("run/topic", b"other size"), Publish("run/other", b"x" * 8)]
    reader = reader_for(version)
    reader.feed(b"".join(encode(packet, version) for packet in sent))
    received = reader.read_packets()
    assert received == sent
    assert [bytes(p.raw) for p in received] == [encode(p, version) for p in sent]


def test_a_bad_topic_is_refused_every_time_it_comes() -> None:
    bad = b"\x30\x05\x00\x03a/#"
    reader = reader_for(MQTT_3_1_1)
    reader.feed(bad + bad)
    with pytest.raises(ProtocolError):
        reader.read_packets()


@pytest.mark.parametrize("version", VERSIONS)
def test_a_large_publish_is_a_view_of_the_bytes_read(version: int) -> None:
    """From LARGE_PUBLISH bytes on, raw and payload are memoryviews: the payload is not copied."""
    sent = Publish("big", b"p" * LARGE_PUBLISH, qos=1, packet_id=4)
    encoded = encode(sent, version)
    reader = reader_for(version)
    reader.feed(encoded[:100])
    reader.feed(encoded[100:])
    [received] = reader.read_packets()
    assert received == sent
    assert type(received.raw) is memoryview and bytes(received.raw) == encoded
    assert type(received.payload) is memoryview and received.payload.obj is received.raw.obj


@pytest.mark.parametrize("version", VERSIONS)
def test_a_run_interrupted_by_another_topic_keeps_each_packet_its_topic(version: int) -> None:
    """A run's head comes back after a PUBLISH on another topic that the full decoder took
    (v5: with properties): each packet keeps its own topic, flags and packet id."""
    other = (Publish("b", b"y" * 8, qos=1, packet_id=9, properties=Properties(content_type="t"))
             if version == MQTT_5 else Publish("b", b"y" * 8, qos=1, retain=True, dup=True, packet_id=9))
    sent = [Publish("a", b"x" * 8, qos=1, packet_id=1), Publish("a", b"x" * 8, qos=1, packet_id=2),
            other, Publish("a", b"z" * 8, qos=1, packet_id=3), Publish("a", b"x" * 8, packet_id=None)]
    reader = reader_for(version)
    reader.feed(b"".join(encode(packet, version) for packet in sent))
    assert reader.read_packets() == sent


def large_publishes(version: int) -> st.SearchStrategy[Publish]:
    """PUBLISH packets around LARGE_PUBLISH, any flags and properties (correlation data included)."""
    return publishes(version).flatmap(lambda publish: st.integers(LARGE_PUBLISH - 64, 3 * LARGE_PUBLISH).map(
        lambda size: replace(publish, payload=bytes([size % 251]) * size)))


def outcome_in_place(chunks: list[bytes], version: int) -> tuple[list[object], type | None]:
    """(packets, error class) when each chunk is read through get_buffer/buffer_updated, as an
    asyncio.BufferedProtocol transport does (a read never exceeds the buffer offered)."""
    reader, received = reader_for(version, 4 * LARGE_PUBLISH), []
    try:
        for chunk in chunks:
            while chunk:
                buffer = reader.get_buffer()
                count = min(len(buffer), len(chunk))
                buffer[:count] = chunk[:count]
                reader.buffer_updated(count)
                chunk = chunk[count:]
                for batch in batches(reader):
                    received.extend(batch)
    except KushiError as error:
        return received, type(error)
    return received, None


def test_a_publish_read_in_place_has_its_correlation_data_as_bytes() -> None:
    """A large v5 PUBLISH received into a landing buffer (a bytearray): its payload stays a view
    of it, but its Correlation Data, decoded as a slice of it, comes as bytes, as the property is
    declared (a compiled build checks the declared types at run time; hypothesis found one
    that did not, in the test below)."""
    sent = [Publish("t", bytes(LARGE_PUBLISH), properties=Properties(correlation_data=b"cd"))] * 2
    data = b"".join(encode(packet, MQTT_5) for packet in sent)
    # the first one cut off by the first read: the rest of it and the second land in a
    # landing buffer, where the second is decoded in place
    received, error = outcome_in_place([data[:LARGE_PUBLISH], data[LARGE_PUBLISH:]], MQTT_5)
    assert error is None and received == sent
    assert [type(packet.properties.correlation_data) for packet in received] == [bytes, bytes]
    assert isinstance(received[1].payload, memoryview)


@pytest.mark.parametrize("landing_read", [LANDING_READ, 2 * LARGE_PUBLISH])
@pytest.mark.parametrize("version", VERSIONS)
@SETTINGS
@given(data=st.data())
def test_reading_in_place_gives_what_next_packet_gives(version: int, landing_read: int,
                                                       data: st.DataObject) -> None:
    """Small and large packets in any split, read into the reader's buffers: the same packets,
    the same raw bytes, and a large PUBLISH's payload a view of a landing buffer. With landing
    buffers of room for one or two packets, reads fill them and cut packets off where they do
    not fit (moved to the next buffer)."""
    sent = data.draw(st.lists(packets(version) | large_publishes(version), min_size=1, max_size=6))
    stream = b"".join(encode(packet, version) for packet in sent)
    chunks = split(stream, data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    with mock.patch.object(reader_module, "LANDING_READ", landing_read):
        received, error = outcome_in_place(chunks, version)
    assert error is None
    assert received == sent
    assert [bytes(p.raw) for p in received if isinstance(p, Publish)] == \
        [encode(p, version) for p in sent if isinstance(p, Publish)]
    for packet in received:
        if isinstance(packet, Publish) and len(packet.raw) >= LARGE_PUBLISH:
            assert type(packet.payload) is memoryview
            assert type(packet.properties.correlation_data) in (bytes, type(None))


@pytest.mark.parametrize("version", VERSIONS)
@SETTINGS
@given(data=st.data(), position=st.integers(0, 100_000), replacement=st.integers(0, 255))
def test_reading_in_place_a_corrupted_stream_gives_the_same_packets_and_error(
    version: int, data: st.DataObject, position: int, replacement: int
) -> None:
    sent = data.draw(st.lists(packets(version) | large_publishes(version), min_size=1, max_size=4))
    stream = bytearray(b"".join(encode(packet, version) for packet in sent))
    stream[position % len(stream)] = replacement
    chunks = split(bytes(stream), data.draw(st.lists(st.integers(0, len(stream)), max_size=4)))
    in_place = outcome_in_place(chunks, version)
    expected = outcome_batched(chunks, version, max_packet_size=4 * LARGE_PUBLISH)
    assert in_place == expected


def test_landing_buffers_grow_while_reads_fill_them() -> None:
    """Once a connection has sent a large PUBLISH, a read offers a landing buffer of its size (one
    large packet now and then: no more is kept); each read that fills one to its end doubles the
    next, up to LANDING_READ. The large PUBLISH packets a read brings are views of the buffer,
    and one cut off at the end of a read is read on into place, up to its end and no further."""
    first, *rest = (encode(Publish("big", bytes([n]) * 2 * LARGE_PUBLISH, qos=1, packet_id=n), MQTT_3_1_1)
                    for n in range(1, 8))
    size = len(first)
    reader = reader_for(MQTT_3_1_1)
    for piece in (first[:5000], first[5000:]):   # the first: read as it comes, joined
        buffer = reader.get_buffer()
        buffer[:len(piece)] = piece
        reader.buffer_updated(len(piece))
    assert [bytes(p.raw) for p in reader.read_packets()] == [first]

    def read_whole(packets: list[bytes]) -> memoryview:
        """Read ``packets`` into one landing buffer that they fill; their payloads are views of it."""
        landing = reader.get_buffer()
        assert len(landing) == len(packets) * size
        landing[:] = b"".join(packets)
        reader.buffer_updated(len(landing))
        received = reader.read_packets()
        assert [bytes(p.raw) for p in received] == packets
        assert all(p.payload.obj is landing.obj for p in received)
        return landing

    read_whole(rest[:1])
    read_whole(rest[1:3])   # doubled: the last read filled its buffer
    landing = reader.get_buffer()   # doubled again
    assert len(landing) == min(4, LANDING_READ // size) * size
    stream = b"".join(rest[3:])
    landing[:2 * size + 100] = stream[:2 * size + 100]   # two whole packets and the third's start
    reader.buffer_updated(2 * size + 100)
    two = reader.read_packets()
    assert [bytes(p.raw) for p in two] == rest[3:5] and all(p.payload.obj is landing.obj for p in two)
    assert reader.read_packets() == []
    tail = reader.get_buffer()
    assert len(tail) == size - 100 and tail.obj is landing.obj   # up to its end, no further
    tail[:] = stream[2 * size + 100:]
    reader.buffer_updated(len(tail))
    [third] = reader.read_packets()
    assert bytes(third.raw) == rest[5] and third.payload.obj is landing.obj
    after = reader.get_buffer()   # the next read: on in the same buffer, behind them
    assert after.obj is landing.obj and len(after) == len(landing) - 3 * size
