"""Flow control (4.9): never more QoS 1/2 in flight to a client than its Receive Maximum.

Checklist: [MQTT-3.3.4-9] [MQTT-3.3.4-10] [MQTT-4.9.0-1..3]. The inbound side
(DISCONNECT 0x93 when a client exceeds ours) is in test_mqtt_bad_input.py.
"""

from __future__ import annotations

from support.paho import publish_properties
from support.rawclient import NoPacket

from kushi.hooks.base import Hook
from kushi.protocol.codec import encode
from kushi.protocol.packets import (
    MQTT_5,
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

SHORT = 0.3
"""Seconds in which a packet that must be held back would have arrived (after positive controls)."""


def capped_subscriber(raw, broker, client_id: str, receive_maximum: int, qos: int):
    client = raw(broker, 5)
    client.connect_ok(client_id, properties=Properties(receive_maximum=receive_maximum))
    client.send(Subscribe(1, (Subscription("fc/#", qos),)))
    client.recv_packet()
    return client


def assert_nothing_more(client) -> None:
    """No packet within SHORT seconds: the send window is full."""
    try:
        packet = client.recv_packet(timeout=SHORT)
    except NoPacket:
        return
    raise AssertionError(f"the broker sent beyond the client's Receive Maximum: {packet!r}")


def test_qos1_in_flight_never_exceeds_receive_maximum(broker, raw, paho):
    """[MQTT-3.3.4-9] [MQTT-4.9.0-1] [MQTT-4.9.0-2] with Receive Maximum 2, two QoS 1 PUBLISHes
    arrive, the third only after a PUBACK frees a slot; none are lost."""
    client = capped_subscriber(raw, broker, "capped", 2, 1)
    publisher = paho.connected(broker, "pub", 5)
    for index in range(5):
        publisher.publish("fc/t", f"m{index}".encode(), qos=1)
    window = [client.recv_packet(), client.recv_packet()]
    assert [p.payload for p in window] == [b"m0", b"m1"]
    assert_nothing_more(client)
    received = [p.payload for p in window]
    pending = list(window)
    while len(received) < 5:
        client.send(Puback(pending.pop(0).packet_id))
        packet = client.recv_packet()
        assert isinstance(packet, Publish)
        received.append(packet.payload)
        pending.append(packet)
        if len(received) < 5:
            assert_nothing_more(client)
    assert received == [b"m0", b"m1", b"m2", b"m3", b"m4"]


def test_qos2_slot_freed_only_by_pubcomp(broker, raw, paho):
    """[MQTT-3.3.4-9] a QoS 2 message holds its slot until PUBCOMP (PUBREC alone does not free it)."""
    client = capped_subscriber(raw, broker, "capped2", 1, 2)
    publisher = paho.connected(broker, "pub", 5)
    publisher.publish("fc/t", b"first", qos=2)
    publisher.publish("fc/t", b"second", qos=2)
    first = client.recv_packet()
    assert first.payload == b"first"
    client.send(Pubrec(first.packet_id))
    assert isinstance(client.recv_packet(), Pubrel)
    assert_nothing_more(client)
    client.send(Pubcomp(first.packet_id))
    second = client.recv_packet()
    assert isinstance(second, Publish) and second.payload == b"second"


def test_full_window_does_not_hold_back_other_packets(broker, raw, paho):
    """[MQTT-3.3.4-10] [MQTT-4.9.0-3] with zero quota the broker still answers PINGREQ and
    delivers QoS 0 messages."""
    client = capped_subscriber(raw, broker, "busy", 1, 1)
    publisher = paho.connected(broker, "pub", 5)
    publisher.publish("fc/t", b"held", qos=1)
    publisher.publish("fc/t", b"waiting", qos=1)
    held = client.recv_packet()
    assert held.payload == b"held"
    client.send(Pingreq())
    assert isinstance(client.recv_packet(), Pingresp)
    client.send(Subscribe(2, (Subscription("fc0/t", 0),)))
    assert client.recv_packet().packet_id == 2
    publisher.publish("fc0/t", b"qos0 passes", qos=0)
    packet = client.recv_packet()
    assert isinstance(packet, Publish) and packet.payload == b"qos0 passes" and packet.qos == 0
    client.send(Puback(held.packet_id))
    assert client.recv_packet().payload == b"waiting"


def test_our_receive_maximum_is_advertised_and_honoured(make_broker, raw, paho):
    """[MQTT-3.3.4-7] with Receive Maximum 3 advertised, a client may have 3 QoS 2 messages
    unacknowledged (PUBREL outstanding) without being disconnected."""
    broker = make_broker(receive_maximum=3)
    subscriber = paho.connected(broker, "sub", 5)
    assert subscriber.subscribe("rm/t", 2) == [2]
    client = raw(broker, 5)
    assert client.connect_ok("exact").properties.receive_maximum == 3
    for packet_id in (1, 2, 3):
        client.send(Publish("rm/t", f"m{packet_id}".encode(), qos=2, packet_id=packet_id))
        assert client.recv_packet() == Pubrec(packet_id)
    for packet_id in (1, 2, 3):
        client.send(Pubrel(packet_id))
        assert client.recv_packet() == Pubcomp(packet_id)
    assert [subscriber.wait_for_message().payload for _ in range(3)] == [b"m1", b"m2", b"m3"]


def test_server_maximum_inflight_caps_the_window(make_broker, raw, paho):
    """Issue 2 (bounded memory): maximum_inflight caps what is in flight to one client even when
    its Receive Maximum is larger ([MQTT-4.9.0-1]: the quota starts no higher than either)."""
    broker = make_broker(maximum_inflight=2)
    client = capped_subscriber(raw, broker, "wide", 100, 1)
    publisher = paho.connected(broker, "pub", 5)
    for index in range(3):
        publisher.publish("fc/t", f"m{index}".encode(), qos=1)
    window = [client.recv_packet(), client.recv_packet()]
    assert [p.payload for p in window] == [b"m0", b"m1"]
    assert_nothing_more(client)
    client.send(Puback(window[0].packet_id))
    assert client.recv_packet().payload == b"m2"


def test_refusing_pubrec_frees_the_slot_and_settles_the_message(broker, raw, paho):
    """[MQTT-3.3.4-9] a PUBREC >= 0x80 frees the send slot, and [MQTT-4.4.0-2] settles the message:
    no PUBREL follows, the next message comes."""
    client = capped_subscriber(raw, broker, "refuses", 1, 2)
    publisher = paho.connected(broker, "pub", 5)
    publisher.publish("fc/t", b"refused", qos=2)
    publisher.publish("fc/t", b"next", qos=2)
    first = client.recv_packet()
    assert first.payload == b"refused"
    client.send(Pubrec(first.packet_id, reason_code=0x80))
    second = client.recv_packet()
    assert isinstance(second, Publish) and second.payload == b"next", f"expected the next message, got {second!r}"


def test_message_expiring_while_held_back_by_the_window_is_not_sent(broker, raw, paho):
    """[MQTT-3.3.2-5] a message waiting behind a full send window whose expiry passes before its
    delivery started is dropped for that subscriber; [MQTT-3.3.2-6] one that is still valid goes
    out with the interval it has left."""
    from support.waiting import let_time_pass

    client = capped_subscriber(raw, broker, "slowacker", 1, 1)
    publisher = paho.connected(broker, "pub", 5)
    publisher.publish("fc/t", b"in flight", qos=1)
    publisher.publish("fc/t", b"expires", qos=1, properties=publish_properties(MessageExpiryInterval=1))
    publisher.publish("fc/t", b"lasts", qos=1, properties=publish_properties(MessageExpiryInterval=60))
    held = client.recv_packet()
    assert held.payload == b"in flight"
    let_time_pass(1.3)
    client.send(Puback(held.packet_id))
    after = client.recv_packet()
    assert isinstance(after, Publish) and after.payload == b"lasts", f"expected b'lasts' next, got {after!r}"
    assert 0 < after.properties.message_expiry_interval < 60


class PacketReadLog(Hook):
    """Records the type of each packet a client sends (on_packet_read sees them one by one)."""

    id = "packet-read-log"

    def __init__(self) -> None:
        self.kinds: list[str] = []

    def on_packet_read(self, client, packet):
        self.kinds.append(type(packet).__name__)
        return packet


def _pubacks_in_one_write_free_their_slots(raw, paho, broker) -> None:
    """Receive Maximum 2; the two PUBACKs go in one write: both slots are free, the next two come."""
    client = capped_subscriber(raw, broker, "capped-run", 2, 1)
    publisher = paho.connected(broker, "pub", 5)
    for index in range(4):
        publisher.publish("fc/t", f"m{index}".encode(), qos=1)
    window = [client.recv_packet(), client.recv_packet()]
    assert_nothing_more(client)
    client.send(b"".join(encode(Puback(p.packet_id), MQTT_5) for p in window))
    later = [client.recv_packet(), client.recv_packet()]
    assert [p.payload for p in window + later] == [b"m0", b"m1", b"m2", b"m3"]


def test_pubacks_read_together_each_free_a_slot(broker, raw, paho):
    """[MQTT-4.9.0-2] consecutive PUBACKs of one read (taken in one pass, as a PubackRun)."""
    _pubacks_in_one_write_free_their_slots(raw, paho, broker)


def test_pubacks_read_together_reach_on_packet_read_one_by_one(make_broker, raw, paho):
    """With a hook reading packets, each PUBACK of a read is its own Puback to the hook."""
    log = PacketReadLog()
    broker = make_broker([log])
    _pubacks_in_one_write_free_their_slots(raw, paho, broker)
    assert log.kinds.count("Puback") >= 2 and "PubackRun" not in log.kinds
