"""CONNECT / CONNACK conformance (MQTT 5 section 3.1-3.2, 3.1.1 differences).

Each test names the checklist statements it proves (/work/shared/MQTT-CHECKLIST.md).
Malformed CONNECT packets live in test_bad_input.py; this file covers what a
well-formed CONNECT must lead to.
"""

from __future__ import annotations

import pytest
from support.paho import connect_properties
from support.rawclient import frame

from kushi.hooks.base import Hook
from kushi.protocol.codec import encode
from kushi.protocol.packets import (
    Auth,
    Connack,
    Connect,
    Disconnect,
    Pingreq,
    Pingresp,
    Puback,
    Publish,
    Subscribe,
    Suback,
    Subscription,
    Will,
)
from kushi.protocol.properties import Properties

V3_AND_V5 = pytest.mark.parametrize("version", [4, 5], ids=["v311", "v5"])
ALL_VERSIONS = pytest.mark.parametrize("version", [3, 4, 5], ids=["v31", "v311", "v5"])


def expect_refusal(client, version: int, v5_codes: set[int], v311_return_codes: set[int]) -> None:
    """A refusing CONNACK, Session Present 0, then the close with nothing after it. For 3.1.1 the
    return code is read from the wire (the decoder reports 3.1.1 codes as their v5 equivalents)."""
    if version == 5:
        client.expect_connack_refusal(v5_codes)
        return
    answer = client.recv_bytes(4)
    assert answer[:3] == b"\x20\x02\x00" and answer[3] in v311_return_codes, answer
    assert client.expect_closed(), "3.1.1 [MQTT-3.2.2-5] not closed after a refusing CONNACK"
    assert client.received_before_close == [], f"sent after refusing: {client.received_before_close!r}"


@ALL_VERSIONS
def test_accepted_connect_gets_connack_0_and_no_session(broker, raw, version):
    """[MQTT-3.1.4-5] [MQTT-3.2.2-2] [MQTT-3.2.2-1] a clean CONNECT gets CONNACK 0x00, session present 0."""
    client = raw(broker, version)
    connack = client.connect_ok("plain", clean_start=True)
    assert connack.session_present is False


@V3_AND_V5
def test_connack_flags_byte_has_reserved_bits_zero(broker, raw, version):
    """[MQTT-3.2.2-1] [MQTT-3.2.0-2] CONNACK bytes: type 0x20, acknowledge flags 0, reason 0."""
    client = raw(broker, version)
    client.send(encode(Connect(protocol_version=version, client_id="flags"), version))
    head = client.recv_bytes(4)
    assert head[0] == 0x20
    assert head[2] == 0x00, "acknowledge flags must be 0 for a clean start"
    assert head[3] == 0x00


@V3_AND_V5
def test_session_present_after_reconnect_without_clean_start(broker, paho, version):
    """[MQTT-3.2.2-3] [MQTT-3.1.2-5] [MQTT-3.1.3-2] Clean Start 0 with a session stored for the
    ClientID: Session Present 1; [MQTT-3.1.2-6] Clean Start 0 without one creates it (Session
    Present 0 the first time, 1 the second)."""
    props = connect_properties(SessionExpiryInterval=60) if version == 5 else None
    first = paho(broker, "keeper", version, clean=False)
    flags, _, _ = first.connect(properties=props)
    assert flags.session_present is False, "[MQTT-3.1.2-6] a new session is not present"
    first.disconnect()
    again = paho(broker, "keeper", version, clean=False)
    flags, _, _ = again.connect(properties=props)
    assert flags.session_present is True


@V3_AND_V5
def test_clean_start_discards_existing_session(broker, paho, version):
    """[MQTT-3.1.2-4] [MQTT-3.1.4-4] [MQTT-3.2.2-2] Clean Start 1 throws the old session away:
    Session Present 0. (3.1.1 [MQTT-3.1.2-6]) a CleanSession 1 session ends with its connection
    and is never resumed."""
    props = connect_properties(SessionExpiryInterval=60) if version == 5 else None
    first = paho(broker, "cleaner", version, clean=False)
    first.connect(properties=props)
    first.disconnect()
    fresh = paho(broker, "cleaner", version, clean=True)
    flags, _, _ = fresh.connect(properties=props)
    assert flags.session_present is False
    fresh.disconnect()
    # The clean connection's session replaced the old one; with expiry it now exists.
    again = paho(broker, "cleaner", version, clean=False)
    flags, _, _ = again.connect(properties=props)
    assert flags.session_present is (version == 5), "v5: kept for its expiry; 3.1.1: never reused"


