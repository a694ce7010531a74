"""Micro-benchmark of the hot path of kushi.protocol: small QoS 0 PUBLISH packets.

Run: .venv/bin/python benchmarks/codec_micro.py
Prints the cost per packet of
  - decoding a batch of 1000 PUBLISH packets fed to a PacketReader as one chunk
    (as a socket read holding many packets arrives), for MQTT 3.1.1 and 5, one
    packet per ``next_packet()`` call and all of them with one ``read_packets()``;
  - encoding one PUBLISH (3.1.1 and 5, no properties).
"""

from __future__ import annotations

import time
import timeit

from kushi.protocol import MQTT_3_1_1, MQTT_5, PacketReader, Publish, encode

BATCH = 1000


def decode_batch(chunk: bytes, version: int) -> int:
    reader = PacketReader()
    reader.version = version
    reader.feed(chunk)
    count = 0
    next_packet = reader.next_packet
    while next_packet() is not None:
        count += 1
    return count


def read_batch(chunk: bytes, version: int) -> int:
    reader = PacketReader()
    reader.version = version
    reader.feed(chunk)
    return len(reader.read_packets())


def best_per_item(statement, items: int, repeat: int = 15, number: int = 20) -> float:
    """Best of ``repeat`` runs in microseconds per item (CPU time: other load on the host skews less)."""
    times = timeit.repeat(statement, repeat=repeat, number=number, timer=time.process_time)
    return min(times) / number / items * 1e6


def main() -> None:
    messages = [Publish(f"sensors/room{i % 50}/temperature", b"21.5" * 4) for i in range(BATCH)]
    for version, name in ((MQTT_3_1_1, "3.1.1"), (MQTT_5, "5")):
        chunk = b"".join(encode(message, version) for message in messages)
        assert decode_batch(chunk, version) == BATCH
        assert read_batch(chunk, version) == BATCH
        decode_us = best_per_item(lambda: decode_batch(chunk, version), BATCH)
        batch_us = best_per_item(lambda: read_batch(chunk, version), BATCH)
        message = messages[0]
        encode_us = best_per_item(lambda: encode(message, version), 1, number=20_000)
        print(f"MQTT {name}: next_packet {decode_us:.3f} us/packet, read_packets {batch_us:.3f} "
              f"us/packet (batch of {BATCH}, {len(chunk)} bytes), "
              f"encode {encode_us:.3f} us/packet")


if __name__ == "__main__":
    main()
