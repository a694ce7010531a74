"""Storage: the four loaders restore state at start, and SqliteStorage keeps it across a restart.

A hand-written hook returns records (``kushi.hooks.records``) to check each
loader on its own; then ``SqliteStorage`` round trips through real servers
sharing one file: the first one is closed (its ``stop()`` saves), the second
opens the same file and a client that comes back with clean start 0 finds
its session [MQTT-3.1.2-5] [MQTT-3.2.2-3].
"""

from __future__ import annotations

import asyncio
import sqlite3
import time

import pytest

from kushi.hooks.base import Hook
from kushi.hooks.records import INFLIGHT, QUEUED, StoredClient, StoredMessage, StoredSubscription
from kushi.hooks.storage import SqliteStorage
from kushi.protocol.packets import MQTT_5, Puback, Publish, Subscribe, Subscription, Will
from kushi.protocol.properties import Properties

from support.paho import connect_properties
from support.waiting import wait_until

HOUR = 3600


class Stored(Hook):
    """A storage hook that kept what it is given (the records of an earlier run)."""

    id = "stored"

    def __init__(self, clients=(), subscriptions=(), messages=(), retained=()) -> None:
        self.clients, self.subscriptions = list(clients), list(subscriptions)
        self.messages, self.retained = list(messages), list(retained)

    def stored_clients(self):
        return self.clients

    def stored_subscriptions(self):
        return self.subscriptions

    def stored_inflight(self):
        return self.messages

    def stored_retained(self):
        return self.retained


class StoredInADatabase(Stored):
    """The same records from coroutine loaders, as a hook reading a database with an async
    driver would give them: the server awaits them while it starts."""

    async def stored_clients(self):
        await asyncio.sleep(0)
        return self.clients

    async def stored_subscriptions(self):
        await asyncio.sleep(0)
        return self.subscriptions

    async def stored_inflight(self):
        await asyncio.sleep(0)
        return self.messages

    async def stored_retained(self):
        await asyncio.sleep(0)
        return self.retained


def resume(raw, broker, client_id: str, expiry: int = HOUR):
    """Connect ``client_id`` with clean start 0 (v5); returns (client, CONNACK)."""
    client = raw(broker, MQTT_5)
    connack = client.connect_ok(client_id, clean_start=False,
                                properties=Properties(session_expiry_interval=expiry))
    return client, connack


def offline_since(seconds: float) -> float:
    return time.time() - seconds


def test_stored_clients_restores_a_session(make_broker, raw) -> None:
    """stored_clients: a client id with a stored session resumes it: session present
    [MQTT-3.1.2-5] [MQTT-3.2.2-3]; one without a record starts a new one [MQTT-3.1.2-6]."""
    broker = make_broker(hooks=[Stored([StoredClient("kept", MQTT_5, None, HOUR,
                                                      disconnected_at=offline_since(5))])])
    _, connack = resume(raw, broker, "kept")
    assert connack.session_present
    _, connack = resume(raw, broker, "other")
    assert not connack.session_present


def test_coroutine_loaders_are_awaited_and_restore_the_same(make_broker, raw, paho) -> None:
    """Storage loaders may be coroutines: a session, its subscription, its queued message and
    a retained message come back from them."""
    hook = StoredInADatabase(
        [StoredClient("kept", MQTT_5, None, HOUR, disconnected_at=offline_since(5))],
        [StoredSubscription("kept", "jobs/#", 1)],
        [StoredMessage("kept", Publish("jobs/1", b"queued", qos=1), offline_since(2))],
        [Publish("state/x", b"retained", retain=True)])
    broker = make_broker(hooks=[hook])
    client, connack = resume(raw, broker, "kept")
    assert connack.session_present
    delivered = client.recv_packet()
    assert isinstance(delivered, Publish) and delivered.payload == b"queued"
    reader = paho.connected(broker, "reader", 5)
    reader.subscribe("state/#", 0)
    reader.expect_message("state/x", b"retained")


