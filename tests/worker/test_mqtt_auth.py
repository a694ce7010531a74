"""Enhanced authentication (v5 4.12) through a hook that takes the method, and re-authentication.

Without a hook the method is refused with CONNACK 0x8C (test_mqtt_connect.py).
The hook here runs a two-step challenge: CONNECT carries b"hello", the server
answers AUTH 0x18 with b"challenge", the client must answer AUTH 0x18 b"response".
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from kushi.hooks.base import Hook
from kushi.protocol.codec import encode
from kushi.protocol.packets import Auth, Connack, Connect, Pingreq, Pingresp, Publish
from kushi.protocol.properties import Properties

METHOD = "challenge-response"
AUTH_REASON_CODES = {0x00, 0x18, 0x19}  # MQTT 5 section 3.15.2.1


class ChallengeResponse(Hook):
    id = "challenge-response"

    def on_auth_packet(self, client, packet):
        data = packet.properties.authentication_data
        if packet.properties.authentication_method != METHOD:
            return 0x8C
        if data == b"hello":
            return Auth(0x18, Properties(authentication_method=METHOD, authentication_data=b"challenge"))
        if data == b"response":
            return 0x00
        return 0x87


def auth_props(data: bytes, method: str = METHOD) -> Properties:
    return Properties(authentication_method=method, authentication_data=data)


@pytest.fixture
def auth_broker(make_broker):
    return make_broker(hooks=[ChallengeResponse()])


def start_challenge(raw, broker, client_id: str):
    """CONNECT with the method; returns the client and the server's AUTH challenge."""
    client = raw(broker, 5)
    client.send(Connect(client_id=client_id, properties=auth_props(b"hello")))
    challenge = client.recv_packet()
    return client, challenge


def test_challenge_response_succeeds(auth_broker, raw):
    """[MQTT-4.12.0-2] the server's AUTH asking for more data has reason 0x18; [MQTT-4.12.0-5]
    it and the successful CONNACK carry the CONNECT's Authentication Method."""
    client, challenge = start_challenge(raw, auth_broker, "solver")
    assert isinstance(challenge, Auth) and challenge.reason_code == 0x18
    assert challenge.properties.authentication_method == METHOD
    assert challenge.properties.authentication_data == b"challenge"
    client.send(Auth(0x18, auth_props(b"response")))
    connack = client.recv_packet()
    assert isinstance(connack, Connack) and connack.reason_code == 0
    assert connack.properties.authentication_method == METHOD


def test_wrong_answer_refused(auth_broker, raw):
    """[MQTT-4.12.0-4] the server may refuse at any step: CONNACK >= 0x80, then close."""
    client, _ = start_challenge(raw, auth_broker, "wrong")
    client.send(Auth(0x18, auth_props(b"guess")))
    client.expect_connack_refusal(0x87)


def test_other_packet_during_authentication_is_protocol_error(auth_broker, raw):
    """[MQTT-3.1.2-30] [MQTT-3.14.0-1] a packet other than AUTH/DISCONNECT before CONNACK:
    Protocol Error reported in a CONNACK (no DISCONNECT before CONNACK), then close."""
    client, _ = start_challenge(raw, auth_broker, "impatient")
    client.send(Publish("t", b"too early"))
    client.expect_connack_refusal(0x82)


def test_client_auth_with_wrong_reason_code_is_protocol_error(auth_broker, raw):
    """[MQTT-4.12.0-3] the client must answer a server AUTH with 0x18; anything else is a
    Protocol Error."""
    client, _ = start_challenge(raw, auth_broker, "confused")
    client.send(Auth(0x19, auth_props(b"response")))
    client.expect_connack_refusal(0x82)


def test_reauthentication_with_another_method_fails(auth_broker, raw):
    """[MQTT-4.12.1-1] [MQTT-4.12.1-2] re-authentication (AUTH 0x19) with a different method fails:
    DISCONNECT with an error code, then close."""
    client, _ = start_challenge(raw, auth_broker, "reauth")
    client.send(Auth(0x18, auth_props(b"response")))
    assert client.recv_packet().reason_code == 0
    client.send(Auth(0x19, auth_props(b"hello", method="another")))
    disconnect = client.recv_packet()
    assert disconnect.type.name == "DISCONNECT" and disconnect.reason_code >= 0x80, disconnect
    assert client.expect_closed()