def test_v5_session_ends_with_connection_when_expiry_is_zero(broker, paho):
    """[MQTT-3.1.2-23] [MQTT-4.1.0-2] no Session Expiry Interval: the session ends at disconnect."""
    first = paho(broker, "short-lived", 5, clean=False)
    first.connect()
    first.disconnect()
    again = paho(broker, "short-lived", 5, clean=False)
    flags, _, _ = again.connect()
    assert flags.session_present is False


@V3_AND_V5
def test_keep_alive_closes_after_one_and_a_half_times(broker, raw, version):
    """[MQTT-3.1.2-22] (3.1.1 [MQTT-3.1.2-24]) keep alive 1 s, silence: closed after 1.5 s; v5 with
    DISCONNECT 0x8D. [MQTT-3.2.2-22] no Server Keep Alive was sent, so the client's value holds."""
    client = raw(broker, version)
    connack = client.connect_ok("sleepy", keep_alive=1)
    assert connack.properties.server_keep_alive is None
    assert not client.expect_closed(timeout=1.0), "closed before 1.5 x keep alive"
    if version == 5:
        client.expect_disconnect(0x8D, timeout=2.0)
    else:
        assert client.expect_closed(timeout=2.0)
        assert client.received_before_close == [], "3.1.1: the server sends no DISCONNECT"


@V3_AND_V5
def test_pingreq_gets_pingresp(broker, raw, version):
    """[MQTT-3.12.4-1] every PINGREQ is answered with a PINGRESP."""
    client = raw(broker, version)
    client.connect_ok("pinger", keep_alive=1)
    for _ in range(3):
        client.send(Pingreq())
        assert isinstance(client.recv_packet(), Pingresp)


def test_server_keep_alive_overrides_client_value(make_broker, raw):
    """[MQTT-3.2.2-22] [MQTT-3.1.2-22] Server Keep Alive in CONNACK, and it is the value enforced."""
    broker = make_broker(server_keep_alive=1)
    client = raw(broker, 5)
    connack = client.connect_ok("told", keep_alive=60)
    assert connack.properties.server_keep_alive == 1
    client.expect_disconnect(0x8D, timeout=3.0)


def test_assigned_client_identifier_for_empty_id_v5(broker, raw):
    """[MQTT-3.1.3-6] [MQTT-3.1.3-7] [MQTT-3.2.2-16] empty ClientID: a unique Assigned Client Identifier."""
    first = raw(broker, 5).connect_ok("")
    second = raw(broker, 5).connect_ok("")
    assigned = {first.properties.assigned_client_identifier, second.properties.assigned_client_identifier}
    assert None not in assigned and "" not in assigned
    assert len(assigned) == 2, "two clients got the same assigned identifier"


def test_no_assigned_identifier_when_client_sent_one(broker, raw):
    """[MQTT-3.1.3-7] Assigned Client Identifier only when the server made the id up."""
    connack = raw(broker, 5).connect_ok("named")
    assert connack.properties.assigned_client_identifier is None


def test_empty_client_id_311_clean_session_accepted(broker, raw):
    """3.1.1 [MQTT-3.1.3-6] zero-length ClientId with CleanSession 1 is accepted (no identifier
    reported), and each such client gets its own id: two of them stay connected side by side
    (a shared id would make the second take the first over)."""
    first = raw(broker, 4)
    assert first.connect_ok("", clean_start=True).session_present is False
    second = raw(broker, 4)
    second.connect_ok("", clean_start=True)
    for client in (first, second):
        client.send(Pingreq())
        assert isinstance(client.recv_packet(), Pingresp)


