"""kushi.worker.session: the pure session logic (packet ids, queue bound, expiry), no sockets."""

from __future__ import annotations

from kushi.protocol.packets import Publish
from kushi.protocol.properties import Properties
from kushi.worker.session import NEVER, Outbound, Session, remaining_expiry


def outbound(n: int) -> Outbound:
    return Outbound(Publish(f"t/{n}", b"x", qos=1), received_at=0.0)


def test_packet_ids_are_non_zero_and_skip_ids_in_flight():
    """[MQTT-2.2.1-4] a new id is non-zero and not in use; ids wrap after 65535."""
    session = Session("c", 5)
    session._last_packet_id = 65534
    session.inflight[1] = outbound(0)
    ids = [session.allocate_packet_id() for _ in range(3)]
    assert ids == [65535, 2, 3]


def test_no_packet_id_when_all_are_in_flight():
    session = Session("c", 5)
    session.inflight = {i: outbound(i) for i in range(1, 65536)}
    assert session.allocate_packet_id() is None


def test_queue_drops_the_oldest_and_counts():
    session = Session("c", 5, max_queued_messages=2)
    dropped = [session.enqueue(outbound(i)) for i in range(4)]
    assert [d.message.topic if d else None for d in dropped] == [None, None, "t/0", "t/1"]
    assert [item.message.topic for item in session.queue] == ["t/2", "t/3"]
    assert session.dropped == 2


def test_zero_queue_limit_queues_nothing():
    session = Session("c", 5, max_queued_messages=0)
    item = outbound(1)
    assert session.enqueue(item) is item
    assert not session.queue and session.dropped == 1


def test_queue_and_qos2_ids_are_made_when_the_first_is_added():
    """A new session holds no deque or set (a storm's idle sessions); reading them as empty
    works, and the first message or QoS 2 id makes them."""
    session = Session("c", 5)
    assert session.queue == () and session.inbound_qos2 == ()
    assert not session.queue and len(session.queue) == 0 and 7 not in session.inbound_qos2
    session.enqueue(outbound(1))
    session.add_inbound_qos2(7)
    session.add_inbound_qos2(8)
    assert [item.message.topic for item in session.queue] == ["t/1"]
    assert session.inbound_qos2 == {7, 8}


def test_send_quota_follows_receive_maximum():
    """[MQTT-4.9.0-2] no more in flight than the client's Receive Maximum."""
    session = Session("c", 5)
    session.send_quota_limit = 2
    for n in range(2):
        assert session.has_send_quota()
        assert session.start_inflight(outbound(n))
    assert not session.has_send_quota()
    session.acknowledge(next(iter(session.inflight)))
    assert session.has_send_quota()


def test_expiry_counts_from_detach_and_never_means_never():
    session = Session("c", 5, expiry_interval=10)
    assert not session.is_expired(1e9)          # connected: never expires [MQTT-4.1.0-1]
    session.detach(100.0)
    assert not session.is_expired(109.9) and session.is_expired(110.0)
    session.attach()
    assert session.expires_at() is None
    forever = Session("d", 4, expiry_interval=NEVER)
    forever.detach(0.0)
    assert not forever.is_expired(1e12)


def test_remaining_message_expiry():
    """[MQTT-3.3.2-6] the interval left is the received one minus the whole seconds waited."""
    message = Publish("t", b"x", properties=Properties(message_expiry_interval=5))
    assert remaining_expiry(message, 10.0, 10.5) == 5
    assert remaining_expiry(message, 10.0, 13.2) == 2
    assert remaining_expiry(message, 10.0, 15.0) == 0
    assert remaining_expiry(Publish("t", b"x"), 0.0, 99.0) is None