def test_reauthentication_with_same_method_continues(auth_broker, raw):
    """[MQTT-4.12.0-2] re-authentication with the connection's method runs the same exchange
    and the connection goes on; [MQTT-3.15.2-1] the server's AUTH packets carry only defined
    reason codes (0x00, 0x18, 0x19)."""
    client, _ = start_challenge(raw, auth_broker, "again")
    client.send(Auth(0x18, auth_props(b"response")))
    assert client.recv_packet().reason_code == 0
    client.send(Auth(0x19, auth_props(b"hello")))
    challenge = client.recv_packet()
    assert isinstance(challenge, Auth) and challenge.reason_code == 0x18
    client.send(Auth(0x18, auth_props(b"response")))
    done = client.recv_packet()
    assert isinstance(done, Auth) and done.reason_code == 0x00
    assert {challenge.reason_code, done.reason_code} <= AUTH_REASON_CODES
    client.send(Pingreq())
    assert isinstance(client.recv_packet(), Pingresp)


def test_auth_packet_with_reserved_flags_is_malformed(auth_broker, raw):
    """[MQTT-3.15.1-1] AUTH fixed-header flags other than 0: Malformed, the connection is closed."""
    client, _ = start_challenge(raw, auth_broker, "flags")
    whole = encode(Auth(0x18, auth_props(b"response")), 5)
    client.send(bytes([whole[0] | 0x01]) + whole[1:])
    client.expect_connack_refusal(0x81)


def test_refused_connack_fits_client_maximum_packet_size(broker, raw):
    """[MQTT-3.2.2-19] [MQTT-3.2.2-20] a CONNACK drops Reason String / User Properties rather than
    exceed the client's Maximum Packet Size ([MQTT-3.1.2-24])."""
    client = raw(broker, 5)
    client.send(Connect(client_id="tiny", properties=Properties(
        authentication_method="unknown", maximum_packet_size=12)))
    connack = client.expect_connack_refusal(0x8C)
    assert len(encode(connack, 5)) <= 12


class VerboseChallengeResponse(ChallengeResponse):
    """The same exchange, with a long Reason String and User Property on its challenge."""

    id = "verbose-challenge-response"

    def on_auth_packet(self, client, packet):
        result = super().on_auth_packet(client, packet)
        if isinstance(result, Auth):
            return Auth(result.reason_code, replace(
                result.properties, reason_string="because " + "r" * 100, user_properties=(("k", "v" * 100),)))
        return result


@pytest.mark.parametrize("maximum_packet_size", [None, 64], ids=["control-no-limit", "limit-64"])
def test_auth_drops_reason_string_rather_than_exceed_maximum_packet_size(make_broker, raw,
                                                                          maximum_packet_size):
    """[MQTT-3.15.2-2] [MQTT-3.15.2-3] a server AUTH omits its Reason String and User Properties
    when they would push it past the client's Maximum Packet Size (64 bytes: the bare challenge
    fits, the decorated one does not). Control: without a limit the client gets them."""
    broker = make_broker(hooks=[VerboseChallengeResponse()])
    client = raw(broker, 5)
    client.send(Connect(client_id="limited", properties=Properties(
        authentication_method=METHOD, authentication_data=b"hello", maximum_packet_size=maximum_packet_size)))
    challenge = client.recv_packet()
    assert isinstance(challenge, Auth) and challenge.properties.authentication_data == b"challenge"
    if maximum_packet_size is None:
        assert challenge.properties.reason_string is not None, "control: the hook's Reason String is gone"
    else:
        assert len(encode(challenge, 5)) <= maximum_packet_size, len(encode(challenge, 5))
        assert challenge.properties.reason_string is None and challenge.properties.user_properties == ()
