"""The bus form of a message: its MQTT 5 PUBLISH bytes; of a run of messages: the bytes received.

MQTT 5 is the one wire form with room for every property, so a message
crosses the bus (and a session moves) without losing any, and without
pickling. Encoded once per forward, whatever the number of recipients.

A *run* (messages of one QoS on one topic from one client, with no
properties, as ``Broker.publish_run`` takes them) crosses as the very bytes
the client sent, in its protocol version, all in one bus item: nothing is
encoded, and the receiver reads them with the connection's own fast reader
and delivers them as a run again (``run_to_wire`` / ``run_from_wire``).
"""

from __future__ import annotations

import struct
from dataclasses import replace

from ..protocol.codec import decode_publish, encode, read_varint
from ..protocol.packets import MQTT_5, Publish
from ..protocol.reader import PacketReader

QOS_BITS = 0x06   # of a PUBLISH's first byte
SEQUENCE_SIZE = 8

MessageId = tuple  # (origin node, the origin's sequence number): the same in every copy


def encode_message(message: Publish) -> bytes:
    """The bus form of a message: its MQTT 5 PUBLISH bytes (packet id 1 when QoS > 0)."""
    if message.qos and message.packet_id is None or message.dup \
            or message.properties.topic_alias is not None:
        message = replace(message, packet_id=message.packet_id or (1 if message.qos else None),
                          dup=False,
                          properties=replace(message.properties, topic_alias=None))
    return encode(message, MQTT_5)


def decode_message(body: bytes) -> Publish:
    """The message of a bus body (see ``encode_message``).

    A QoS 0 message keeps ``body`` as its ``raw`` bytes: an MQTT 5 subscriber
    can be sent those very bytes, without encoding the message again.
    """
    _, start = read_varint(body, 1, len(body))
    qos0 = not body[0] & QOS_BITS
    return decode_publish(body[0], body, start, len(body), MQTT_5, body if qos0 else None)


def with_sequence(sequence: int, body: bytes) -> bytes:
    """A message's bus body prefixed with its origin's sequence number (the sender is the origin)."""
    return sequence.to_bytes(SEQUENCE_SIZE, "big") + body


def split_sequence(payload: bytes) -> tuple[int, bytes]:
    """(sequence number, bus body) of what ``with_sequence`` made."""
    return int.from_bytes(payload[:SEQUENCE_SIZE], "big"), payload[SEQUENCE_SIZE:]


RUN_HEADER = struct.Struct(">QB")   # the first message's sequence number, the protocol version


def run_to_wire(first_sequence: int, version: int, run: list[Publish]) -> bytes:
    """A run as one bus item: its first sequence number, the version, the received bytes."""
    return RUN_HEADER.pack(first_sequence, version) + b"".join([message.raw for message in run])


def run_from_wire(payload: bytes) -> tuple[int, int, list[Publish]]:
    """(first sequence number, protocol version, messages) of what ``run_to_wire`` made."""
    first_sequence, version = RUN_HEADER.unpack_from(payload)
    reader = PacketReader()
    reader.version = version
    reader.feed(payload[RUN_HEADER.size:])
    return first_sequence, version, reader.read_packets()
