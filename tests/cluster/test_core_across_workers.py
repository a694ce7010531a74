"""The two-client features of the core issue, run with 1 and with 3 workers (issue 3).

With 3 workers the two clients are forced onto DIFFERENT workers (the
server side of each TCP connection is found in /proc, ``raw_client_on``);
with 1 worker the same test runs through the same supervisor code path.
Features with the same shape already in test_cross_worker.py (QoS 0/1 order,
retained set/clear on every worker, every publish property, subscription
identifier, retain as published, topic alias) and test_sessions_e2e.py
(session resume with queued QoS 1, takeover 0x8E, wills of a crashed worker)
are not repeated here; the remaining expiry of a queued message moved with its
session is.

One cluster per worker count (module scope); each test uses its own client
ids and topics, so tests do not see each other's messages.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from cluster_support import KushiCluster, raw_client_on, running_cluster

from kushi.protocol.packets import (
    Disconnect, Puback, Pubcomp, Publish, Pubrec, Pubrel, Suback, Subscribe, Subscription, Will,
)
from kushi.protocol.properties import Properties
from tests.support.rawclient import NoPacket, RawClient
from tests.support.waiting import let_time_pass

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module", params=(1, 3), ids=lambda workers: f"{workers}-workers")
def cluster(request) -> Iterator[KushiCluster]:
    with running_cluster(request.param) as cluster:
        yield cluster


class Clients:
    """Connects raw clients on chosen workers; closes them all at the end of the test."""

    def __init__(self, cluster: KushiCluster) -> None:
        self.cluster = cluster
        self.made: list[RawClient] = []

    def on(self, client_id: str, accept: Callable[[int], bool] = lambda w: True,
           **connect_fields) -> tuple[RawClient, int]:
        """A connected client (CONNACK received) on a worker ``accept`` likes."""
        client, worker = raw_client_on(self.cluster, accept)
        self.made.append(client)
        client.connect_ok(client_id, **connect_fields)
        return client, worker

    def apart_from(self, *workers: int) -> Callable[[int], bool]:
        """Accepts a worker other than ``workers`` (any worker when there is just one)."""
        if self.cluster.workers <= len(set(workers)):
            return lambda w: True
        return lambda w: w not in workers


@pytest.fixture
def clients(cluster, request) -> Iterator[Clients]:
    made = Clients(cluster)
    yield made
    for client in made.made:
        client.close()
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        print("the cluster's log:\n" + cluster.log())
    trouble = [line for line in cluster.lines if " died " in line or "Traceback" in line]
    assert not trouble, "\n".join(trouble)


def subscribe(client: RawClient, *subscriptions: Subscription, packet_id: int = 1) -> tuple[int, ...]:
    """SUBSCRIBE and wait for the SUBACK; its reason codes."""
    client.send(Subscribe(packet_id, subscriptions))
    suback = client.recv_packet()
    assert isinstance(suback, Suback), suback
    return tuple(suback.reason_codes)


def publish(client: RawClient, topic: str, payload: bytes, qos: int = 0, retain: bool = False,
            packet_id: int = 1, properties: Properties | None = None) -> None:
    """PUBLISH and complete its flow (PUBACK, or PUBREC/PUBREL/PUBCOMP)."""
    fields = {"properties": properties} if properties is not None else {}
    client.send(Publish(topic, payload, qos, retain, packet_id=packet_id if qos else None, **fields))
    if qos == 1:
        assert isinstance(client.recv_packet(), Puback)
    elif qos == 2:
        assert isinstance(client.recv_packet(), Pubrec)
        client.send(Pubrel(packet_id))
        assert isinstance(client.recv_packet(), Pubcomp)


def receive_many(client: RawClient, count: int, timeout: float = 5.0) -> list[Publish]:
    """The next ``count`` PUBLISHes, each acknowledged as its QoS asks.

    A QoS 2 flow is completed (PUBREC, then PUBCOMP for the PUBREL) while
    further messages stream in between, as the broker may send them.
    """
    deadline = time.monotonic() + timeout
    published: list[Publish] = []
    awaiting_pubrel: set[int] = set()
    while len(published) < count or awaiting_pubrel:
        packet = client.recv_packet(max(deadline - time.monotonic(), 0.01))
        if isinstance(packet, Publish):
            published.append(packet)
            if packet.qos == 1:
                client.send(Puback(packet.packet_id))
            elif packet.qos == 2:
                client.send(Pubrec(packet.packet_id))
                awaiting_pubrel.add(packet.packet_id)
        else:
            assert isinstance(packet, Pubrel) and packet.packet_id in awaiting_pubrel, packet
            awaiting_pubrel.discard(packet.packet_id)
            client.send(Pubcomp(packet.packet_id))
    return published


def receive(client: RawClient, timeout: float = 5.0) -> Publish:
    """The next PUBLISH, acknowledged (its QoS 2 flow completed)."""
    return receive_many(client, 1, timeout)[0]


def test_qos_levels_and_the_downgrade_to_the_granted_qos(clients: Clients) -> None:
    """[MQTT-3.8.4-8] [MQTT-4.3.3-1] Delivered at min(published, granted) QoS, QoS 2 exactly once."""
    subscriber, sub_worker = clients.on("qos-sub")
    granted = subscribe(subscriber, Subscription("qos/0", 0), Subscription("qos/1", 1),
                        Subscription("qos/2", 2))
    assert granted == (0, 1, 2)
    publisher, _ = clients.on("qos-pub", clients.apart_from(sub_worker))
    sent = [("qos/2", 2, 2), ("qos/2", 1, 1), ("qos/1", 2, 1), ("qos/1", 1, 1), ("qos/0", 2, 0),
            ("qos/2", 0, 0)]   # (topic, published QoS, expected delivered QoS)
    for index, (topic, qos, _) in enumerate(sent):
        publish(publisher, topic, str(index).encode(), qos, packet_id=index + 1)
    got = receive_many(subscriber, len(sent))
    assert [(p.topic, bytes(p.payload), p.qos) for p in got] == \
        [(topic, str(index).encode(), delivered) for index, (topic, _, delivered) in enumerate(sent)]
    with pytest.raises(NoPacket):   # exactly once: no duplicate of a QoS 2 message follows
        subscriber.recv_packet(timeout=0.5)


def test_retained_replace_clear_and_retain_handling(clients: Clients) -> None:
    """[MQTT-3.3.1-5/6/10/11] [MQTT-3.8.4-4] Retain handling 0/1/2, with the publisher on another worker."""
    publisher, pub_worker = clients.on("rh-pub")
    publish(publisher, "rh/t", b"first", qos=1, retain=True, packet_id=1)
    publish(publisher, "rh/t", b"second", qos=1, retain=True, packet_id=2)   # replaces
    subscriber, _ = clients.on("rh-sub", clients.apart_from(pub_worker))
    subscribe(subscriber, Subscription("rh/live", 1), packet_id=1)

    def next_is_live_marker(marker: bytes) -> None:
        """The publisher's live message arrives next: no retained message came before it."""
        publish(publisher, "rh/live", marker, qos=1, packet_id=3)
        packet = receive(subscriber)
        assert (packet.topic, bytes(packet.payload)) == ("rh/live", marker), packet

    subscribe(subscriber, Subscription("rh/t", 1, retain_handling=0), packet_id=2)
    packet = receive(subscriber)
    assert (packet.topic, bytes(packet.payload), packet.retain) == ("rh/t", b"second", True)
    subscribe(subscriber, Subscription("rh/t", 1, retain_handling=1), packet_id=3)   # exists: none
    next_is_live_marker(b"after rh=1 on an existing subscription")
    subscribe(subscriber, Subscription("rh/+", 1, retain_handling=2), packet_id=4)   # never
    next_is_live_marker(b"after rh=2")
    subscribe(subscriber, Subscription("rh/#", 1, retain_handling=1), packet_id=5)   # new: sent
    packet = receive(subscriber)
    assert (packet.topic, bytes(packet.payload), packet.retain) == ("rh/t", b"second", True)

    publish(publisher, "rh/t", b"", qos=1, retain=True, packet_id=4)   # clears
    late, _ = clients.on("rh-late", clients.apart_from(pub_worker))
    subscribe(late, Subscription("rh/t", 1), Subscription("rh/live", 1))
    publish(publisher, "rh/live", b"after the clear", qos=1, packet_id=5)
    packet = receive(late)
    assert (packet.topic, bytes(packet.payload)) == ("rh/live", b"after the clear"), "the cleared message came"