def test_empty_client_id_311_without_clean_session_refused(broker, raw):
    """3.1.1 [MQTT-3.1.3-8] [MQTT-3.1.3-7] [MQTT-3.1.3-9] [MQTT-3.2.2-4] [MQTT-3.2.2-5] zero-length
    ClientId with CleanSession 0 is rejected: CONNACK 0x02 with Session Present 0, then close."""
    client = raw(broker, 4)
    client.send(encode(Connect(protocol_version=4, client_id="", clean_start=False), 4))
    assert client.recv_bytes(4) == b"\x20\x02\x00\x02"
    assert client.expect_closed()


@V3_AND_V5
def test_empty_client_id_refused_when_not_allowed(make_broker, raw, version):
    """[MQTT-3.1.3-8] (3.1.1 [MQTT-3.1.3-9]) refusing a ClientID: CONNACK 0x85 (3.1.1: return
    code 0x02, mandatory) and close."""
    broker = make_broker(allow_empty_client_id=False)
    client = raw(broker, version)
    client.send(Connect(protocol_version=version, client_id="", clean_start=True))
    expect_refusal(client, version, {0x85}, {0x02})


def test_23_character_alphanumeric_client_id_accepted(broker, raw):
    """[MQTT-3.1.3-5] a ClientID of 1-23 characters from 0-9a-zA-Z is accepted."""
    raw(broker, 5).connect_ok("abcdefghijklmnopqrstuvW")
    raw(broker, 4).connect_ok("0123456789ABCDEFGHIJKLM")


def test_connack_advertises_default_limits(broker, raw):
    """[MQTT-3.2.2-9] CONNACK carries Receive Maximum, Maximum Packet Size and Topic Alias Maximum
    (kushi's defaults), and no property claims a missing feature."""
    props = raw(broker, 5).connect_ok("limits").properties
    assert props.receive_maximum == broker.options.receive_maximum
    assert props.maximum_packet_size == broker.options.maximum_packet_size
    assert props.topic_alias_maximum == broker.options.topic_alias_maximum
    assert props.maximum_qos is None, "3.2.2.3.4: Maximum QoS other than 0 or 1 is a Protocol Error"
    for available in (props.retain_available, props.wildcard_subscription_available,
                      props.subscription_identifier_available, props.shared_subscription_available):
        assert available in (None, 1)


def test_connack_advertises_configured_limits(make_broker, raw):
    """[MQTT-3.2.2-9] CONNACK states Maximum QoS, Retain/Wildcard/Subscription-id/Shared availability,
    Receive Maximum, Maximum Packet Size and Topic Alias Maximum as configured."""
    broker = make_broker(
        receive_maximum=7, maximum_packet_size=5000, topic_alias_maximum=9, maximum_qos=1,
        retain_available=False, wildcard_subscriptions_available=False,
        subscription_identifiers_available=False, shared_subscriptions_available=False,
    )
    props = raw(broker, 5).connect_ok("limits").properties
    assert props.receive_maximum == 7
    assert props.maximum_packet_size == 5000
    assert props.topic_alias_maximum == 9
    assert props.maximum_qos == 1
    assert props.retain_available == 0
    assert props.wildcard_subscription_available == 0
    assert props.subscription_identifier_available == 0
    assert props.shared_subscription_available == 0


def test_no_response_information_unless_requested(broker, raw):
    """[MQTT-3.1.2-28] Request Response Information 0: no Response Information in CONNACK."""
    props = raw(broker, 5).connect_ok(
        "noinfo", properties=Properties(request_response_information=0)
    ).properties
    assert props.response_information is None


def test_no_authentication_method_in_connack_without_one_in_connect(broker, raw):
    """[MQTT-4.12.0-6] no Authentication Method in CONNECT: none in CONNACK."""
    props = raw(broker, 5).connect_ok("plainauth").properties
    assert props.authentication_method is None


def test_v31_protocol_name_mqisdp_accepted(broker, raw):
    """MQTT 3.1: protocol name MQIsdp, level 3, is served."""
    client = raw(broker, 3)
    client.connect_ok("old31")
    client.send(Pingreq())
    assert isinstance(client.recv_packet(), Pingresp)


