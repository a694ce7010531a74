"""Property tests of the codec and the reader (hypothesis).

- every packet type of every version comes back unchanged from encode -> decode;
- the bytes of any list of packets, fed to a PacketReader in any split (down to
  one byte at a time), give back the same packets;
- arbitrary bytes make a PacketReader return packets or raise a KushiError,
  never anything else;
- decoding many user properties costs time linear in their number.
"""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from packet_strategies import VERSIONS, packets, packets_by_type

from kushi.errors import KushiError
from kushi.protocol.codec import decode, encode
from kushi.protocol.packets import MQTT_5, Publish
from kushi.protocol.properties import Properties
from kushi.protocol.reader import PacketReader

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# 43 (version, type) pairs: fewer examples each; the stream test mixes all types again.
PER_TYPE_SETTINGS = settings(SETTINGS, max_examples=100)


def _split_header(data: bytes) -> tuple[int, bytes]:
    """First byte and body (what comes after the Remaining Length) of one encoded packet."""
    index = 1
    while data[index] & 0x80:
        index += 1
    return data[0], data[index + 1 :]


@pytest.mark.parametrize(
    ("version", "packet_type"),
    [(version, packet_type) for version in VERSIONS for packet_type in packets_by_type(version)],
    ids=lambda value: value.__name__ if isinstance(value, type) else f"v{value}",
)
@PER_TYPE_SETTINGS
@given(data=st.data())
def test_every_packet_type_round_trips(version: int, packet_type: type, data: st.DataObject) -> None:
    packet = data.draw(packets_by_type(version)[packet_type])
    first_byte, body = _split_header(encode(packet, version))
    assert decode(first_byte, body, version) == packet


@pytest.mark.parametrize("version", VERSIONS)
@SETTINGS
@given(data=st.data())
def test_any_split_of_a_packet_stream_gives_the_same_packets(version: int, data: st.DataObject) -> None:
    sent = data.draw(st.lists(packets(version), min_size=1, max_size=8))
    stream = b"".join(encode(packet, version) for packet in sent)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    if data.draw(st.booleans()):
        cuts = list(range(len(stream)))  # one byte at a time
    reader = PacketReader()
    reader.version = version
    received = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)]):
        reader.feed(stream[start:end])
        while (packet := reader.next_packet()) is not None:
            received.append(packet)
    assert received == sent
    assert reader.buffered() == 0


@pytest.mark.parametrize("version", VERSIONS)
@SETTINGS
@given(data=st.data())
def test_decoded_publish_raw_is_the_exact_packet_bytes(version: int, data: st.DataObject) -> None:
    packet = data.draw(packets_by_type(version)[Publish])
    encoded = encode(packet, version)
    reader = PacketReader()
    reader.version = version
    reader.feed(encoded)
    decoded = reader.next_packet()
    assert decoded == packet
    assert bytes(decoded.raw) == encoded


@SETTINGS
@given(
    version=st.sampled_from([None, *VERSIONS]),
    chunks=st.lists(st.binary(min_size=1, max_size=64), min_size=1, max_size=8),
    prefix=st.sampled_from([b"", b"\x30", b"\x10", b"\x82", b"\xe0", b"\xf0"]),
)
def test_random_bytes_raise_only_kushi_errors(version: int | None, chunks: list[bytes], prefix: bytes) -> None:
    """Bad input may end the connection, but only through a KushiError (invariant 7)."""
    reader = PacketReader(max_packet_size=4096)
    reader.version = version
    try:
        reader.feed(prefix)
        for chunk in chunks:
            reader.feed(chunk)
            while reader.next_packet() is not None:
                pass
    except KushiError:
        pass


@SETTINGS
@given(
    packet=packets(MQTT_5),
    position=st.integers(0, 10_000),
    replacement=st.integers(0, 255),
)
def test_corrupted_packets_raise_only_kushi_errors(packet: object, position: int, replacement: int) -> None:
    """A valid packet with one byte changed is decoded or refused with a KushiError."""
    encoded = bytearray(encode(packet, MQTT_5))
    encoded[position % len(encoded)] = replacement
    reader = PacketReader()
    reader.version = MQTT_5
    reader.feed(bytes(encoded))
    try:
        while reader.next_packet() is not None:
            pass
    except KushiError:
        pass


def _decode_seconds(count: int) -> float:
    """Best-of-5 CPU time to decode a PUBLISH with ``count`` user properties."""
    pairs = tuple((f"k{i}", "v") for i in range(count))
    encoded = encode(Publish("t", b"", properties=Properties(user_properties=pairs)), MQTT_5)
    first_byte, body = _split_header(encoded)
    best = float("inf")
    for _ in range(5):
        start = time.process_time()
        decoded = decode(first_byte, body, MQTT_5)
        best = min(best, time.process_time() - start)
    assert decoded.properties.user_properties == pairs
    return best


def test_many_user_properties_decode_in_linear_time() -> None:
    """Eight times the user properties take about eight times the CPU time; quadratic would be
    64x. The bound (24x) leaves room for a loaded machine: a 2x bound on a doubling was flaky."""
    small = _decode_seconds(10_000)
    large = _decode_seconds(80_000)
    assert large / small < 24, (small, large)
