"""Hypothesis strategies for valid MQTT packets of each protocol version.

``packets(version)`` draws any of the packet types that version has, with field
values the decoder must accept; the property tests check that each one comes
back unchanged from encode -> decode.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from hypothesis import strategies as st

from kushi.protocol.codec import ALLOWED_PROPERTIES, MAX_VARINT, WILL_PROPERTIES
from kushi.protocol.packets import (
    MQTT_3_1,
    MQTT_5,
    Auth,
    Connack,
    Connect,
    Disconnect,
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
from kushi.protocol.properties import PROPERTY_TABLE, Properties, PropertyId

VERSIONS = (3, 4, 5)

# Any character MQTT allows in a string: no surrogates, no U+0000; U+FEFF included.
mqtt_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12
)
topic_level = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00/+#"), max_size=6
)
topic_names = st.lists(topic_level, min_size=1, max_size=4).map("/".join).filter(bool)
topic_filters = st.lists(st.one_of(topic_level, st.just("+")), min_size=1, max_size=4).flatmap(
    lambda levels: st.sampled_from(["/".join(levels), "/".join(levels + ["#"]), "#"])
).filter(bool)
binary = st.binary(max_size=24)
packet_ids = st.integers(1, 65535)
u16 = st.integers(0, 65535)
u32 = st.integers(0, 2**32 - 1)

_P = PropertyId
_PROPERTY_VALUES: dict[PropertyId, st.SearchStrategy[Any]] = {
    _P.PAYLOAD_FORMAT_INDICATOR: st.integers(0, 1),
    _P.MESSAGE_EXPIRY_INTERVAL: u32,
    _P.CONTENT_TYPE: mqtt_text,
    _P.RESPONSE_TOPIC: topic_names,
    _P.CORRELATION_DATA: binary,
    _P.SESSION_EXPIRY_INTERVAL: u32,
    _P.ASSIGNED_CLIENT_IDENTIFIER: mqtt_text,
    _P.SERVER_KEEP_ALIVE: u16,
    _P.AUTHENTICATION_METHOD: mqtt_text,
    _P.AUTHENTICATION_DATA: binary,
    _P.REQUEST_PROBLEM_INFORMATION: st.integers(0, 1),
    _P.WILL_DELAY_INTERVAL: u32,
    _P.REQUEST_RESPONSE_INFORMATION: st.integers(0, 1),
    _P.RESPONSE_INFORMATION: mqtt_text,
    _P.SERVER_REFERENCE: mqtt_text,
    _P.REASON_STRING: mqtt_text,
    _P.RECEIVE_MAXIMUM: st.integers(1, 65535),
    _P.TOPIC_ALIAS_MAXIMUM: u16,
    _P.TOPIC_ALIAS: st.integers(1, 65535),
    _P.MAXIMUM_QOS: st.integers(0, 1),
    _P.RETAIN_AVAILABLE: st.integers(0, 1),
    _P.USER_PROPERTY: st.lists(st.tuples(mqtt_text, mqtt_text), max_size=4).map(tuple),
    _P.MAXIMUM_PACKET_SIZE: st.integers(1, 2**32 - 1),
    _P.WILDCARD_SUBSCRIPTION_AVAILABLE: st.integers(0, 1),
    _P.SUBSCRIPTION_IDENTIFIER_AVAILABLE: st.integers(0, 1),
    _P.SHARED_SUBSCRIPTION_AVAILABLE: st.integers(0, 1),
}


def properties(context: PacketType | str) -> st.SearchStrategy[Properties]:
    """Valid properties for ``context`` (a packet type, or "will"), each one optional."""
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for pid in ALLOWED_PROPERTIES[context]:
        name = PROPERTY_TABLE[PropertyId(pid)][0]
        if pid == _P.SUBSCRIPTION_IDENTIFIER:
            most = 3 if context == PacketType.PUBLISH else 1
            optional[name] = st.lists(st.integers(1, MAX_VARINT), min_size=1, max_size=most).map(tuple)
        else:
            optional[name] = _PROPERTY_VALUES[PropertyId(pid)]

    def build(values: dict[str, Any]) -> Properties:
        if "authentication_data" in values and "authentication_method" not in values:
            del values["authentication_data"]  # data without a method is a Protocol Error
        return Properties(**values)

    return st.fixed_dictionaries({}, optional=optional).map(build)


def _properties_for(version: int, context: PacketType | str) -> st.SearchStrategy[Properties]:
    return properties(context) if version == MQTT_5 else st.just(Properties())


@st.composite
def connects(draw: st.DrawFn, version: int) -> Connect:
    will = None
    if draw(st.booleans()):
        will = Will(
            draw(topic_names), draw(binary), draw(st.integers(0, 2)), draw(st.booleans()),
            draw(_properties_for(version, WILL_PROPERTIES)),
        )
    username = draw(st.none() | mqtt_text)
    password = draw(st.none() | binary)
    if version != MQTT_5 and username is None:
        password = None  # 3.1.1: a password needs a user name
    return Connect(
        protocol_version=version,
        client_id=draw(mqtt_text),
        clean_start=draw(st.booleans()),
        keep_alive=draw(u16),
        will=will,
        username=username,
        password=password,
        properties=draw(_properties_for(version, PacketType.CONNECT)),
        protocol_name="MQIsdp" if version == MQTT_3_1 else "MQTT",
    )


def connacks(version: int) -> st.SearchStrategy[Connack]:
    if version == MQTT_5:
        codes = st.sampled_from([0x00, 0x80, 0x81, 0x82, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A,
                                 0x8C, 0x90, 0x95, 0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F])
    else:  # the v5 codes that stand for a 3.1.1 return code
        codes = st.sampled_from([0x00, 0x84, 0x85, 0x88, 0x86, 0x87])
    session_present = st.just(False) if version == MQTT_3_1 else st.booleans()
    return st.builds(Connack, session_present, codes, _properties_for(version, PacketType.CONNACK))


@st.composite
def publishes(draw: st.DrawFn, version: int) -> Publish:
    qos = draw(st.integers(0, 2))
    props = draw(_properties_for(version, PacketType.PUBLISH))
    topic = draw(topic_names)
    if props.topic_alias is not None and draw(st.booleans()):
        topic = ""  # v5: an alias may stand in for the topic name
    return Publish(
        topic=topic,
        payload=draw(st.binary(max_size=64)),
        qos=qos,
        retain=draw(st.booleans()),
        dup=qos > 0 and draw(st.booleans()),
        packet_id=draw(packet_ids) if qos else None,
        properties=props,
    )


def acks(version: int, cls: type, codes: list[int]) -> st.SearchStrategy[Any]:
    if version != MQTT_5:
        return st.builds(cls, u16)
    return st.builds(cls, u16, st.sampled_from(codes), properties(cls.type))


@st.composite
def subscriptions(draw: st.DrawFn, version: int) -> Subscription:
    topic_filter = draw(topic_filters)
    if version != MQTT_5:
        return Subscription(topic_filter, draw(st.integers(0, 2)))
    if draw(st.booleans()):
        topic_filter = f"$share/{draw(topic_level.filter(bool))}/{topic_filter}"
    return Subscription(
        topic_filter,
        draw(st.integers(0, 2)),
        no_local=not topic_filter.startswith("$share/") and draw(st.booleans()),
        retain_as_published=draw(st.booleans()),
        retain_handling=draw(st.integers(0, 2)),
    )


_SUBACK_V5 = [0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2]
_UNSUBACK_V5 = [0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91]
_PUBACK_V5 = [0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99]
_DISCONNECT_V5 = [0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90,
                  0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F,
                  0xA0, 0xA1, 0xA2]


@cache
def packets_by_type(version: int) -> dict[type, st.SearchStrategy[Any]]:
    """One strategy per packet type that ``version`` has (built once per version)."""
    v5 = version == MQTT_5
    strategies: dict[type, st.SearchStrategy[Any]] = {
        Connect: connects(version),
        Connack: connacks(version),
        Publish: publishes(version),
        Puback: acks(version, Puback, _PUBACK_V5),
        Pubrec: acks(version, Pubrec, _PUBACK_V5),
        Pubrel: acks(version, Pubrel, [0x00, 0x92]),
        Pubcomp: acks(version, Pubcomp, [0x00, 0x92]),
        Subscribe: st.builds(
            Subscribe, packet_ids, st.lists(subscriptions(version), min_size=1, max_size=4).map(tuple),
            _properties_for(version, PacketType.SUBSCRIBE),
        ),
        Suback: st.builds(
            Suback, u16,
            st.lists(st.sampled_from(_SUBACK_V5 if v5 else [0, 1, 2, 0x80]), min_size=1, max_size=4).map(tuple),
            _properties_for(version, PacketType.SUBACK),
        ),
        Unsubscribe: st.builds(
            Unsubscribe, packet_ids, st.lists(topic_filters, min_size=1, max_size=4).map(tuple),
            _properties_for(version, PacketType.UNSUBSCRIBE),
        ),
        Unsuback: (
            st.builds(Unsuback, u16, st.lists(st.sampled_from(_UNSUBACK_V5), min_size=1, max_size=4).map(tuple),
                      properties(PacketType.UNSUBACK))
            if v5 else st.builds(Unsuback, u16)
        ),
        Pingreq: st.just(Pingreq()),
        Pingresp: st.just(Pingresp()),
        Disconnect: (
            st.builds(Disconnect, st.sampled_from(_DISCONNECT_V5), properties(PacketType.DISCONNECT))
            if v5 else st.just(Disconnect())
        ),
    }
    if v5:
        strategies[Auth] = st.builds(Auth, st.sampled_from([0x00, 0x18, 0x19]), properties(PacketType.AUTH))
    return strategies


@cache
def packets(version: int) -> st.SearchStrategy[Any]:
    """Any valid packet of ``version``."""
    return st.one_of(*packets_by_type(version).values())
