"""The bus form of a message: its MQTT 5 PUBLISH bytes.

MQTT 5 is the one wire form with room for every property, so a message
crosses the bus (and a session moves) without losing any, and without
pickling. Encoded once per forward, whatever the number of recipients.
"""

from __future__ import annotations

from dataclasses import replace

from ..protocol.codec import decode_publish, encode, read_varint
from ..protocol.packets import MQTT_5, Publish

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