def test_an_expired_stored_session_is_not_restored(make_broker, raw) -> None:
    """A session whose expiry interval passed while the broker was down is gone [MQTT-3.1.2-23]."""
    broker = make_broker(hooks=[Stored(
        [StoredClient("expired", MQTT_5, None, 10, disconnected_at=offline_since(11)),
         StoredClient("alive", MQTT_5, None, 10, disconnected_at=offline_since(5))],
        [StoredSubscription("expired", "e/#", 1)])])
    assert broker.call(broker.server.subscriptions("expired")) == {}
    _, connack = resume(raw, broker, "expired")
    assert not connack.session_present
    _, connack = resume(raw, broker, "alive")
    assert connack.session_present


def test_stored_subscriptions_are_live_before_the_client_returns(make_broker, paho, raw) -> None:
    """stored_subscriptions: messages published while the client is still away are queued for it
    (QoS 1) with its subscription's options (identifier), and delivered when it resumes."""
    broker = make_broker(hooks=[Stored(
        [StoredClient("sub", MQTT_5, None, HOUR, disconnected_at=offline_since(1))],
        [StoredSubscription("sub", "s/#", 1, identifier=9), StoredSubscription("nobody", "n/#", 1)])])
    assert set(broker.call(broker.server.subscriptions("sub"))) == {"s/#"}
    paho.connected(broker, "pub", 5).publish("s/x", b"while away", qos=1)
    wait_until(lambda: broker.sync(lambda: len(broker.server.broker.sessions["sub"].queue)),
               message="the message queued for the restored session")
    client, connack = resume(raw, broker, "sub")
    assert connack.session_present
    message = client.recv_packet()
    assert isinstance(message, Publish)
    assert (message.topic, bytes(message.payload), message.qos) == ("s/x", b"while away", 1)
    assert message.properties.subscription_identifiers == (9,)


def test_stored_inflight_resends_with_dup_then_delivers_the_queue(make_broker, raw) -> None:
    """stored_inflight: an in-flight message is resent with its packet id and DUP set
    [MQTT-4.4.0-1], then the queued one goes out with a new packet id."""
    stored_at = offline_since(2)
    broker = make_broker(hooks=[Stored(
        [StoredClient("q", MQTT_5, None, HOUR, disconnected_at=stored_at, last_packet_id=7)],
        [StoredSubscription("q", "m/#", 1)],
        [StoredMessage("q", Publish("m/1", b"in flight", qos=1), stored_at, INFLIGHT, 7, sent=True),
         StoredMessage("q", Publish("m/2", b"queued", qos=1), stored_at, QUEUED)])])
    client, connack = resume(raw, broker, "q")
    assert connack.session_present
    first = client.recv_packet()
    assert (first.topic, bytes(first.payload), first.packet_id, first.dup) == ("m/1", b"in flight", 7, True)
    second = client.recv_packet()
    assert (second.topic, bytes(second.payload), second.dup) == ("m/2", b"queued", False)
    assert second.packet_id not in (None, 7)


def test_stored_message_expiry_counts_the_time_away(make_broker, raw) -> None:
    """A stored message keeps what is left of its expiry: 60 s stored 20 s ago goes out with
    about 40 s [MQTT-3.3.2-6]; one whose interval passed is not sent [MQTT-3.3.2-5]."""
    stored_at = offline_since(20)
    broker = make_broker(hooks=[Stored(
        [StoredClient("x", MQTT_5, None, HOUR, disconnected_at=stored_at)], [],
        [StoredMessage("x", Publish("e/gone", b"1", qos=1, properties=Properties(
            message_expiry_interval=10)), stored_at),
         StoredMessage("x", Publish("e/left", b"2", qos=1, properties=Properties(
             message_expiry_interval=60)), stored_at)])])
    client, _ = resume(raw, broker, "x")
    message = client.recv_packet()
    assert message.topic == "e/left"
    assert 38 <= message.properties.message_expiry_interval <= 40