@V3_AND_V5
def test_second_connection_takes_over_client_id(broker, raw, version):
    """[MQTT-3.1.4-3] (3.1.1 [MQTT-3.1.4-2]) same ClientID again: the old connection gets
    DISCONNECT 0x8E (v5) and is closed, with nothing after it ([MQTT-3.14.4-1] [MQTT-3.14.4-2]);
    the new one works."""
    old = raw(broker, version)
    old.connect_ok("twin")
    new = raw(broker, version)
    new.connect_ok("twin")
    if version == 5:
        old.expect_disconnect(0x8E)
    else:
        assert old.expect_closed()
        assert old.received_before_close == []
    new.send(Pingreq())
    assert isinstance(new.recv_packet(), Pingresp)


def test_enhanced_authentication_refused_with_0x8C(broker, raw):
    """[MQTT-4.12.0-1] unsupported Authentication Method: CONNACK 0x8C, then close."""
    client = raw(broker, 5)
    client.send(Connect(
        client_id="sasl", properties=Properties(authentication_method="SCRAM-SHA-1"),
    ))
    client.expect_connack_refusal(0x8C)


def test_enhanced_authentication_accepted_by_a_hook(make_broker, raw):
    """[MQTT-4.12.0-5] a hook that takes the method: CONNACK 0x00 carries the same method."""
    from kushi.hooks.base import Hook

    class TokenAuth(Hook):
        id = "token-auth"

        def on_auth_packet(self, client, packet):
            return 0x00 if packet.properties.authentication_data == b"letmein" else 0x87

    broker = make_broker(hooks=[TokenAuth()])
    client = raw(broker, 5)
    connack = client.connect_ok("tokened", properties=Properties(
        authentication_method="token", authentication_data=b"letmein",
    ))
    assert connack.properties.authentication_method == "token"


def test_auth_packet_without_authentication_method_is_protocol_error(broker, raw):
    """[MQTT-4.12.0-7] AUTH from a client that connected without a method: DISCONNECT 0x82."""
    client = raw(broker, 5)
    client.connect_ok("noauth")
    client.send(Auth(reason_code=0x19, properties=Properties(authentication_method="x")))
    client.expect_disconnect(0x82)


def test_will_qos_above_maximum_qos_refused(make_broker, raw):
    """[MQTT-3.2.2-12] Will QoS above the server's Maximum QoS: CONNACK 0x9B and close."""
    broker = make_broker(maximum_qos=1)
    client = raw(broker, 5)
    client.send(Connect(client_id="bigwill", will=Will("w/t", b"x", qos=2)))
    client.expect_connack_refusal(0x9B)


def test_will_retain_without_retain_available_refused(make_broker, raw):
    """[MQTT-3.2.2-13] Will Retain 1 when retained messages are unavailable: CONNACK 0x9A and close."""
    broker = make_broker(retain_available=False)
    client = raw(broker, 5)
    client.send(Connect(client_id="retwill", will=Will("w/t", b"x", retain=True)))
    client.expect_connack_refusal(0x9A)


def test_minimum_protocol_version_refuses_older_clients(make_broker, raw):
    """[MQTT-3.1.2-2] (3.1.1 [MQTT-3.1.2-2]) a level the server will not serve: 3.1.1 CONNACK 0x01, close."""
    broker = make_broker(minimum_protocol_version=5)
    client = raw(broker, 4)
    client.send(encode(Connect(protocol_version=4, client_id="old"), 4))
    assert client.recv_bytes(4) == b"\x20\x02\x00\x01"
    assert client.expect_closed()
    raw(broker, 5).connect_ok("new")


def test_nothing_processed_after_refused_connect(broker, raw):
    """[MQTT-3.1.4-6] after refusing a CONNECT, nothing else from the client is processed."""
    client = raw(broker, 5)
    refused = encode(Connect(client_id="x", properties=Properties(authentication_method="nope")), 5)
    subscribe = encode(Subscribe(1, (Subscription("t", 0),)), 5)
    client.send(refused + subscribe)
    client.expect_connack_refusal(0x8C)
    assert not any(isinstance(p, Suback) for p in client.received_before_close)


