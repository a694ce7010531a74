"""Session conformance: persistence, queueing while away, expiry, redelivery with DUP.

Checklist: CONNECT Clean Start (3.1.2-4..6, 3.1.2-23), session state (4.1),
message delivery retry (4.4), 3.1.1 CleanSession rules.
"""

from __future__ import annotations

import pytest
from support.paho import connect_properties, publish_properties
from support.rawclient import RawClient
from support.waiting import let_time_pass, wait_until

from kushi.protocol.packets import (
    Connack,
    Disconnect,
    Pingreq,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Subscribe,
    Subscription,
)
from kushi.protocol.properties import Properties

VERSIONS = pytest.mark.parametrize("version", [4, 5], ids=["v311", "v5"])
KEEP_SESSION = Properties(session_expiry_interval=60)


def persistent(paho, broker, client_id: str, version: int):
    """A paho client that keeps its session (CleanSession 0 / Session Expiry 60 s), connected."""
    client = paho(broker, client_id, version, clean=False)
    client.connect(properties=connect_properties(SessionExpiryInterval=60) if version == 5 else None)
    return client


def raw_persistent(raw, broker, client_id: str, version: int) -> tuple[RawClient, Connack]:
    """A raw client resuming/creating a persistent session; returns it and its CONNACK."""
    client = raw(broker, version)
    fields = {"properties": KEEP_SESSION} if version == 5 else {}
    return client, client.connect_ok(client_id, clean_start=False, **fields)


def close_cleanly(client: RawClient) -> None:
    client.send(Disconnect())
    assert client.expect_closed()


@VERSIONS
def test_subscriptions_survive_reconnect(broker, paho, version):
    """[MQTT-3.1.2-5] (3.1.1 [MQTT-3.1.2-4]) the resumed session keeps its subscriptions."""
    client = persistent(paho, broker, "keeper", version)
    assert client.subscribe("keep/t", 1) == [1]
    client.disconnect()
    again = persistent(paho, broker, "keeper", version)
    paho.connected(broker, "pub", version).publish("keep/t", b"still subscribed", qos=1)
    again.expect_message("keep/t", b"still subscribed")


@VERSIONS
def test_qos1_and_qos2_messages_queued_while_away(broker, paho, version):
    """[MQTT-3.1.2-5] (3.1.1 [MQTT-3.1.2-5]) [MQTT-4.5.0-1] [MQTT-4.6.0-5] QoS 1/2 messages for a disconnected
    persistent session are queued and delivered when it comes back, in order per QoS (paho hands
    a QoS 2 message over only at PUBREL, so order across QoS levels is not observable here)."""
    client = persistent(paho, broker, "away", version)
    assert client.subscribe("q/#", 2) == [2]
    client.disconnect()
    publisher = paho.connected(broker, "pub", version)
    for index, qos in enumerate([1, 2, 1, 2]):
        publisher.publish(f"q/{index}", f"m{index}".encode(), qos=qos)
    back = persistent(paho, broker, "away", version)
    received = [(m.topic, m.payload, m.qos) for m in (back.wait_for_message() for _ in range(4))]
    assert [m for m in received if m[2] == 1] == [("q/0", b"m0", 1), ("q/2", b"m2", 1)]
    assert [m for m in received if m[2] == 2] == [("q/1", b"m1", 2), ("q/3", b"m3", 2)]


def test_queue_limit_drops_oldest_and_counts(make_broker, paho):
    """Issue 2: the offline queue is bounded; the oldest messages are dropped and counted."""
    broker = make_broker(max_queued_messages=3)
    client = persistent(paho, broker, "bounded", 5)
    assert client.subscribe("bq/t", 1) == [1]
    client.disconnect()
    publisher = paho.connected(broker, "pub", 5)
    for index in range(6):
        publisher.publish("bq/t", f"m{index}".encode(), qos=1)
    stats = broker.sync(broker.server.stats)
    dropped = {key: value for key, value in stats.items() if "drop" in key}
    assert sum(dropped.values()) >= 3, f"drops not counted in stats: {stats}"
    back = persistent(paho, broker, "bounded", 5)
    back.publish("bq/t", b"marker", qos=1)
    received = [back.wait_for_message().payload for _ in range(4)]
    assert received == [b"m3", b"m4", b"m5", b"marker"]


