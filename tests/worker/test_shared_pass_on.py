"""A shared-group member whose session ends: what it did not get goes to another member.

kushi.worker.shared_pass_on; MQTT 5 section 4.8.2 and the checklist's [MQTT-4.8.2-5].
Issue 3: "QoS 1/2 messages in flight to a member that leaves go to another member".
Members are raw clients, so that a test decides which acknowledgement is (not) sent.
Absence checks follow a positive control: a marker published after the message
that must not arrive, received in its place.
"""

from __future__ import annotations

from support.rawclient import RawClient
from support.waiting import let_time_pass

from kushi.protocol.packets import Disconnect, Pubrec, Pubrel, Publish, Subscribe, Subscription
from kushi.protocol.properties import Properties

GROUP = "$share/g/po/t"
TOPIC = "po/t"


def member(raw, broker, client_id: str, qos: int, **properties: int) -> RawClient:
    """A connected raw client subscribed to ``GROUP`` at ``qos`` (SUBACK received)."""
    client = raw(broker, 5)
    client.connect_ok(client_id, properties=Properties(**properties))
    client.send(Subscribe(1, (Subscription(GROUP, qos),)))
    assert client.recv_packet().reason_codes == (qos,)
    return client


def next_publish(client: RawClient, timeout: float = 2.0) -> Publish:
    packet = client.recv_packet(timeout=timeout)
    assert isinstance(packet, Publish), packet
    return packet


def leave(client: RawClient) -> None:
    """DISCONNECT (reason 0) and wait until the broker has closed the connection."""
    client.send(Disconnect())
    assert client.expect_closed()


def test_qos1_in_flight_and_queued_go_to_another_member_when_the_session_ends(broker, raw, paho):
    """Issue 3, MQTT 5 4.8.2 (QoS 1: "SHOULD send the Application Message to another Client"):
    the member's connection closes without a PUBACK, session expiry 0: the message it had in flight
    and the one queued behind its receive maximum go to the other member, once each, DUP 0."""
    first = member(raw, broker, "first", 1, receive_maximum=1)
    publisher = paho.connected(broker, "pub", 5)
    publisher.publish(TOPIC, b"in-flight", qos=1)
    publisher.publish(TOPIC, b"queued", qos=1)
    assert next_publish(first).payload == b"in-flight"   # no PUBACK: "queued" waits behind it
    second = member(raw, broker, "second", 1)
    first.close()                                         # no DISCONNECT, no PUBACK
    passed = [next_publish(second) for _ in range(2)]
    assert [(bytes(p.payload), p.qos, p.dup) for p in passed] == [
        (b"in-flight", 1, False), (b"queued", 1, False)]
    publisher.publish(TOPIC, b"marker", qos=1)
    assert next_publish(second).payload == b"marker"      # nothing passed on twice


def test_a_persistent_member_keeps_its_messages_until_its_session_expires(broker, raw, paho):
    """MQTT 5 4.8.2: while the member's session lives (expiry > 0) the server waits for it;
    when the session expires before the member comes back, the message goes to another member."""
    first = member(raw, broker, "first", 1, session_expiry_interval=1)
    second = member(raw, broker, "second", 1)
    publisher = paho.connected(broker, "pub", 5)
    publisher.publish(TOPIC, b"m1", qos=1)
    publisher.publish(TOPIC, b"m2", qos=1)   # round robin: one each
    kept = next_publish(first)
    other = next_publish(second)
    assert {bytes(kept.payload), bytes(other.payload)} == {b"m1", b"m2"}
    leave(first)                              # no PUBACK for `kept`; the session stays
    publisher.publish(TOPIC, b"marker", qos=1)
    assert next_publish(second).payload == b"marker"   # `kept` was not passed on at disconnect
    let_time_pass(1.1)                        # the session expiry of "first"
    passed = next_publish(second, timeout=3.0)   # the tick that ends it may come a second later
    assert (bytes(passed.payload), passed.dup) == (bytes(kept.payload), False)
    publisher.publish(TOPIC, b"end", qos=1)
    assert next_publish(second).payload == b"end"


def test_qos1_message_is_capped_by_the_new_members_subscription(broker, raw, paho):
    """[MQTT-4.8.2-3] a message passed on goes at the new member's granted QoS: a QoS 2 publish
    given to a QoS 1 member, passed on to a QoS 0 member, arrives at QoS 0."""
    first = member(raw, broker, "first", 1)
    publisher = paho.connected(broker, "pub", 5)
    publisher.publish(TOPIC, b"q2", qos=2)
    assert next_publish(first).qos == 1
    second = member(raw, broker, "second", 0)
    first.close()
    passed = next_publish(second)
    assert (bytes(passed.payload), passed.qos) == (b"q2", 0)


def test_qos2_only_what_never_went_out_goes_to_another_member(broker, raw, paho):
    """[MQTT-4.8.2-5] a QoS 2 message sent to the member and not answered with PUBREC is not sent
    to another member (the member may hold it: exactly once), nor one it PUBREC'd; one still
    queued for it (never sent) goes to another member when its session ends."""
    first = member(raw, broker, "first", 2, receive_maximum=2)
    publisher = paho.connected(broker, "pub", 5)
    for payload in (b"recd", b"unanswered", b"queued"):
        publisher.publish(TOPIC, payload, qos=2)
    recd, unanswered = next_publish(first), next_publish(first)   # "queued" waits behind them
    assert (recd.payload, unanswered.payload) == (b"recd", b"unanswered")
    first.send(Pubrec(recd.packet_id))
    assert first.recv_packet() == Pubrel(recd.packet_id)   # no PUBCOMP: still in flight
    second = member(raw, broker, "second", 2)
    first.close()
    passed = next_publish(second)
    assert (bytes(passed.payload), passed.qos, passed.dup) == (b"queued", 2, False)
    publisher.publish(TOPIC, b"marker", qos=2)
    assert next_publish(second).payload == b"marker"       # neither "recd" nor "unanswered"


def test_plain_subscriptions_are_not_passed_on(broker, raw, paho):
    """Only what a shared group chose moves: a plain subscriber's unacknowledged message dies with
    its session, even with a member of a group on the same topic connected."""
    plain = raw(broker, 5)
    plain.connect_ok("plain")
    plain.send(Subscribe(1, (Subscription(TOPIC, 1),)))
    plain.recv_packet()
    publisher = paho.connected(broker, "pub", 5)
    publisher.publish(TOPIC, b"plain-only", qos=1)
    assert next_publish(plain).payload == b"plain-only"
    second = member(raw, broker, "second", 1)
    plain.close()
    publisher.publish(TOPIC, b"marker", qos=1)
    assert next_publish(second).payload == b"marker"


def test_a_clean_start_that_discards_the_session_passes_its_messages_on(broker, raw, paho):
    """MQTT 5 4.8.2 with [MQTT-3.1.2-4]: the member comes back with Clean Start, which ends its
    persistent session: the message it left unacknowledged goes to the other member, and not to
    the new session of the same client id (a new member of the group, not subscribed yet)."""
    first = member(raw, broker, "first", 1, session_expiry_interval=300)
    publisher = paho.connected(broker, "pub", 5)
    publisher.publish(TOPIC, b"left", qos=1)
    assert next_publish(first).payload == b"left"
    second = member(raw, broker, "second", 1)
    leave(first)
    publisher.publish(TOPIC, b"marker", qos=1)
    assert next_publish(second).payload == b"marker"   # the session still holds "left"
    again = raw(broker, 5)
    assert again.connect_ok("first", clean_start=True).session_present is False
    passed = next_publish(second)
    assert (bytes(passed.payload), passed.dup) == (b"left", False)