@V3_AND_V5
def test_server_sends_nothing_before_connack(broker, raw, paho, version):
    """[MQTT-3.2.0-1] (3.1.1 [MQTT-3.2.0-1]) the first packet the server sends is the CONNACK,
    even when a retained message and a queued message wait for the session."""
    keep = {"properties": Properties(session_expiry_interval=60)} if version == 5 else {}
    publisher = paho.connected(broker, "pub", 5)
    publisher.publish("early/retained", b"r", qos=1, retain=True)
    client = raw(broker, version)
    client.connect_ok("early", clean_start=False, **keep)
    client.send(Subscribe(1, (Subscription("early/#", 1),)))
    assert isinstance(client.recv_packet(), Suback)
    retained = client.recv_packet()
    assert isinstance(retained, Publish) and retained.topic == "early/retained"
    client.send(Puback(retained.packet_id))
    client.send(Disconnect())
    assert client.expect_closed()
    publisher.publish("early/queued", b"q", qos=1)
    again = raw(broker, version)
    first = again.connect("early", clean_start=False, **keep)
    assert isinstance(first, Connack) and first.session_present is True
    queued = again.recv_packet()
    assert isinstance(queued, Publish) and queued.topic == "early/queued"


@V3_AND_V5
def test_packets_sent_behind_the_connect_are_answered_after_the_connack(broker, raw, version):
    """[MQTT-3.2.0-1] CONNECT, SUBSCRIBE and PINGREQ in one write, no hook to await: the
    CONNACK (written at once, not with the loop iteration's flush) comes first, then the
    SUBACK and the PINGRESP in order."""
    client = raw(broker, version)
    client.send(encode(Connect(version, "piped-plain"), version)
                + encode(Subscribe(1, (Subscription("piped/#", 1),)), version)
                + encode(Pingreq(), version))
    connack = client.recv_packet()
    assert isinstance(connack, Connack) and connack.reason_code == 0
    assert isinstance(client.recv_packet(), Suback)
    assert isinstance(client.recv_packet(), Pingresp)


def test_connect_over_websocket(broker, paho):
    """[MQTT-4.2-1] [MQTT-6.0.0-4] a client connects over WebSocket and gets CONNACK."""
    client = paho(broker, "ws-client", 5, transport="websockets")
    flags, reason, _ = client.connect()
    assert int(reason.value) == 0 and flags.session_present is False


def test_one_connack_per_connection(broker, raw):
    """[MQTT-3.2.0-2] one CONNACK per connection: a packet after it is answered normally,
    not with another CONNACK."""
    client = raw(broker, 5)
    client.connect_ok("once")
    client.send(frame(0xC0, b""))
    assert isinstance(client.recv_packet(), Pingresp)


def test_connect_with_every_payload_field(broker, raw, paho):
    """[MQTT-3.1.3-1] [MQTT-3.1.2-7] ClientID, Will Properties, Will Topic, Will Payload, User Name
    and Password are parsed in that order: the will (kept with the session) is the one sent."""
    watcher = paho.connected(broker, "watcher", 5)
    assert watcher.subscribe("full/will", 0) == [0]
    client = raw(broker, 5)
    client.connect_ok("full", username="user", password=b"secret", will=Will(
        "full/will", b"will payload", properties=Properties(content_type="text/plain")))
    client.close()
    message = watcher.expect_message("full/will", b"will payload")
    assert message.properties.ContentType == "text/plain"


@V3_AND_V5
def test_suback_bytes_echo_packet_id(broker, raw, version):
    """[MQTT-2.2.1-6] [MQTT-2.2.2-1] SUBACK echoes the SUBSCRIBE's id; in v5 an empty property
    block is still sent as Property Length 0."""
    client = raw(broker, version)
    client.connect_ok("bytes")
    client.send(Subscribe(0x1234, (Subscription("b/t", 1),)))
    expected = b"\x90\x04\x12\x34\x00\x01" if version == 5 else b"\x90\x03\x12\x34\x01"
    assert client.recv_bytes(len(expected)) == expected


