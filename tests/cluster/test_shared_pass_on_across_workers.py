"""A shared-group member's session ends on one worker: its unacknowledged message goes to the
member on another worker (issue 3, MQTT 5 section 4.8.2; kushi.worker.shared_pass_on).

The two members of ``$share/g/...`` are forced onto different workers of a
``kushi serve --workers 2`` (``raw_client_on``), so the message can only reach
the second member across the bus (``fabric.pick_shared`` / ``forward_shared``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from cluster_support import KushiCluster, running_cluster
from test_core_across_workers import Clients, clients, subscribe  # noqa: F401 (clients: a fixture)

from kushi.protocol.packets import Puback, Publish, Subscription
from tests.support.rawclient import NoPacket, RawClient

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def cluster() -> Iterator[KushiCluster]:
    """Two workers (the ``clients`` fixture takes this one)."""
    with running_cluster(2) as cluster:
        yield cluster


def first_publish_of(members: list[RawClient], timeout: float = 5.0) -> tuple[int, Publish]:
    """(index, PUBLISH) of the member the message went to (not acknowledged)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for index, member in enumerate(members):
            try:
                packet = member.recv_packet(timeout=0.05)
            except NoPacket:
                continue
            assert isinstance(packet, Publish), packet
            return index, packet
    raise AssertionError("no member got the message")


def test_a_qos1_message_of_a_member_that_leaves_goes_to_the_member_on_another_worker(
        clients: Clients) -> None:
    """Issue 3: "QoS 1/2 messages in flight to a member that leaves go to another member" with the
    group spanning workers: the chosen member closes without PUBACK (session expiry 0), the member
    on the other worker gets the message, once, DUP 0."""
    group = Subscription("$share/g/xpo/t", 1)
    first, first_worker = clients.on("xpo-a")
    assert subscribe(first, group) == (1,)
    second, _ = clients.on("xpo-b", clients.apart_from(first_worker))
    assert subscribe(second, group) == (1,)
    publisher, _ = clients.on("xpo-pub")
    publisher.send(Publish("xpo/t", b"unacknowledged", 1, packet_id=1))
    assert publisher.recv_packet() == Puback(1)
    members = [first, second]
    chosen, packet = first_publish_of(members)
    assert packet.payload == b"unacknowledged"
    members[chosen].close()                      # no PUBACK, no DISCONNECT
    other = members[1 - chosen]
    passed = other.recv_packet(timeout=5.0)
    assert isinstance(passed, Publish), passed
    assert (bytes(passed.payload), passed.qos, passed.dup) == (b"unacknowledged", 1, False)
    other.send(Puback(passed.packet_id))
    publisher.send(Publish("xpo/t", b"marker", 1, packet_id=2))
    assert publisher.recv_packet() == Puback(2)
    marker = other.recv_packet(timeout=5.0)
    assert isinstance(marker, Publish) and marker.payload == b"marker", marker   # not passed on twice


def test_a_clean_start_on_another_worker_passes_the_old_session_s_shared_messages_on(
        clients: Clients) -> None:
    """The member keeps its session (expiry 300) when it leaves, so the message waits for it; it
    comes back with clean start on the other worker, which takes the session over and ends it:
    the message goes to the remaining member then."""
    from kushi.protocol.properties import Properties

    group = Subscription("$share/g/xpc/t", 1)
    kept = Properties(session_expiry_interval=300)
    first, first_worker = clients.on("xpc-a", clean_start=False, properties=kept)
    assert subscribe(first, group) == (1,)
    second, second_worker = clients.on("xpc-b", clients.apart_from(first_worker))
    assert subscribe(second, group) == (1,)
    publisher, _ = clients.on("xpc-pub")
    payload = 0
    while True:   # until the member with the kept session is chosen (round robin: soon)
        payload += 1
        publisher.send(Publish("xpc/t", b"%d" % payload, 1, packet_id=payload))
        assert publisher.recv_packet() == Puback(payload)
        chosen, packet = first_publish_of([first, second])
        if chosen == 0:
            break
        second.send(Puback(packet.packet_id))
    first.close()                                  # no PUBACK; its session stays
    with pytest.raises(NoPacket):                  # waiting for its member to come back
        second.recv_packet(timeout=0.5)
    again, _ = clients.on("xpc-a", lambda w: w == second_worker, clean_start=True)
    passed = second.recv_packet(timeout=5.0)
    assert isinstance(passed, Publish), passed
    assert (bytes(passed.payload), passed.dup) == (packet.payload, False)
