"""kushi.protocol: sans-I/O MQTT 3.1 / 3.1.1 / 5.0 (packets, codec, reader, topics).

Imports nothing of kushi but ``kushi.errors`` and does no I/O.
"""

from .codec import decode, encode, encode_properties, encode_varint
from .errors_to_wire import error_packet, reply_version
from .packets import (
    MQTT_3_1,
    MQTT_3_1_1,
    MQTT_5,
    Auth,
    Connack,
    Connect,
    Disconnect,
    Packet,
    PacketType,
    Pingreq,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Subscription,
    Unsuback,
    Unsubscribe,
    Will,
)
from .properties import NO_PROPERTIES, Properties, PropertyId, PropertyType
from .reader import PacketReader
from .reason_codes import ConnackReturnCode311, ReasonCode, v5_to_311_connack
from .topics import parse_shared, topic_matches, validate_topic_filter, validate_topic_name
from . import codec as _codec, reader as _reader

compiled: bool = not any(str(module.__file__).endswith(".py") for module in (_codec, _reader))
"""Whether the codec and the reader run compiled (mypyc extensions, the opt-in build:
build_backend.py) rather than as their .py files. The two are compiled together or not at all."""

__all__ = [
    "MQTT_3_1", "MQTT_3_1_1", "MQTT_5",
    "Auth", "Connack", "Connect", "Disconnect", "Packet", "PacketType", "Pingreq", "Pingresp",
    "Puback", "Pubcomp", "Publish", "Pubrec", "Pubrel", "Suback", "Subscribe", "Subscription",
    "Unsuback", "Unsubscribe", "Will",
    "NO_PROPERTIES", "Properties", "PropertyId", "PropertyType",
    "ConnackReturnCode311", "ReasonCode", "v5_to_311_connack",
    "encode", "decode", "encode_properties", "encode_varint", "PacketReader",
    "error_packet", "reply_version",
    "parse_shared", "topic_matches", "validate_topic_filter", "validate_topic_name",
    "compiled",
]
