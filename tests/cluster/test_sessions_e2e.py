"""Sessions follow the client across workers (invariant 2), with the real broker in 3 workers."""

from __future__ import annotations

import os
import signal

import pytest

from cluster_support import hop_while_streaming, raw_client_on, raw_subscriber, running_cluster

from kushi.protocol.packets import (
    Disconnect, Puback, Publish, Suback, Subscribe, Subscription, Will,
)
from kushi.protocol.properties import Properties
from tests.support.rawclient import NoPacket

pytestmark = pytest.mark.timeout(120)
PERSISTENT = Properties(session_expiry_interval=300)


@pytest.fixture(scope="module")
def cluster():
    with running_cluster(3) as cluster:
        yield cluster


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


def test_a_clean_start_duplicate_on_another_worker_takes_the_connection_over(cluster) -> None:
    """[MQTT-3.1.4-3] A clean start without a will gets its CONNACK without waiting for the
    session directory; the old connection, on another worker, still gets 0x8E (that the old
    session ends, will and all: the delayed-will test below)."""
    old, old_worker = raw_client_on(cluster, lambda w: True)
    old.connect_ok("clean-twin", clean_start=True, properties=PERSISTENT)
    new, _ = raw_client_on(cluster, lambda w: w != old_worker)
    assert not new.connect_ok("clean-twin", clean_start=True).session_present
    old.expect_disconnect(0x8E)


def test_the_will_of_a_client_survives_the_crash_of_its_worker() -> None:
    """[invariant 6] kill -9 of the worker holding a connection: its will reaches a subscriber elsewhere."""
    with running_cluster(2) as cluster:
        watcher, watcher_worker = raw_subscriber(cluster, lambda w: True, "wills/#", 1, "will-watcher")
        victim, victim_worker = raw_subscriber(   # the SUBACK: one more round trip after the CONNACK
            cluster, lambda w: w != watcher_worker, "unrelated", 0, "victim",
            will=Will("wills/victim", b"gone", qos=1))
        os.kill(cluster.worker_pids()[victim_worker], signal.SIGKILL)
        packet = watcher.recv_packet(timeout=10)
        assert isinstance(packet, Publish)
        assert (packet.topic, bytes(packet.payload)) == ("wills/victim", b"gone")


def test_takeover_under_load_loses_no_qos1_message(tmp_path) -> None:
    """[issue 3] A persistent QoS 1 subscriber hops 20 times between workers while a publisher
    streams: afterwards every message was delivered (duplicates allowed, gaps not)."""
    count = 2000
    received: list[int] = []

    def read(client, last: bool) -> None:
        while not (last and set(received) >= set(range(count))):
            try:
                packet = client.recv_packet(timeout=5 if last else 0.1)
            except NoPacket:   # nothing more for now
                return
            if isinstance(packet, Publish):
                received.append(int(packet.payload))
                client.send(Puback(packet.packet_id))

    hops = hop_while_streaming(tmp_path, "load/t", 1, "hopper", count, read)
    missing = sorted(set(range(count)) - set(received))
    assert not missing, f"{len(missing)} messages lost, e.g. {missing[:10]} (after {hops} hops)"


def test_kill_9_of_a_worker_under_load_leaves_the_others_serving() -> None:
    """[invariant 6] A worker killed mid-stream: clients elsewhere see no error and lose nothing,
    every other node drops the dead worker's interest, and its clients can reconnect."""
    with running_cluster(3) as cluster:
        subscriber, sub_worker = raw_subscriber(cluster, lambda w: True, "k/#", 1, "steady-sub")
        publisher, pub_worker = raw_client_on(cluster, lambda w: w != sub_worker)
        publisher.connect_ok("steady-pub")
        victim_worker = ({0, 1, 2} - {sub_worker, pub_worker}).pop()
        victim, _ = raw_subscriber(cluster, lambda w: w == victim_worker, "k/#", 1, "victim-sub")

        received = []
        mark = len(cluster.lines)
        for index in range(200):
            if index == 50:
                os.kill(cluster.worker_pids()[victim_worker], signal.SIGKILL)
            publisher.send(Publish("k/t", str(index).encode(), qos=1, packet_id=index % 60000 + 1))
            assert isinstance(publisher.recv_packet(), Puback)
            packet = subscriber.recv_packet(timeout=5)
            assert isinstance(packet, Publish)
            subscriber.send(Puback(packet.packet_id))
            received.append(int(packet.payload))
        assert received == list(range(200))
        for node in sorted({"sup", f"w{sub_worker}", f"w{pub_worker}"}):
            cluster.wait_for_line(rf" {node} kushi\.cluster: w{victim_worker} left the bus; 1 interest",
                                  start=mark)
        cluster.wait_for_line(rf"worker {victim_worker} ready", start=mark)
        again, _ = raw_client_on(cluster, lambda w: True)
        again.connect_ok("victim-sub")
        again.send(Subscribe(1, (Subscription("k-again/t", qos=1),)))   # and it works
        assert isinstance(again.recv_packet(), Suback)
        publisher.send(Publish("k-again/t", b"welcome back", qos=1, packet_id=60001))
        assert isinstance(publisher.recv_packet(), Puback)
        packet = again.recv_packet(timeout=5)
        assert isinstance(packet, Publish) and bytes(packet.payload) == b"welcome back"


def test_a_restarted_worker_serves_the_retained_messages_set_before_it_started() -> None:
    """[invariant 3, 5] A worker restarted after kill -9 takes a snapshot before it serves."""
    with running_cluster(2) as cluster:
        publisher, pub_worker = raw_client_on(cluster, lambda w: True)
        publisher.connect_ok("retainer")
        for index in range(5):
            publisher.send(Publish(f"kept/{index}", f"v{index}".encode(), qos=1, retain=True,
                                   packet_id=index + 1))
            assert isinstance(publisher.recv_packet(), Puback)
        other = 1 - pub_worker
        mark = len(cluster.lines)
        os.kill(cluster.worker_pids()[other], signal.SIGKILL)
        cluster.wait_for_line(rf"worker {other} ready", start=mark)
        subscriber, _ = raw_subscriber(cluster, lambda w: w == other, "kept/#", 1, "late-reader")
        got = set()
        for _ in range(5):
            packet = subscriber.recv_packet(timeout=5)
            assert isinstance(packet, Publish) and packet.retain
            got.add((packet.topic, bytes(packet.payload)))
        assert got == {(f"kept/{i}", f"v{i}".encode()) for i in range(5)}


def test_a_clean_start_on_another_worker_ends_the_old_session_and_sends_its_delayed_will() -> None:
    """[MQTT-3.1.3-9] A delayed will goes out when its session ends by a clean start elsewhere."""
    with running_cluster(2) as cluster:
        watcher, watcher_worker = raw_subscriber(cluster, lambda w: True, "delayed/#", 1,
                                                 "delayed-watcher")
        first, first_worker = raw_client_on(cluster, lambda w: True)
        will = Will("delayed/will", b"late", qos=1, properties=Properties(will_delay_interval=300))
        first.connect_ok("delayer", clean_start=False, will=will, properties=PERSISTENT)
        first.close()   # no DISCONNECT: the will waits for its 300 s delay
        second, _ = raw_client_on(cluster, lambda w: w != first_worker)
        assert not second.connect_ok("delayer", clean_start=True).session_present
        packet = watcher.recv_packet(timeout=5)
        assert isinstance(packet, Publish) and bytes(packet.payload) == b"late"