def test_stored_retained_is_restored(make_broker, paho) -> None:
    """stored_retained: a new subscriber gets the stored retained message [MQTT-3.3.1-9]."""
    broker = make_broker(hooks=[Stored(retained=[Publish("r/t", b"kept", qos=1, retain=True)])])
    client = paho.connected(broker, "late", 5)
    client.subscribe("r/#", 1)
    assert client.expect_message("r/t", b"kept").retain


def test_a_stored_will_of_a_connection_that_ended_with_the_process_is_published(make_broker, paho) -> None:
    """A client connected when its session was saved lost its connection with the broker
    process: once restored, its will goes out after the will delay [MQTT-3.1.2-8]."""
    broker = make_broker(hooks=[Stored([StoredClient(
        "crashed", MQTT_5, None, HOUR, Will("will/crashed", b"gone", 1), will_delay=0)])])
    watcher = paho.connected(broker, "watcher", 5)
    watcher.subscribe("will/#", 1)
    watcher.expect_message("will/crashed", b"gone", timeout=3)   # the next tick, within a second


# ---- SqliteStorage -------------------------------------------------------------------------

def test_sqlite_storage_round_trip_through_a_restart(make_broker, paho, raw, tmp_path) -> None:
    """A persistent client's session, queued messages, in-flight message and the retained
    messages survive a graceful restart on the same file."""
    path = tmp_path / "kushi.db"
    first = make_broker(hooks=[SqliteStorage(path)])
    away = paho(first, "away", 5, clean=False)
    away.connect(properties=connect_properties(SessionExpiryInterval=HOUR))
    away.subscribe("q/#", 1)
    away.disconnect()
    holder = raw(first, MQTT_5)     # receives a QoS 1 message and never acknowledges it
    holder.connect_ok("holder", clean_start=False, properties=Properties(session_expiry_interval=HOUR))
    holder.send(Subscribe(1, (Subscription("h/#", 1),)))
    holder.recv_packet()            # SUBACK
    publisher = paho.connected(first, "pub", 5)
    for n in range(3):
        publisher.publish(f"q/{n}", f"queued {n}".encode(), qos=1)
    publisher.publish("h/1", b"unacknowledged", qos=1)
    publisher.publish("r/a", b"retained", qos=1, retain=True)
    inflight = holder.recv_packet()
    assert inflight.topic == "h/1"
    publisher.stop()
    first.close()                   # SqliteStorage.stop() saves everything

    second = make_broker(hooks=[SqliteStorage(path)])
    back = paho(second, "away", 5, clean=False)
    flags, _, _ = back.connect(properties=connect_properties(SessionExpiryInterval=HOUR))
    assert flags.session_present
    for n in range(3):
        back.expect_message(f"q/{n}", f"queued {n}".encode())
    again, connack = resume(raw, second, "holder")
    assert connack.session_present
    resent = again.recv_packet()
    assert (resent.topic, resent.packet_id, resent.dup) == ("h/1", inflight.packet_id, True)
    again.send(Puback(resent.packet_id))
    fresh = paho.connected(second, "fresh", 5)
    fresh.subscribe("r/#", 1)
    assert fresh.expect_message("r/a", b"retained").retain
    # the subscription came back too: a new message reaches the resumed client
    paho.connected(second, "pub2", 5).publish("q/new", b"after", qos=1)
    back.expect_message("q/new", b"after")