def test_will_on_an_abnormal_close_reaches_another_worker(clients: Clients) -> None:
    """[MQTT-3.1.2-8] A connection closed without DISCONNECT: its will is published to a watcher."""
    watcher, watcher_worker = clients.on("will-watch")
    subscribe(watcher, Subscription("will/#", 1))
    victim, _ = clients.on("will-victim", clients.apart_from(watcher_worker),
                           will=Will("will/now", b"gone", qos=1))
    victim.close()
    packet = receive(watcher)
    assert (packet.topic, bytes(packet.payload), packet.qos) == ("will/now", b"gone", 1)


def test_a_delayed_will_waits_for_its_delay(clients: Clients) -> None:
    """[MQTT-3.1.3-9] With a will delay the will goes out after the delay, not at the close."""
    watcher, watcher_worker = clients.on("delay-watch")
    subscribe(watcher, Subscription("delayed/#", 1))
    victim, _ = clients.on("delay-victim", clients.apart_from(watcher_worker),
                           will=Will("delayed/w", b"late", qos=1, properties=Properties(will_delay_interval=1)),
                           properties=Properties(session_expiry_interval=30))
    closed_at = time.monotonic()
    victim.close()
    packet = receive(watcher, timeout=10)
    assert (packet.topic, bytes(packet.payload)) == ("delayed/w", b"late")
    assert time.monotonic() - closed_at >= 0.9, "the will came before its delay"