@VERSIONS
def test_clean_start_discards_queued_messages(broker, paho, version):
    """[MQTT-3.1.2-4] (3.1.1 [MQTT-3.1.2-6]) Clean Start: the old session's subscriptions and queue
    are gone."""
    client = persistent(paho, broker, "wiped", version)
    assert client.subscribe("w/t", 1) == [1]
    client.disconnect()
    publisher = paho.connected(broker, "pub", version)
    publisher.publish("w/t", b"queued for the old session", qos=1)
    fresh = paho(broker, "wiped", version, clean=True)
    flags, _, _ = fresh.connect()
    assert flags.session_present is False
    assert fresh.subscribe("w/marker", 1) == [1]
    publisher.publish("w/t", b"after clean start", qos=1)
    publisher.publish("w/marker", b"marker", qos=1)
    fresh.expect_message("w/marker", b"marker")
    fresh.expect_no_message()


def test_session_expires_after_interval(broker, paho):
    """[MQTT-3.1.2-23] [MQTT-4.1.0-2] the session is kept for its Session Expiry Interval, then
    discarded."""
    props = connect_properties(SessionExpiryInterval=1)
    client = paho(broker, "brief", 5, clean=False)
    client.connect(properties=props)
    client.disconnect()
    within = paho(broker, "brief", 5, clean=False)
    flags, _, _ = within.connect(properties=props)
    assert flags.session_present is True, "session gone before its expiry interval"
    within.disconnect()
    let_time_pass(1.5)
    after = paho(broker, "brief", 5, clean=False)
    flags, _, _ = after.connect(properties=props)
    assert flags.session_present is False, "session kept after its expiry interval"


def test_disconnect_can_shorten_session_expiry(broker, raw):
    """[MQTT-3.1.2-23] DISCONNECT may set Session Expiry Interval 0: the session ends now."""
    client, _ = raw_persistent(raw, broker, "shorten", 5)
    client.send(Disconnect(properties=Properties(session_expiry_interval=0)))
    assert client.expect_closed()
    _, connack = raw_persistent(raw, broker, "shorten", 5)
    assert connack.session_present is False


def test_311_persistent_session_lives_until_clean_session(broker, paho):
    """3.1.1 [MQTT-3.1.2-4] a CleanSession 0 session has no expiry: it is there on reconnect."""
    client = persistent(paho, broker, "forever", 4)
    client.disconnect()
    again = paho(broker, "forever", 4, clean=False)
    flags, _, _ = again.connect()
    assert flags.session_present is True


@VERSIONS
def test_unacknowledged_qos1_redelivered_with_dup_on_resume(broker, raw, paho, version):
    """[MQTT-4.4.0-1] (3.1.1 [MQTT-4.4.0-1]) [MQTT-3.3.1-1] [MQTT-4.3.2-3] on resume, an
    unacknowledged QoS 1 PUBLISH is sent again with its original packet id and DUP 1, after the
    CONNACK ([MQTT-3.2.0-1])."""
    client, _ = raw_persistent(raw, broker, "forgetful", version)
    client.send(Subscribe(1, (Subscription("re/t", 1),)))
    client.recv_packet()
    paho.connected(broker, "pub", version).publish("re/t", b"again", qos=1)
    first = client.recv_packet()
    assert isinstance(first, Publish) and not first.dup
    client.close()  # no PUBACK, no DISCONNECT
    again, connack = raw_persistent(raw, broker, "forgetful", version)
    assert connack.session_present is True
    resent = again.recv_packet()
    assert isinstance(resent, Publish)
    assert (resent.packet_id, resent.payload, resent.dup, resent.qos) == (first.packet_id, b"again", True, 1)
    again.send(Puback(resent.packet_id))


@VERSIONS
def test_pubrel_resent_on_resume_not_publish(broker, raw, paho, version):
    """[MQTT-4.4.0-1] (3.1.1 [MQTT-4.4.0-1]) [MQTT-4.3.3-6] a QoS 2 delivery that got its PUBREC
    resumes with PUBREL (same id), never the PUBLISH again."""
    client, _ = raw_persistent(raw, broker, "halfway", version)
    client.send(Subscribe(1, (Subscription("q2/t", 2),)))
    client.recv_packet()
    paho.connected(broker, "pub", version).publish("q2/t", b"x", qos=2)
    delivered = client.recv_packet()
    client.send(Pubrec(delivered.packet_id))
    assert isinstance(client.recv_packet(), Pubrel)
    client.close()
    again, _ = raw_persistent(raw, broker, "halfway", version)
    resent = again.recv_packet()
    assert isinstance(resent, Pubrel) and resent.packet_id == delivered.packet_id
    again.send(Pubcomp(resent.packet_id))
    again.send(Pingreq())
    assert isinstance(again.recv_packet(), Pingresp), "something besides PUBREL was resent"


