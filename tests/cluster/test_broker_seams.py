"""The broker's side of the cluster seams (issue 3): fabric attach, SUBACK barrier, shared groups.

* ``Server.start()`` hands the fabric its sink before any listener opens, so
  retained messages synced from other workers are there for the first client.
* A SUBACK that added interest waits for the fabric's barrier: a publish on
  any worker after the client has its SUBACK reaches the client.
* ``$share/g/f`` members on all workers form one group: each message goes to
  exactly one member, whichever worker received it [MQTT-4.8.2].
"""

from __future__ import annotations

import asyncio
import selectors
import time
from collections import Counter
from collections.abc import Iterator

import pytest

import kushi
from kushi.protocol.packets import Puback, Publish, Suback, Subscribe, Subscription
from kushi.worker.fabric import LocalFabric
from tests.support.rawclient import RawClient

from cluster_support import KushiCluster, raw_client_on, raw_subscriber, running_cluster

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def cluster() -> Iterator[KushiCluster]:
    with running_cluster(3) as cluster:
        yield cluster
        trouble = [line for line in cluster.lines if " died " in line or "Traceback" in line]
        assert not trouble, "\n".join(trouble)


# ---- Server.start(): the fabric gets its sink before the listeners open ----------------------

class SyncedFabric(LocalFabric):
    """A fabric that, like the cluster's, has retained messages of other workers to hand over."""

    def __init__(self, server: kushi.Server) -> None:
        super().__init__()
        self.server = server
        self.attached: list[tuple[object, int]] = []   # (sink, listeners open at the time)

    def attach(self, sink: object) -> None:
        self.attached.append((sink, len(self.server.listeners)))
        if sink is self.server.broker:
            sink.apply_retained(Publish("synced/topic", b"from another worker", retain=True))


def test_start_attaches_the_broker_before_any_listener_opens() -> None:
    async def scenario() -> tuple[list[tuple[object, int]], object, Publish]:
        server = kushi.Server(kushi.Options(sys_interval=0))
        fabric = SyncedFabric(server)
        server.fabric = fabric
        server.add_listener(kushi.TCP("tcp", "127.0.0.1:0"))
        await server.start()
        try:
            def subscribe() -> Publish:
                client = RawClient("127.0.0.1", server.listeners["tcp"].port)
                try:
                    client.connect_ok("early")
                    client.send(Subscribe(1, (Subscription("synced/#", qos=0),)))
                    assert isinstance(client.recv_packet(), Suback)
                    return client.recv_packet()
                finally:
                    client.close()
            return fabric.attached, server.broker, await asyncio.to_thread(subscribe)
        finally:
            await server.close()

    attached, broker, retained = asyncio.run(scenario())
    assert attached == [(broker, 0)]
    assert (retained.topic, retained.payload, retained.retain) == ("synced/topic", b"from another worker",
                                                                   True)


def test_start_attaches_the_sink_the_embedder_chose() -> None:
    async def scenario() -> list[tuple[object, int]]:
        server = kushi.Server(kushi.Options(sys_interval=0))
        fabric = SyncedFabric(server)
        server.fabric = fabric
        server.fabric_sink = sink
        await server.start()
        await server.close()
        return fabric.attached

    sink = object()
    assert asyncio.run(scenario()) == [(sink, 0)]


# ---- the SUBACK waits until every worker knows of the new interest ---------------------------

def test_a_publish_right_after_the_suback_reaches_a_subscriber_on_another_worker(cluster) -> None:
    publisher, pub_worker = raw_client_on(cluster, lambda worker: True)
    subscriber, _ = raw_client_on(cluster, lambda worker: worker != pub_worker)
    try:
        publisher.connect_ok("race-pub")
        subscriber.connect_ok("race-sub")
        for index in range(50):
            topic = f"race/{index}"   # a fresh filter each time: new interest for the other workers
            subscriber.send(Subscribe(index + 1, (Subscription(topic, qos=0),)))
            assert isinstance(subscriber.recv_packet(), Suback)
            publisher.send(Publish(topic, str(index).encode()))
            message = subscriber.recv_packet(timeout=5)
            assert (message.topic, message.payload) == (topic, str(index).encode()), index
    finally:
        publisher.close()
        subscriber.close()


# ---- one shared group over all workers --------------------------------------------------------

def collect(members: list[RawClient], count: int, timeout: float) -> list[Counter[bytes]]:
    """Read QoS 1 PUBLISHes (acknowledging each) from ``members`` until ``count`` distinct payloads
    arrived; what each member received, counted."""
    received: list[Counter[bytes]] = [Counter() for _ in members]
    selector = selectors.DefaultSelector()
    for index, member in enumerate(members):
        selector.register(member.sock, selectors.EVENT_READ, index)
    deadline = time.monotonic() + timeout
    try:
        while len(set().union(*received)) < count:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"{len(set().union(*received))} of {count} messages arrived"
            for key, _ in selector.select(remaining):
                member = members[key.data]
                packet = member.recv_packet()
                assert isinstance(packet, Publish), packet
                member.send(Puback(packet.packet_id))
                received[key.data][bytes(packet.payload)] += 1
                while (packet := member.reader.next_packet()) is not None:   # the rest of that read
                    member.send(Puback(packet.packet_id))
                    received[key.data][bytes(packet.payload)] += 1
    finally:
        selector.close()
    return received


@pytest.mark.parametrize("publisher_at", ["third", "member"])
def test_a_shared_group_over_two_workers_gets_each_message_once(cluster, publisher_at) -> None:
    """[issue 3, invariant 4] 200 QoS 1 messages, published on a worker without a member or on a
    member's worker: each reaches exactly one member of the group, and both members get some."""
    group = f"$share/g/shared/{publisher_at}/#"
    first, first_worker = raw_subscriber(cluster, lambda worker: True, group, 1, "member-1")
    second, second_worker = raw_subscriber(cluster, lambda worker: worker != first_worker, group, 1,
                                           "member-2")
    if publisher_at == "third":
        publisher, _ = raw_client_on(cluster, lambda worker: worker not in (first_worker, second_worker))
    else:
        publisher, _ = raw_client_on(cluster, lambda worker: worker == first_worker)
    members = [first, second]
    try:
        publisher.connect_ok("shared-pub")
        topic = f"shared/{publisher_at}/x"
        for index in range(200):
            publisher.send(Publish(topic, str(index).encode(), qos=1, packet_id=index + 1))
        for index in range(200):
            assert isinstance(publisher.recv_packet(timeout=5), Puback), index
        received = collect(members, 200, timeout=30)
        total = received[0] + received[1]
        assert set(total) == {str(index).encode() for index in range(200)}
        assert max(total.values()) == 1, f"delivered more than once: {[m for m, n in total.items() if n > 1]}"
        assert received[0] and received[1], f"one member got everything: {[len(r) for r in received]}"
    finally:
        for client in (publisher, *members):
            client.close()
