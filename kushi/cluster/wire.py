"""The bus form of a message: its MQTT 5 PUBLISH bytes; of a run of messages: the bytes received.

MQTT 5 is the one wire form with room for every property, so a message
crosses the bus (and a session moves) without losing any, and without
pickling. Encoded once per forward, whatever the number of recipients.

A *run* (messages of one QoS on one topic from one client, with no
properties, as ``Broker.publish_run`` takes them) crosses as the very bytes
the client sent, in its protocol version, all in one bus item: nothing is
encoded, and the receiver writes them on as they are to the subscribers that
take them so (``run_to_wire`` / ``ReceivedRun``), reading them into messages
only for the subscribers that need more.
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


RUN_HEADER = struct.Struct(">QBIIH")
"""The first message's sequence number, the protocol version, the number of messages, the
longest packet's size, the topic's length in bytes (the topic follows, then the packets)."""


class ReceivedRun:
    """A run from another worker as it crossed the bus: what its delivery needs, read off the
    header, and the packets as the client sent them, still joined (``data``).

    A subscriber that takes the run as received is written ``data`` as it is: no message
    object is made. ``messages()`` reads the packets into Publish objects (with the
    connection's own fast reader), once, for the paths that need them one by one.
    """

    __slots__ = ("first_sequence", "version", "count", "longest", "topic", "topic_size", "qos", "data",
                 "_messages")

    def __init__(self, payload: bytes) -> None:
        first_sequence, version, count, longest, topic_size = RUN_HEADER.unpack_from(payload)
        start = RUN_HEADER.size + topic_size
        self.first_sequence = first_sequence
        self.version = version
        self.count = count
        self.longest = longest
        self.topic = payload[RUN_HEADER.size:start].decode()
        self.topic_size = topic_size
        self.data = payload[start:]
        self.qos = (self.data[0] & QOS_BITS) >> 1 if count else 0
        self._messages: list[Publish] | None = None

    def __len__(self) -> int:
        return self.count

    def messages(self) -> list[Publish]:
        """The run's messages, each with its received bytes as ``raw`` (read once, then kept)."""
        messages = self._messages
        if messages is None:
            reader = PacketReader()
            reader.version = self.version
            reader.feed(self.data)
            messages = self._messages = reader.read_packets()
        return messages


    def packet_id_positions(self) -> list[int]:
        """Where each QoS 1 packet's id sits in ``data`` (the packets have one topic, no properties)."""
        data = self.data
        id_at = 2 + self.topic_size   # after the Remaining Length: the topic (length, bytes), then the id
        positions = []
        pos = 0
        end = len(data)
        while pos < end:
            length = data[pos + 1]
            if length < 128:
                body = pos + 2
            else:
                length, body = read_varint(data, pos + 1, end)
            positions.append(body + id_at)
            pos = body + length
        return positions


def run_to_wire(first_sequence: int, version: int, run: list[Publish]) -> bytes:
    """A run as one bus item: the header of ``ReceivedRun``, the topic, the received bytes."""
    raws = [message.raw for message in run]
    topic = run[0].topic.encode()
    return b"".join([RUN_HEADER.pack(first_sequence, version, len(run), max(map(len, raws)), len(topic)),
                     topic, *raws])