def test_disconnect_fits_client_maximum_packet_size(broker, raw):
    """[MQTT-3.14.2-3] [MQTT-3.14.2-4] a server DISCONNECT drops its Reason String / User
    Properties rather than exceed the client's Maximum Packet Size."""
    client = raw(broker, 5)
    client.connect_ok("tinydisc", properties=Properties(maximum_packet_size=8))
    client.send(frame(0x30, b"\x00\x00\x00x"))  # empty topic, no alias: Protocol Error
    disconnect = client.expect_disconnect(0x82)
    assert len(encode(disconnect, 5)) <= 8


def test_session_expiry_capped_by_server_maximum(make_broker, raw):
    """[MQTT-3.1.2-23] issue 2: a server with a lower maximum tells the client the Session Expiry
    Interval it will use, in CONNACK (3.2.2.3.2)."""
    broker = make_broker(maximum_session_expiry=10)
    connack = raw(broker, 5).connect_ok("capped", properties=Properties(session_expiry_interval=3600))
    assert connack.properties.session_expiry_interval == 10


@V3_AND_V5
def test_keep_alive_counts_from_the_last_packet(broker, raw, version):
    """[MQTT-3.1.2-22] the keep-alive clock restarts with every packet: a client with keep alive
    1 s that sends PINGREQ every 0.5 s stays connected well past 1.5 s."""
    from support.waiting import let_time_pass

    client = raw(broker, version)
    client.connect_ok("lively", keep_alive=1)
    for _ in range(5):  # 2.5 s in all
        let_time_pass(0.5)
        client.send(Pingreq())
        assert isinstance(client.recv_packet(), Pingresp)


class PasswordCheck(Hook):
    """Accepts a CONNECT only with the password b"right"."""

    id = "password-check"

    def on_connect_authenticate(self, client, packet):
        return packet.password == b"right"


@V3_AND_V5
def test_failed_authentication_refused_with_session_present_0(make_broker, raw, version):
    """[MQTT-3.1.4-2] a failed authentication check closes the connection after a CONNACK >= 0x80
    (0x86/0x87; 3.1.1: 0x04/0x05); [MQTT-3.2.2-6] (3.1.1 [MQTT-3.2.2-4]) with Session Present 0
    although a session for the ClientID is stored; [MQTT-3.2.2-7] [MQTT-3.1.4-6]
    (3.1.1 [MQTT-3.2.2-5] [MQTT-3.1.4-5]) closed, and the SUBSCRIBE sent behind the CONNECT is
    never processed (no SUBACK). Control: the right password resumes the stored session."""
    broker = make_broker(hooks=[PasswordCheck()])
    keep = {"properties": Properties(session_expiry_interval=60)} if version == 5 else {}
    stored = raw(broker, version)
    stored.connect_ok("held", clean_start=False, username="u", password=b"right", **keep)
    stored.send(Disconnect())
    assert stored.expect_closed()
    intruder = raw(broker, version)
    intruder.send(encode(Connect(protocol_version=version, client_id="held", clean_start=False,
                                 username="u", password=b"wrong", **keep), version)
                  + encode(Subscribe(1, (Subscription("t", 0),)), version))
    expect_refusal(intruder, version, {0x86, 0x87}, {0x04, 0x05})
    owner = raw(broker, version)
    connack = owner.connect_ok("held", clean_start=False, username="u", password=b"right", **keep)
    assert connack.session_present is True


def test_server_keep_alive_not_applied_to_311(make_broker, raw):
    """3.1.1 [MQTT-3.1.2-24] a 3.1.1 client's Keep Alive cannot be overridden (there is no Server
    Keep Alive in 3.1.1): with server_keep_alive 1, a v5 client is closed for silence (the
    control, [MQTT-3.2.2-22]) while a 3.1.1 client with Keep Alive 60, as silent, is still served."""
    broker = make_broker(server_keep_alive=1)
    old = raw(broker, 4)
    old.connect_ok("old-keepalive", keep_alive=60)
    new = raw(broker, 5)
    assert new.connect_ok("new-keepalive", keep_alive=60).properties.server_keep_alive == 1
    new.expect_disconnect(0x8D, timeout=3.0)
    old.send(Pingreq())
    assert isinstance(old.recv_packet(), Pingresp), "the 3.1.1 client was held to the server's keep alive"
