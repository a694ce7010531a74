"""What the server's own packets may carry (v5): only defined reason codes, and a Reason String
or User Property only where the client allows it.

Checklist: reason code tables [MQTT-3.2.2-8] [MQTT-3.4.2-1] [MQTT-3.5.2-1] [MQTT-3.6.2-1]
[MQTT-3.7.2-1] [MQTT-3.9.3-2] [MQTT-3.11.3-2] [MQTT-3.14.2-1]; the per-packet "omit the Reason
String / User Properties rather than exceed the client's Maximum Packet Size" statements; and
Request Problem Information 0 [MQTT-3.1.2-29].

kushi itself puts no Reason String on acknowledgements, so a test of "drop it when it does not
fit" would pass whatever the broker did. Here a hook (``Talkative``) adds a long Reason String
and User Property to every acknowledgement, CONNACK, DISCONNECT and AUTH the server encodes, as
a real hook may; a client that allows them receives them (the control), and the broker must
take them off for a client whose Maximum Packet Size they would exceed or who asked for no
problem information.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from kushi.hooks.base import Hook
from kushi.protocol.codec import encode
from kushi.protocol.packets import (
    Auth,
    Connack,
    Connect,
    Disconnect,
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
)
from kushi.protocol.properties import Properties

REASON_STRING = "explained at length " + "r" * 100
USER_PROPERTIES = (("why", "v" * 100),)
DECORATED = (Connack, Puback, Pubrec, Pubrel, Pubcomp, Suback, Unsuback, Disconnect, Auth)

SMALL = 64
"""A Maximum Packet Size every bare acknowledgement fits in, and no decorated one."""

# The reason codes each packet may carry (MQTT 5 sections 3.2.2.2, 3.4.2.1, 3.5.2.1, 3.6.2.1,
# 3.7.2.1, 3.9.3, 3.11.3, 3.14.2.1), written out from the spec rather than taken from kushi.
DEFINED_CODES: dict[type, frozenset[int]] = {
    Connack: frozenset({0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A,
                        0x8C, 0x90, 0x95, 0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F}),
    Puback: frozenset({0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99}),
    Pubrec: frozenset({0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99}),
    Pubrel: frozenset({0x00, 0x92}),
    Pubcomp: frozenset({0x00, 0x92}),
    Suback: frozenset({0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2}),
    Unsuback: frozenset({0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91}),
    Disconnect: frozenset({0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F,
                           0x90, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D,
                           0x9E, 0x9F, 0xA0, 0xA1, 0xA2}),
}


class Talkative(Hook):
    """Adds a Reason String and a User Property to every packet that can carry them."""

    id = "talkative"

    def on_packet_encode(self, client, packet):
        if isinstance(packet, DECORATED) and client.protocol_version == 5:
            return replace(packet, properties=replace(
                packet.properties, reason_string=REASON_STRING, user_properties=USER_PROPERTIES))
        return packet


def every_acknowledgement(raw, broker, paho, client_id: str, properties: Properties) -> list:
    """Connect with ``properties`` and provoke each kind of server packet once (a refusal where
    the spec has a code for it); returns them in the order they came, the DISCONNECT last."""
    client = raw(broker, 5)
    received = [client.connect_ok(client_id, properties=properties)]

    def exchange(packet, expected_type):
        client.send(packet)
        answer = client.recv_packet()
        assert isinstance(answer, expected_type), f"expected {expected_type.__name__}, got {answer!r}"
        received.append(answer)
        return answer

    exchange(Subscribe(1, (Subscription("out/t", 2), Subscription("a/#/b", 0))), Suback)
    exchange(Unsubscribe(2, ("never/subscribed",)), Unsuback)
    exchange(Publish("in/t", b"1", qos=1, packet_id=3), Puback)
    exchange(Publish("in/t", b"2", qos=2, packet_id=4), Pubrec)
    exchange(Pubrel(4), Pubcomp)
    exchange(Pubrel(5), Pubcomp)                       # unknown id: 0x92
    exchange(Pubrec(6), Pubrel)                        # unknown id: 0x92
    paho.connected(broker, f"{client_id}-pub", 5).publish("out/t", b"o", qos=2)
    delivered = client.recv_packet()
    assert isinstance(delivered, Publish) and delivered.qos == 2, delivered
    exchange(Pubrec(delivered.packet_id), Pubrel)
    client.send(Pubcomp(delivered.packet_id))
    client.send(Publish("in/t", b"x", properties=Properties(topic_alias=0)))  # Topic Alias invalid
    received.append(client.expect_disconnect(0x94))
    return received


def describe(packets: list) -> str:
    """Packets by kind, size and Reason String presence (the whole repr is unreadably long)."""
    return ", ".join(f"{type(p).__name__} ({len(encode(p, 5))} bytes, reason string "
                     f"{'present' if p.properties.reason_string else 'absent'})" for p in packets)


def has_problem_information(packet) -> bool:
    return packet.properties.reason_string is not None or bool(packet.properties.user_properties)


@pytest.fixture
def talkative_broker(make_broker):
    return make_broker(hooks=[Talkative()])


def test_control_a_client_that_allows_them_gets_reason_strings(talkative_broker, raw, paho):
    """The control for the two tests below: without a size limit and with problem information
    requested (the default), every packet arrives with the hook's Reason String."""
    received = every_acknowledgement(raw, talkative_broker, paho, "roomy", Properties())
    assert all(p.properties.reason_string == REASON_STRING for p in received), received


