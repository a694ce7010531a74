"""Session (kushi.worker.session): packet identifiers and the send quota, without a network.

Why ``on_packet_id_exhausted`` does not fire in practice: the send quota (the
client's Receive Maximum, at most 65,535, capped by ``Options.maximum_inflight``)
is checked before a message takes a packet id, so whenever a message may go
out a free id exists. These checks pin that down; the event is still wired
(``Delivery.send_inflight``) for a session that would hold every id.
"""

from __future__ import annotations

import pytest

from kushi.protocol.packets import Publish
from kushi.worker.session import Outbound, Session, new_session


def message(n: int) -> Outbound:
    return Outbound(Publish(topic="t", payload=b"%d" % n, qos=1), received_at=0.0)


def test_packet_ids_are_non_zero_and_not_in_use() -> None:
    """[MQTT-2.2.1-4] a new id is not one of an unacknowledged message."""
    session = Session("c", 5)
    ids = set()
    for n in range(1000):
        item = message(n)
        assert session.start_inflight(item)
        ids.add(item.packet_id)
    assert 0 not in ids and len(ids) == 1000
    session.acknowledge(500)
    item = message(1000)
    assert session.start_inflight(item) and item.packet_id not in ids - {500}


def test_ids_wrap_around_past_65535_skipping_those_in_flight() -> None:
    session = Session("c", 5)
    session._last_packet_id = 65534
    session.inflight[1] = message(0)
    first, second = message(1), message(2)
    assert session.start_inflight(first) and session.start_inflight(second)
    assert (first.packet_id, second.packet_id) == (65535, 2)


@pytest.mark.parametrize("limit", [1, 1024, 65535])
def test_while_there_is_send_quota_a_packet_id_is_free(limit: int) -> None:
    """The quota runs out no later than the ids: no message with quota meets exhaustion."""
    session = Session("c", 5, send_quota_limit=limit)
    sent = 0
    while session.has_send_quota():
        assert session.start_inflight(message(sent)), f"no id free with {sent} in flight"
        sent += 1
    assert sent == limit


def test_with_every_id_in_flight_none_is_given() -> None:
    session = Session("c", 5)
    session.inflight.update({packet_id: message(packet_id) for packet_id in range(1, 65536)})
    assert session.allocate_packet_id() is None and not session.start_inflight(message(0))


def test_new_session_is_the_dataclass_made_session() -> None:
    """``new_session``, the CONNECT's shortcut, sets every field as ``Session(...)`` does (a field
    it leaves out fails the comparison), and gives each session dicts of its own."""
    made = new_session("c", 4, 10)
    assert type(made) is Session and made == Session("c", 4, 10)
    other = new_session("d", 5, 10)
    assert made.subscriptions is not other.subscriptions and made.inflight is not other.inflight
