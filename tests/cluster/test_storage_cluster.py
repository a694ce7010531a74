"""``kushi serve --storage``: sessions and retained messages survive SIGTERM + restart and
the kill -9 of a worker [invariant 6].

Each test runs the real console script on a temporary SQLite file. Waiting
for the autosave is a condition on the file (rows present), never a sleep.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import time

import pytest

from kushi.hooks.records import SessionRecords, StoredClient, StoredMessage, StoredSubscription
from kushi.hooks.storage import SqliteStorage
from kushi.protocol.packets import MQTT_5, Connack, Connect, Disconnect, Publish, Subscribe, Subscription
from kushi.protocol.properties import Properties
from tests.support.rawclient import RawClient
from tests.support.waiting import wait_until

from cluster_support import KushiCluster, raw_client_on, running_cluster

pytestmark = pytest.mark.timeout(120)

HOUR = 3600
RESTORED = re.compile(r"restored (\d+) stored sessions")


def persistent_subscriber(client: RawClient, client_id: str, filter: str) -> None:
    """CONNECT (v5, clean start, expiry 1 h), SUBSCRIBE at QoS 1, then a normal DISCONNECT."""
    client.connect_ok(client_id, clean_start=True, properties=Properties(session_expiry_interval=HOUR))
    client.send(Subscribe(1, (Subscription(filter, qos=1),)))
    client.recv_packet()
    client.send(Disconnect())
    client.close()


def publish_qos1(cluster: KushiCluster, messages: list[tuple[str, bytes, bool]]) -> None:
    publisher = RawClient(cluster.host, cluster.port)
    publisher.connect_ok("publisher")
    for packet_id, (topic, payload, retain) in enumerate(messages, 1):
        publisher.send(Publish(topic, payload, qos=1, retain=retain, packet_id=packet_id))
        publisher.recv_packet()   # PUBACK
    publisher.close()


def stored_rows(path, sql: str) -> list[tuple]:
    with sqlite3.connect(path) as db:
        return db.execute(sql).fetchall()


def resume(cluster: KushiCluster, client_id: str) -> tuple[RawClient, bool]:
    client = RawClient(cluster.host, cluster.port)
    client.send(Connect(client_id=client_id, clean_start=False,
                        properties=Properties(session_expiry_interval=HOUR)))
    connack = client.recv_packet(timeout=10)   # a restore may come first: give a busy machine time
    assert isinstance(connack, Connack) and connack.reason_code == 0, connack
    return client, connack.session_present


def received(client: RawClient, count: int) -> list[tuple[str, bytes]]:
    messages = []
    for _ in range(count):
        packet = client.recv_packet(timeout=5)
        assert isinstance(packet, Publish), packet
        messages.append((packet.topic, bytes(packet.payload)))
    return messages


def restored_counts(cluster: KushiCluster, start: int = 0) -> list[int]:
    return [int(m.group(1)) for line in cluster.lines[start:] if (m := RESTORED.search(line))]


def test_sigterm_then_restart_keeps_sessions_and_retained(tmp_path) -> None:
    """SIGTERM persists (the storage's stop() saves every session); a new ``kushi serve`` on
    the same file gives the client its session back [MQTT-3.1.2-5] [MQTT-3.2.2-3] with the
    messages queued while it was away [MQTT-3.1.2-23], once, and the retained message."""
    path = tmp_path / "kushi.db"
    storage = ("--storage", str(path))
    with running_cluster(2, *storage) as cluster:
        persistent_subscriber(RawClient(cluster.host, cluster.port), "away", "q/#")
        publish_qos1(cluster, [("q/1", b"one", False), ("q/2", b"two", False), ("r/t", b"kept", True)])
        wait_until(lambda: stored_rows(path, "SELECT topic FROM retained") == [("r/t",)],
                   message="the retained message stored")
        assert cluster.stop() == 0
    assert stored_rows(path, "SELECT count(*) FROM messages WHERE client_id = 'away'") == [(2,)]

    with running_cluster(2, *storage) as cluster:
        # at boot the two workers restored the one stored session exactly once between them
        wait_until(lambda: sum(restored_counts(cluster)) == 1, timeout=5,
                   message="one restored session in the log")
        client, session_present = resume(cluster, "away")
        assert session_present
        assert received(client, 2) == [("q/1", b"one"), ("q/2", b"two")]
        newcomer = RawClient(cluster.host, cluster.port)
        newcomer.connect_ok("newcomer")
        newcomer.send(Subscribe(1, (Subscription("r/#", qos=1),)))
        newcomer.recv_packet()
        retained = newcomer.recv_packet()
        assert (retained.topic, bytes(retained.payload), retained.retain) == ("r/t", b"kept", True)


def test_kill_9_of_the_worker_holding_a_session_keeps_its_queued_messages(tmp_path) -> None:
    """[invariant 6] kill -9 of the worker holding a disconnected persistent session with
    queued QoS 1 messages: once the worker is gone the session is restored from the last
    autosave, and the client, reconnecting to any worker, gets session present and them."""
    path = tmp_path / "kushi.db"
    with running_cluster(3, "--storage", str(path), "--autosave-interval", "0.2") as cluster:
        client, holder = raw_client_on(cluster, lambda worker: worker == 1)
        persistent_subscriber(client, "victim", "q/#")
        publish_qos1(cluster, [(f"q/{n}", f"m{n}".encode(), False) for n in range(3)])
        wait_until(lambda: stored_rows(path, "SELECT count(*) FROM messages WHERE client_id = 'victim'")
                   == [(3,)], timeout=5, message="the autosave of the queued messages")
        mark = len(cluster.lines)
        os.kill(cluster.worker_pids()[holder], signal.SIGKILL)
        cluster.wait_for_line(r"worker 1 died \(killed by SIGKILL\)", start=mark)
        wait_until(lambda: sum(restored_counts(cluster, mark)) == 1, timeout=10,
                   message="the session restored by a worker")
        again, session_present = resume(cluster, "victim")
        assert session_present
        assert received(again, 3) == [("q/0", b"m0"), ("q/1", b"m1"), ("q/2", b"m2")]
        cluster.wait_for_line(r"worker 1 ready", start=mark)
        # the restarted worker found no session left to adopt: it is restored once only
        assert sum(restored_counts(cluster, mark)) == 1


def test_directory_adopt_grants_only_what_no_live_node_holds() -> None:
    """Adopting stored sessions: a client id held by a live node stays there; one held by a
    dead node, or by nobody, is claimed for the adopter (once: a second adopter gets nothing)."""
    from kushi.cluster.directory import SessionDirectory

    directory = SessionDirectory()
    directory.claim("live", "w0")
    directory.claim("orphan", "w9")           # w9 died; its claims may still be listed
    granted = dict(directory.adopt(["live", "orphan", "free"], "w1", live={"w0", "w1"}))
    assert set(granted) == {"orphan", "free"}
    assert directory.owner("orphan").node == "w1" and directory.owner("live").node == "w0"
    assert directory.adopt(["orphan", "free"], "w2", live={"w0", "w1", "w2"}) == []
    again = directory.adopt(["free"], "w1", live={"w0", "w1"})
    assert again == [("free", granted["free"])]  # already its own: same claim


def test_a_stored_session_no_worker_holds_is_restored_when_its_client_returns(tmp_path) -> None:
    """A session in the file that no worker adopted (a worker died and the client came back
    before anyone adopted its sessions) is restored on the CONNECT with clean start 0 that
    finds no session anywhere: session present [MQTT-3.2.2-3], its queue, its subscription."""
    path = tmp_path / "kushi.db"
    with running_cluster(2, "--storage", str(path)) as cluster:
        writer = SqliteStorage(path)      # the dead worker's last save, made while the cluster runs
        writer.init(None)
        writer.write_session(SessionRecords(
            StoredClient("orphan", MQTT_5, None, HOUR, disconnected_at=time.time()),
            (StoredSubscription("orphan", "o/#", 1),),
            (StoredMessage("orphan", Publish("o/1", b"kept", qos=1), time.time()),)))
        writer.db.close()
        client, session_present = resume(cluster, "orphan")
        assert session_present
        assert received(client, 1) == [("o/1", b"kept")]
        publish_qos1(cluster, [("o/2", b"new", False)])
        assert received(client, 1) == [("o/2", b"new")]


def test_a_stored_retained_message_cleared_on_one_worker_is_gone_on_every_worker(tmp_path) -> None:
    """[invariant 3] Every worker loads the same retained rows at boot; a clear made on one
    worker after the restart wins on the others [MQTT-3.3.1-6] and leaves the file."""
    path = tmp_path / "kushi.db"
    with running_cluster(2, "--storage", str(path)) as cluster:
        publish_qos1(cluster, [("r/old", b"stored", True)])
        wait_until(lambda: stored_rows(path, "SELECT topic FROM retained") == [("r/old",)],
                   message="the retained message stored")
    with running_cluster(2, "--storage", str(path)) as cluster:
        clearer, first = raw_client_on(cluster, lambda worker: True)
        clearer.connect_ok("clearer")
        subscriber, _ = raw_client_on(cluster, lambda worker: worker != first)
        subscriber.connect_ok("subscriber")
        subscriber.send(Subscribe(1, (Subscription("sync/#", qos=1),)))
        subscriber.recv_packet()   # SUBACK
        for packet_id, (topic, payload, retain) in enumerate(
                [("r/old", b"", True), ("r/new", b"set", True), ("sync/x", b"", False)], 1):
            clearer.send(Publish(topic, payload, qos=1, retain=retain, packet_id=packet_id))
            clearer.recv_packet()
        # the bus is FIFO between two workers: once sync/x is here, so are the retained changes
        assert subscriber.recv_packet(timeout=5).topic == "sync/x"
        wait_until(lambda: stored_rows(path, "SELECT topic FROM retained") == [("r/new",)],
                   message="the clear and the new message in the file")
        subscriber.send(Subscribe(2, (Subscription("r/#", qos=1),)))
        subscriber.recv_packet()   # SUBACK
        first_retained = subscriber.recv_packet()
        assert (first_retained.topic, first_retained.retain) == ("r/new", True)
        clearer.send(Publish("r/control", b"after", qos=1, packet_id=4))   # not retained
        control = subscriber.recv_packet(timeout=5)
        assert (control.topic, control.retain) == ("r/control", False)   # no r/old in between
