"""MQTT 5 properties (section 2.2.2): identifiers, wire types, and the Properties record.

``Properties`` is a frozen record with one optional field per property; an
absent property is ``None`` (``user_properties`` and ``subscription_identifiers``
are tuples, empty when absent). Which properties a packet may carry is checked
by the codec (``ALLOWED``), not here.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import Final


class PropertyType(Enum):
    BYTE = "byte"
    TWO_BYTE_INT = "u16"
    FOUR_BYTE_INT = "u32"
    VARINT = "varint"
    UTF8 = "utf8"
    BINARY = "binary"
    UTF8_PAIR = "pair"


class PropertyId(IntEnum):
    PAYLOAD_FORMAT_INDICATOR = 0x01
    MESSAGE_EXPIRY_INTERVAL = 0x02
    CONTENT_TYPE = 0x03
    RESPONSE_TOPIC = 0x08
    CORRELATION_DATA = 0x09
    SUBSCRIPTION_IDENTIFIER = 0x0B
    SESSION_EXPIRY_INTERVAL = 0x11
    ASSIGNED_CLIENT_IDENTIFIER = 0x12
    SERVER_KEEP_ALIVE = 0x13
    AUTHENTICATION_METHOD = 0x15
    AUTHENTICATION_DATA = 0x16
    REQUEST_PROBLEM_INFORMATION = 0x17
    WILL_DELAY_INTERVAL = 0x18
    REQUEST_RESPONSE_INFORMATION = 0x19
    RESPONSE_INFORMATION = 0x1A
    SERVER_REFERENCE = 0x1C
    REASON_STRING = 0x1F
    RECEIVE_MAXIMUM = 0x21
    TOPIC_ALIAS_MAXIMUM = 0x22
    TOPIC_ALIAS = 0x23
    MAXIMUM_QOS = 0x24
    RETAIN_AVAILABLE = 0x25
    USER_PROPERTY = 0x26
    MAXIMUM_PACKET_SIZE = 0x27
    WILDCARD_SUBSCRIPTION_AVAILABLE = 0x28
    SUBSCRIPTION_IDENTIFIER_AVAILABLE = 0x29
    SHARED_SUBSCRIPTION_AVAILABLE = 0x2A


# property id -> (field name on Properties, wire type)
PROPERTY_TABLE: dict[PropertyId, tuple[str, PropertyType]] = {
    PropertyId.PAYLOAD_FORMAT_INDICATOR: ("payload_format_indicator", PropertyType.BYTE),
    PropertyId.MESSAGE_EXPIRY_INTERVAL: ("message_expiry_interval", PropertyType.FOUR_BYTE_INT),
    PropertyId.CONTENT_TYPE: ("content_type", PropertyType.UTF8),
    PropertyId.RESPONSE_TOPIC: ("response_topic", PropertyType.UTF8),
    PropertyId.CORRELATION_DATA: ("correlation_data", PropertyType.BINARY),
    PropertyId.SUBSCRIPTION_IDENTIFIER: ("subscription_identifiers", PropertyType.VARINT),
    PropertyId.SESSION_EXPIRY_INTERVAL: ("session_expiry_interval", PropertyType.FOUR_BYTE_INT),
    PropertyId.ASSIGNED_CLIENT_IDENTIFIER: ("assigned_client_identifier", PropertyType.UTF8),
    PropertyId.SERVER_KEEP_ALIVE: ("server_keep_alive", PropertyType.TWO_BYTE_INT),
    PropertyId.AUTHENTICATION_METHOD: ("authentication_method", PropertyType.UTF8),
    PropertyId.AUTHENTICATION_DATA: ("authentication_data", PropertyType.BINARY),
    PropertyId.REQUEST_PROBLEM_INFORMATION: ("request_problem_information", PropertyType.BYTE),
    PropertyId.WILL_DELAY_INTERVAL: ("will_delay_interval", PropertyType.FOUR_BYTE_INT),
    PropertyId.REQUEST_RESPONSE_INFORMATION: ("request_response_information", PropertyType.BYTE),
    PropertyId.RESPONSE_INFORMATION: ("response_information", PropertyType.UTF8),
    PropertyId.SERVER_REFERENCE: ("server_reference", PropertyType.UTF8),
    PropertyId.REASON_STRING: ("reason_string", PropertyType.UTF8),
    PropertyId.RECEIVE_MAXIMUM: ("receive_maximum", PropertyType.TWO_BYTE_INT),
    PropertyId.TOPIC_ALIAS_MAXIMUM: ("topic_alias_maximum", PropertyType.TWO_BYTE_INT),
    PropertyId.TOPIC_ALIAS: ("topic_alias", PropertyType.TWO_BYTE_INT),
    PropertyId.MAXIMUM_QOS: ("maximum_qos", PropertyType.BYTE),
    PropertyId.RETAIN_AVAILABLE: ("retain_available", PropertyType.BYTE),
    PropertyId.USER_PROPERTY: ("user_properties", PropertyType.UTF8_PAIR),
    PropertyId.MAXIMUM_PACKET_SIZE: ("maximum_packet_size", PropertyType.FOUR_BYTE_INT),
    PropertyId.WILDCARD_SUBSCRIPTION_AVAILABLE: ("wildcard_subscription_available", PropertyType.BYTE),
    PropertyId.SUBSCRIPTION_IDENTIFIER_AVAILABLE: ("subscription_identifier_available", PropertyType.BYTE),
    PropertyId.SHARED_SUBSCRIPTION_AVAILABLE: ("shared_subscription_available", PropertyType.BYTE),
}


@dataclass(frozen=True, slots=True)
class Properties:
    """The properties of one packet. Only MQTT 5 packets carry them on the wire."""

    payload_format_indicator: int | None = None
    message_expiry_interval: int | None = None
    content_type: str | None = None
    response_topic: str | None = None
    correlation_data: bytes | None = None
    subscription_identifiers: tuple[int, ...] = ()
    session_expiry_interval: int | None = None
    assigned_client_identifier: str | None = None
    server_keep_alive: int | None = None
    authentication_method: str | None = None
    authentication_data: bytes | None = None
    request_problem_information: int | None = None
    will_delay_interval: int | None = None
    request_response_information: int | None = None
    response_information: str | None = None
    server_reference: str | None = None
    reason_string: str | None = None
    receive_maximum: int | None = None
    topic_alias_maximum: int | None = None
    topic_alias: int | None = None
    maximum_qos: int | None = None
    retain_available: int | None = None
    user_properties: tuple[tuple[str, str], ...] = ()
    maximum_packet_size: int | None = None
    wildcard_subscription_available: int | None = None
    subscription_identifier_available: int | None = None
    shared_subscription_available: int | None = None


NO_PROPERTIES: Final = Properties()


class PropertiesBuilder:
    """Properties' slots on a class that is not frozen, for ``codec._new_properties`` (as
    packets.ConnectBuilder); here, not in the codec, so that the codec can be compiled."""

    __slots__ = Properties.__slots__