def test_acknowledgements_drop_reason_string_rather_than_exceed_maximum_packet_size(
        talkative_broker, raw, paho):
    """[MQTT-3.1.2-24] [MQTT-3.2.2-19] [MQTT-3.2.2-20] [MQTT-3.4.2-2] [MQTT-3.4.2-3] [MQTT-3.5.2-2]
    [MQTT-3.5.2-3] [MQTT-3.6.2-2] [MQTT-3.6.2-3] [MQTT-3.7.2-2] [MQTT-3.7.2-3] [MQTT-3.9.2-1]
    [MQTT-3.9.2-2] [MQTT-3.11.2-1] [MQTT-3.11.2-2] [MQTT-3.14.2-3] [MQTT-3.14.2-4] a client with
    Maximum Packet Size 64 gets every CONNACK, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK and
    DISCONNECT, each without the Reason String and User Property that would not fit."""
    received = every_acknowledgement(raw, talkative_broker, paho, "tiny",
                                     Properties(maximum_packet_size=SMALL))
    too_big = [p for p in received if len(encode(p, 5)) > SMALL or has_problem_information(p)]
    assert too_big == [], f"over the client's Maximum Packet Size of {SMALL}: {describe(too_big)}"


def test_problem_information_0_keeps_reason_strings_to_connack_and_disconnect(
        talkative_broker, raw, paho):
    """[MQTT-3.1.2-29] Request Problem Information 0: no Reason String or User Property on any
    packet but PUBLISH, CONNACK and DISCONNECT."""
    received = every_acknowledgement(raw, talkative_broker, paho, "quiet",
                                     Properties(request_problem_information=0))
    offending = [p for p in received
                 if not isinstance(p, (Connack, Disconnect)) and has_problem_information(p)]
    assert offending == [], f"problem information although the client asked for none: {describe(offending)}"


def test_only_defined_reason_codes(broker, raw, paho):
    """[MQTT-3.2.2-8] [MQTT-3.4.2-1] [MQTT-3.5.2-1] [MQTT-3.6.2-1] [MQTT-3.7.2-1] [MQTT-3.9.3-2]
    [MQTT-3.11.3-2] [MQTT-3.14.2-1] every reason code the server sends, refusals included
    (SUBACK 0x8F, UNSUBACK 0x11, PUBCOMP/PUBREL 0x92, DISCONNECT 0x94, CONNACK 0x8C), is
    one the spec defines for that packet."""
    received = every_acknowledgement(raw, broker, paho, "codes", Properties())
    refused = raw(broker, 5)
    refused.send(Connect(client_id="refused", properties=Properties(authentication_method="unknown")))
    received.append(refused.expect_connack_refusal(0x8C))
    assert {type(p) for p in received} >= set(DEFINED_CODES), "a packet kind was not provoked"
    undefined = [p for p in received for code in reason_codes(p) if code not in DEFINED_CODES[type(p)]]
    assert undefined == [], f"undefined reason codes sent: {undefined!r}"
    assert 0x92 in {p.reason_code for p in received if isinstance(p, (Pubrel, Pubcomp))}


def reason_codes(packet) -> tuple[int, ...]:
    return tuple(packet.reason_codes) if isinstance(packet, (Suback, Unsuback)) else (packet.reason_code,)