def test_puback_error_code_settles_the_message(broker, raw, paho):
    """[MQTT-4.4.0-2] a PUBACK with a reason >= 0x80 settles the PUBLISH: no retransmission."""
    client, _ = raw_persistent(raw, broker, "refuser", 5)
    client.send(Subscribe(1, (Subscription("ref/t", 1),)))
    client.recv_packet()
    publisher = paho.connected(broker, "pub", 5)
    publisher.publish("ref/t", b"refused", qos=1)
    delivered = client.recv_packet()
    client.send(Puback(delivered.packet_id, reason_code=0x80))
    close_cleanly(client)
    again, connack = raw_persistent(raw, broker, "refuser", 5)
    assert connack.session_present is True
    publisher.publish("ref/t", b"next", qos=1)
    packet = again.recv_packet()
    assert isinstance(packet, Publish) and packet.payload == b"next", "the refused message was resent"


def test_qos2_inbound_state_survives_reconnect(broker, raw, paho):
    """[MQTT-4.3.3-10] the exactly-once state of an inbound QoS 2 message is session state: a
    resent PUBLISH after reconnect is not delivered again, and the PUBREL completes it."""
    subscriber = paho.connected(broker, "sub", 5)
    # QoS 1 delivery: paho hands a QoS 2 message over only at PUBREL, which would reorder it
    # behind the QoS 1 marker.
    assert subscriber.subscribe("eo/t", 1) == [1]
    client, _ = raw_persistent(raw, broker, "once", 5)
    client.send(Publish("eo/t", b"only once", qos=2, packet_id=3))
    assert client.recv_packet() == Pubrec(3)
    client.close()
    again, connack = raw_persistent(raw, broker, "once", 5)
    assert connack.session_present is True
    again.send(Publish("eo/t", b"only once", qos=2, packet_id=3, dup=True))
    assert again.recv_packet() == Pubrec(3)
    again.send(Pubrel(3))
    assert again.recv_packet() == Pubcomp(3)
    again.send(Publish("eo/t", b"marker", qos=1, packet_id=4))
    subscriber.expect_message("eo/t", b"only once")
    subscriber.expect_message("eo/t", b"marker")
    subscriber.expect_no_message()


@VERSIONS
def test_unacknowledged_qos2_publish_redelivered_with_dup(broker, raw, paho, version):
    """[MQTT-4.3.3-3] a QoS 2 PUBLISH without PUBREC stays unacknowledged: resent (DUP 1, same id)
    on resume."""
    client, _ = raw_persistent(raw, broker, "noprec", version)
    client.send(Subscribe(1, (Subscription("nr/t", 2),)))
    client.recv_packet()
    paho.connected(broker, "pub", version).publish("nr/t", b"x", qos=2)
    first = client.recv_packet()
    client.close()
    again, _ = raw_persistent(raw, broker, "noprec", version)
    resent = again.recv_packet()
    assert isinstance(resent, Publish)
    assert (resent.packet_id, resent.qos, resent.dup) == (first.packet_id, 2, True)


def test_sent_qos2_message_not_expired(broker, raw, paho):
    """[MQTT-4.3.3-7] a QoS 2 message whose PUBLISH was sent is not expired: it is resent on
    resume even after its Message Expiry Interval."""
    client, _ = raw_persistent(raw, broker, "slowack", 5)
    client.send(Subscribe(1, (Subscription("se/t", 2),)))
    client.recv_packet()
    paho.connected(broker, "pub", 5).publish("se/t", b"x", qos=2, properties=publish_properties(MessageExpiryInterval=1))
    first = client.recv_packet()
    client.close()
    let_time_pass(1.3)
    again, _ = raw_persistent(raw, broker, "slowack", 5)
    resent = again.recv_packet()
    assert isinstance(resent, Publish) and resent.packet_id == first.packet_id and resent.dup


def test_session_kept_while_connected_beyond_expiry(broker, paho):
    """[MQTT-4.1.0-1] session state is never discarded while the connection is open, even past
    its Session Expiry Interval."""
    client = paho(broker, "steady", 5, clean=False)
    client.connect(properties=connect_properties(SessionExpiryInterval=1))
    assert client.subscribe("steady/t", 1) == [1]
    let_time_pass(1.3)
    paho.connected(broker, "pub", 5).publish("steady/t", b"still", qos=1)
    client.expect_message("steady/t", b"still")