def test_sqlite_storage_forgets_ended_sessions_and_cleared_retained(make_broker, paho, tmp_path) -> None:
    """A clean start [MQTT-3.1.2-4], a session with expiry 0, and a cleared retained message
    [MQTT-3.3.1-6] leave nothing in the file; a persistent session is written at once."""
    path = tmp_path / "kushi.db"
    broker = make_broker(hooks=[SqliteStorage(path, autosave_interval=60)])
    kept = paho(broker, "kept", 5, clean=False)
    kept.connect(properties=connect_properties(SessionExpiryInterval=HOUR))
    kept.subscribe("k/#", 1)
    paho.connected(broker, "passing", 5).subscribe("p/#", 1)   # expiry 0: never persistent
    publisher = paho.connected(broker, "pub", 5)
    publisher.publish("r/a", b"x", qos=1, retain=True)
    publisher.publish("r/b", b"y", qos=1, retain=True)
    publisher.publish("r/a", b"", qos=1, retain=True)

    def rows(sql: str) -> list[tuple]:
        with sqlite3.connect(path) as db:
            return db.execute(sql).fetchall()

    wait_until(lambda: rows("SELECT topic FROM retained") == [("r/b",)], message="r/a cleared")
    assert rows("SELECT client_id FROM clients") == [("kept",)]
    assert rows("SELECT client_id, filter FROM subscriptions") == [("kept", "k/#")]
    kept.disconnect()
    again = paho(broker, "kept", 5, clean=True)
    again.connect()
    wait_until(lambda: rows("SELECT client_id FROM clients") == [], message="the ended session deleted")
    assert rows("SELECT * FROM subscriptions") == []


def test_sqlite_storage_autosave_writes_messages_queued_while_running(make_broker, paho, tmp_path) -> None:
    """Messages queued for an offline session reach the file with the next autosave,
    without a stop (what survives a crash)."""
    path = tmp_path / "kushi.db"
    broker = make_broker(hooks=[SqliteStorage(path, autosave_interval=0.1)])
    away = paho(broker, "away", 5, clean=False)
    away.connect(properties=connect_properties(SessionExpiryInterval=HOUR))
    away.subscribe("q/#", 1)
    away.disconnect()
    paho.connected(broker, "pub", 5).publish("q/1", b"one", qos=1)

    def saved() -> list[tuple]:
        with sqlite3.connect(path) as db:
            return db.execute("SELECT client_id, state FROM messages").fetchall()

    assert wait_until(saved, message="the autosave") == [("away", "queued")]
    storage = SqliteStorage(path)     # a second reader of the same file, as after a crash
    storage.init(None)
    try:
        (message,) = storage.stored_inflight()
        assert (message.client_id, message.message.topic, bytes(message.message.payload)) == (
            "away", "q/1", b"one")
        (client,) = storage.stored_clients()
        assert client.client_id == "away" and client.disconnected_at is not None
    finally:
        storage.db.close()


def test_sqlite_storage_refuses_a_bad_autosave_interval(tmp_path) -> None:
    from kushi.errors import ConfigurationError

    with pytest.raises(ConfigurationError):
        SqliteStorage(tmp_path / "x.db", autosave_interval=0)


def test_sqlite_storage_keeps_the_shared_group_that_chose_a_message(tmp_path) -> None:
    """A queued message from a shared subscription keeps its (group, filter) through the file, so
    it can still go to another member if its session ends unfinished after a restart."""
    from kushi.hooks.records import SessionRecords

    storage = SqliteStorage(tmp_path / "kushi.db")
    storage.init(None)
    client = StoredClient("member", MQTT_5, None, 300)
    messages = (StoredMessage("member", Publish("jobs/1", b"a", qos=1), time.time(), shared=("g", "jobs/#")),
                StoredMessage("member", Publish("own/1", b"b", qos=1), time.time()))
    storage.write_session(SessionRecords(client, (), messages))
    assert [m.shared for m in storage.stored_inflight()] == [("g", "jobs/#"), None]
    storage.stop()


def test_sqlite_storage_opens_a_file_of_the_first_schema(tmp_path) -> None:
    """Schema 1 had no messages.shared column: it is added, the rows stay."""
    path = tmp_path / "v1.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE messages (client_id TEXT NOT NULL, position INTEGER NOT NULL, state TEXT "
               "NOT NULL, packet_id INTEGER NOT NULL, sent INTEGER NOT NULL, stored_at REAL NOT NULL, "
               "message BLOB NOT NULL, PRIMARY KEY (client_id, position))")
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    storage = SqliteStorage(path)
    storage.init(None)
    assert storage.stored_inflight() == []
    columns = [row[1] for row in storage.db.execute("PRAGMA table_info(messages)")]
    assert columns[-1] == "shared"
    storage.stop()
