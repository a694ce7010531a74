"""Sessions follow the client across workers (invariant 2), with the real broker in 3 workers."""

from __future__ import annotations

import pytest

from cluster_support import KushiCluster, raw_client_on

from kushi.protocol.packets import Disconnect, Puback, Publish, Suback, Subscribe, Subscription
from kushi.protocol.properties import Properties

pytestmark = pytest.mark.timeout(120)
PERSISTENT = Properties(session_expiry_interval=300)


@pytest.fixture(scope="module")
def cluster():
    cluster = KushiCluster(3)
    try:
        cluster.wait_ready()
        yield cluster
    finally:
        cluster.stop()


def test_reconnecting_on_another_worker_gets_the_session_and_its_queued_messages(cluster) -> None:
    """[invariant 2] Subscriptions and queued QoS 1 messages follow the client id to another worker."""
    first, first_worker = raw_client_on(cluster, lambda w: True)
    connack = first.connect_ok("roamer", clean_start=False, properties=PERSISTENT)
    assert not connack.session_present
    first.send(Subscribe(1, (Subscription("roam/#", qos=1),)))
    assert isinstance(first.recv_packet(), Suback)
    first.send(Disconnect())
    first.expect_closed()

    publisher, _ = raw_client_on(cluster, lambda w: w == first_worker)  # queued on the session's worker
    publisher.connect_ok("roam-publisher")
    for index in range(3):
        publisher.send(Publish("roam/t", f"m{index}".encode(), qos=1, packet_id=index + 1))
        assert isinstance(publisher.recv_packet(), Puback)

    second, second_worker = raw_client_on(cluster, lambda w: w != first_worker)
    connack = second.connect_ok("roamer", clean_start=False, properties=PERSISTENT)
    assert connack.session_present, f"session not found on worker {second_worker}"
    received = []
    for _ in range(3):
        packet = second.recv_packet(timeout=5)
        assert isinstance(packet, Publish)
        received.append(bytes(packet.payload))
        second.send(Puback(packet.packet_id))
    assert received == [b"m0", b"m1", b"m2"]

    publisher.send(Publish("roam/t", b"live", qos=1, packet_id=9))   # the subscription moved too
    packet = second.recv_packet(timeout=5)
    assert isinstance(packet, Publish) and bytes(packet.payload) == b"live"


def test_a_live_duplicate_on_another_worker_takes_the_session_over(cluster) -> None:
    """[MQTT-3.1.4-3] The old connection, on another worker, is sent DISCONNECT 0x8E."""
    old, old_worker = raw_client_on(cluster, lambda w: True)
    old.connect_ok("twin", clean_start=False, properties=PERSISTENT)
    new, _ = raw_client_on(cluster, lambda w: w != old_worker)
    connack = new.connect_ok("twin", clean_start=False, properties=PERSISTENT)
    assert connack.session_present
    old.expect_disconnect(0x8E)


def test_the_will_of_a_client_survives_the_crash_of_its_worker() -> None:
    """[invariant 6] kill -9 of the worker holding a connection: its will reaches a subscriber elsewhere."""
    import os
    import signal

    from kushi.protocol.packets import Will

    cluster = KushiCluster(2)
    try:
        cluster.wait_ready()
        watcher, watcher_worker = raw_client_on(cluster, lambda w: True)
        watcher.connect_ok("will-watcher")
        watcher.send(Subscribe(1, (Subscription("wills/#", qos=1),)))
        assert isinstance(watcher.recv_packet(), Suback)
        victim, victim_worker = raw_client_on(cluster, lambda w: w != watcher_worker)
        victim.connect_ok("victim", will=Will("wills/victim", b"gone", qos=1))
        victim.send(Subscribe(1, (Subscription("unrelated", qos=0),)))   # one more round trip
        assert isinstance(victim.recv_packet(), Suback)
        os.kill(cluster.worker_pids()[victim_worker], signal.SIGKILL)
        packet = watcher.recv_packet(timeout=10)
        assert isinstance(packet, Publish)
        assert (packet.topic, bytes(packet.payload)) == ("wills/victim", b"gone")
    finally:
        cluster.stop()