def test_shared_qos2_delivery_completed_with_same_member(broker, raw, paho):
    """[MQTT-4.8.2-4] a QoS 2 delivery to a shared-subscription member interrupted by a disconnect
    is completed with that member when it reconnects."""
    member, _ = raw_persistent(raw, broker, "member", 5)
    member.send(Subscribe(1, (Subscription("$share/g/sq/t", 2),)))
    member.recv_packet()
    paho.connected(broker, "pub", 5).publish("sq/t", b"job", qos=2)
    first = member.recv_packet()
    member.close()
    again, _ = raw_persistent(raw, broker, "member", 5)
    resent = again.recv_packet()
    assert isinstance(resent, Publish) and resent.payload == b"job" and resent.packet_id == first.packet_id


def test_shared_message_of_ended_session_not_given_to_another_member(broker, raw, paho):
    """[MQTT-4.8.2-5] if the member's session ends before it reconnects, the message it held is
    not sent to another member, although another member is there when the session ends.
    Control: the next message reaches the remaining member, and nothing came before it."""
    leaving = raw(broker, 5)
    leaving.connect_ok("leaving")  # Session Expiry 0: the session ends with the connection
    leaving.send(Subscribe(1, (Subscription("$share/g/end/t", 2),)))
    leaving.recv_packet()
    publisher = paho.connected(broker, "pub", 5)
    publisher.publish("end/t", b"held by leaving", qos=2)  # the only member gets it
    assert leaving.recv_packet().payload == b"held by leaving"
    staying = paho.connected(broker, "staying", 5)
    assert staying.subscribe("$share/g/end/t", 2) == [2]
    leaving.close()  # no PUBREC: the QoS 2 delivery is unfinished when the session ends
    wait_until(lambda: broker.call(broker.server.client("leaving")) is None,
               message="the leaving member's session ending")
    publisher.publish("end/t", b"control", qos=2)
    staying.expect_message("end/t", b"control")
    staying.expect_no_message()


def test_takeover_hands_over_unacknowledged_messages(broker, raw, paho):
    """[MQTT-3.1.4-3] [MQTT-4.4.0-1] a takeover with Clean Start 0 resumes the session: the old
    connection gets DISCONNECT 0x8E, the new one Session Present 1 and the unacknowledged
    message again (same id, DUP 1)."""
    old, _ = raw_persistent(raw, broker, "handover", 5)
    old.send(Subscribe(1, (Subscription("ho/t", 1),)))
    old.recv_packet()
    paho.connected(broker, "pub", 5).publish("ho/t", b"in flight", qos=1)
    first = old.recv_packet()
    new, connack = raw_persistent(raw, broker, "handover", 5)
    assert connack.session_present is True
    old.expect_disconnect(0x8E)
    resent = new.recv_packet()
    assert isinstance(resent, Publish)
    assert (resent.packet_id, resent.payload, resent.dup) == (first.packet_id, b"in flight", True)


def test_no_retransmission_while_connected_v5(broker, raw, paho):
    """[MQTT-4.4.0-1] v5: unacknowledged messages are resent on reconnect only, never on the live
    connection. Control: a second message arrives next, not a DUP of the first."""
    client = raw(broker, 5)
    client.connect_ok("patient")
    client.send(Subscribe(1, (Subscription("nt/t", 1),)))
    client.recv_packet()
    publisher = paho.connected(broker, "pub", 5)
    publisher.publish("nt/t", b"first", qos=1)
    first = client.recv_packet()
    assert first.payload == b"first"
    publisher.publish("nt/t", b"second", qos=1)
    second = client.recv_packet()
    assert (second.payload, second.dup) == (b"second", False), second


@VERSIONS
def test_new_packet_ids_avoid_ids_still_in_flight_after_resume(broker, raw, paho, version):
    """[MQTT-2.2.1-4] (3.1.1 [MQTT-2.3.1-4]) after a resume, the unacknowledged message keeps its
    id, and a new message gets another id while that one is still in use."""
    client, _ = raw_persistent(raw, broker, "idkeeper", version)
    client.send(Subscribe(1, (Subscription("ids/t", 1),)))
    client.recv_packet()
    publisher = paho.connected(broker, "pub", version)
    publisher.publish("ids/t", b"unacknowledged", qos=1)
    first = client.recv_packet()
    client.close()
    again, _ = raw_persistent(raw, broker, "idkeeper", version)
    resent = again.recv_packet()
    assert (resent.payload, resent.packet_id) == (b"unacknowledged", first.packet_id)
    publisher.publish("ids/t", b"new", qos=1)
    new = again.recv_packet()
    assert isinstance(new, Publish) and new.payload == b"new"
    assert new.packet_id not in (0, None, resent.packet_id), (new.packet_id, resent.packet_id)