def test_a_session_resumed_within_the_will_delay_sends_no_will(clients: Clients) -> None:
    """[MQTT-3.1.3-9] A client back (on another worker) before its will delay ends: no will."""
    watcher, watcher_worker = clients.on("resume-watch")
    subscribe(watcher, Subscription("resumed/#", 1))
    delay = 4   # finding a connection on the third worker can take a while on a busy machine
    will = Will("resumed/w", b"must not come", qos=1, properties=Properties(will_delay_interval=delay))
    first, first_worker = clients.on("resume-victim", clients.apart_from(watcher_worker), will=will,
                                     properties=Properties(session_expiry_interval=30))
    first.close()
    closed_at = time.monotonic()
    second, _ = clients.on("resume-victim", clients.apart_from(watcher_worker, first_worker),
                           clean_start=False, properties=Properties(session_expiry_interval=30))
    resumed_after = time.monotonic() - closed_at
    assert resumed_after < delay, f"resumed {resumed_after:.1f} s after the close: too late to tell"
    with pytest.raises(NoPacket):   # until the will delay is over, and half a second more
        watcher.recv_packet(timeout=closed_at + delay + 0.5 - time.monotonic())


def test_no_local_spares_the_publisher_only(clients: Clients) -> None:
    """[MQTT-3.8.3-3] No Local: the publisher does not get its own message; another worker's client does."""
    publisher, pub_worker = clients.on("nl-pub")
    subscribe(publisher, Subscription("nl/t", 1, no_local=True), Subscription("nl/marker", 1))
    other, _ = clients.on("nl-other", clients.apart_from(pub_worker))
    subscribe(other, Subscription("nl/t", 1))
    publish(publisher, "nl/t", b"not for me", qos=1, packet_id=1)
    packet = receive(other)
    assert (packet.topic, bytes(packet.payload)) == ("nl/t", b"not for me")
    publish(publisher, "nl/marker", b"marker", qos=0)   # QoS 0: nothing else to wait for
    packet = receive(publisher)
    assert (packet.topic, bytes(packet.payload)) == ("nl/marker", b"marker"), "its own nl/t message came back"


def test_a_shared_subscription_gives_each_message_to_exactly_one_member(
        clients: Clients) -> None:
    """[MQTT-4.8.2-2] Members on different workers form one group: each message to one member."""
    first, first_worker = clients.on("sh-a")
    subscribe(first, Subscription("$share/grp/sh/t", 1))
    second, second_worker = clients.on("sh-b", clients.apart_from(first_worker))
    subscribe(second, Subscription("$share/grp/sh/t", 1))
    publisher, _ = clients.on("sh-pub", clients.apart_from(first_worker, second_worker))
    count = 20
    for index in range(count):
        publish(publisher, "sh/t", str(index).encode(), qos=1, packet_id=index + 1)
    got: dict[str, list[int]] = {"sh-a": [], "sh-b": []}
    deadline = time.monotonic() + 10
    while sum(map(len, got.values())) < count and time.monotonic() < deadline:
        for name, member in (("sh-a", first), ("sh-b", second)):
            try:
                got[name].append(int(receive(member, timeout=0.1).payload))
            except NoPacket:
                pass   # this member has nothing now; the other may
    for name, member in (("sh-a", first), ("sh-b", second)):
        with pytest.raises(NoPacket):   # and nothing more: no message went to both
            member.recv_packet(timeout=0.3)
    assert sorted(got["sh-a"] + got["sh-b"]) == list(range(count)), got


def test_a_queued_message_resumed_on_another_worker_carries_its_remaining_expiry(clients: Clients) -> None:
    """[MQTT-3.3.2-6] A message queued for an offline session, which then resumes on another
    worker, is sent with the expiry interval minus the time it waited."""
    persistent = Properties(session_expiry_interval=60)
    first, first_worker = clients.on("expiry-sub", clean_start=False, properties=persistent)
    subscribe(first, Subscription("expiry/t", 1))
    first.send(Disconnect())
    first.expect_closed()
    publisher, _ = clients.on("expiry-pub")
    publish(publisher, "expiry/t", b"waits", qos=1, properties=Properties(message_expiry_interval=60))
    let_time_pass(1.2)
    second, _ = clients.on("expiry-sub", clients.apart_from(first_worker), clean_start=False,
                           properties=persistent)
    packet = receive(second)
    assert bytes(packet.payload) == b"waits"
    assert packet.properties.message_expiry_interval is not None
    assert 0 < packet.properties.message_expiry_interval <= 59, packet.properties
