"""Each hook event of docs/hooks.md in a running broker: it fires exactly when documented
(and not otherwise), and a filter's change takes effect (issue 4).

One ``RecordingHook`` overrides the events under test and appends ``(event, client_id,
value)`` to a list guarded by a lock: the broker calls it on its own thread, the test
reads it from the test thread and waits for it with ``wait_until``.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from typing import Any

import kushi
from kushi.errors import ProtocolError
from kushi.protocol.packets import (
    Connect, Publish, Puback, Pubcomp, Subscribe, Subscription, Unsubscribe,
)
from kushi.protocol.properties import Properties
from support.paho import connect_properties, publish_properties
from support.waiting import wait_until


def _client_id(client: Any) -> str | None:
    return getattr(client, "client_id", None)


class RecordingHook(kushi.Hook):
    """Records the events below; ``changes`` maps a filter event to a function of its value."""

    id = "recording"

    def __init__(self, changes: dict[str, Callable[[Any], Any]] | None = None) -> None:
        self.changes = changes or {}
        self._lock = threading.Lock()
        self._events: list[tuple[str, str | None, Any]] = []

    def record(self, event: str, client: Any, value: Any = None) -> None:
        with self._lock:
            self._events.append((event, _client_id(client), value))

    def events(self, *names: str) -> list[tuple[str, str | None, Any]]:
        """The recorded events (only those named, if any), in the order they fired."""
        with self._lock:
            return [event for event in self._events if not names or event[0] in names]

    def filter(self, event: str, client: Any, value: Any) -> Any:
        self.record(event, client, value)
        change = self.changes.get(event)
        return value if change is None else change(value)

    def on_started(self, server: Any) -> None:
        self.record("on_started", None, server)

    def on_stopped(self, server: Any) -> None:
        self.record("on_stopped", None, server)

    def on_session_establish(self, client: Any, packet: Any) -> None:
        self.record("on_session_establish", client, packet)

    def on_session_established(self, client: Any, packet: Any) -> None:
        self.record("on_session_established", client, packet)

    def on_disconnect(self, client: Any, error: BaseException | None, expire: bool) -> None:
        self.record("on_disconnect", client, (error, expire))

    def on_packet_read(self, client: Any, packet: Any) -> Any:
        return self.filter("on_packet_read", client, packet)

    def on_packet_processed(self, client: Any, packet: Any, error: BaseException | None) -> None:
        self.record("on_packet_processed", client, packet)

    def on_subscribed(self, client: Any, packet: Subscribe, reason_codes: Any) -> None:
        self.record("on_subscribed", client, (packet, list(reason_codes)))

    def on_unsubscribe(self, client: Any, packet: Unsubscribe) -> Unsubscribe:
        return self.filter("on_unsubscribe", client, packet)

    def on_unsubscribed(self, client: Any, packet: Unsubscribe) -> None:
        self.record("on_unsubscribed", client, packet)

    def on_publish_dropped(self, client: Any, packet: Publish) -> None:
        self.record("on_publish_dropped", client, packet)

    def on_retain_message(self, client: Any, packet: Publish, result: int) -> None:
        self.record("on_retain_message", client, (packet, result))

    def on_retain_published(self, client: Any, packet: Publish) -> None:
        self.record("on_retain_published", client, packet)

    def on_qos_publish(self, client: Any, packet: Publish, sent: float, resends: int) -> None:
        self.record("on_qos_publish", client, (packet, resends))

    def on_qos_complete(self, client: Any, packet: Any) -> None:
        self.record("on_qos_complete", client, packet)

    def on_qos_dropped(self, client: Any, packet: Publish) -> None:
        self.record("on_qos_dropped", client, packet)

    def on_will(self, client: Any, will: Any) -> Any:
        return self.filter("on_will", client, will)

    def on_will_sent(self, client: Any, packet: Publish) -> None:
        self.record("on_will_sent", client, packet)

    def on_retained_expired(self, topic: str) -> None:
        self.record("on_retained_expired", None, topic)


def names(events: list[tuple[str, str | None, Any]]) -> list[str]:
    return [event[0] for event in events]


# ---- lifecycle --------------------------------------------------------------------------

def test_on_started_once_after_start_and_on_stopped_once_after_close(make_broker) -> None:
    hook = RecordingHook()
    running = make_broker(hooks=[hook])
    assert hook.events() == [("on_started", None, running.server)]
    running.close()
    assert hook.events() == [("on_started", None, running.server), ("on_stopped", None, running.server)]


# ---- connect ------------------------------------------------------------------------------

class RefuseNamedClient(RecordingHook):
    def on_connect(self, client: Any, packet: Any) -> int | None:
        return 0x87 if packet.client_id == "refused" else None


def test_session_establish_then_established_for_an_accepted_connect_only(make_broker, paho) -> None:
    hook = RefuseNamedClient()
    running = make_broker(hooks=[hook])
    refused = paho(running, "refused")
    assert refused.connect(expect_success=False)[1].value == 0x87
    paho.connected(running, "accepted")
    session_events = hook.events("on_session_establish", "on_session_established")
    assert [(event, client_id) for event, client_id, _ in session_events] == [
        ("on_session_establish", "accepted"), ("on_session_established", "accepted")]
    assert all(packet.client_id == "accepted" for _, _, packet in session_events)


def test_on_disconnect_reports_the_error_and_whether_the_session_ends(make_broker, paho) -> None:
    hook = RecordingHook()
    running = make_broker(hooks=[hook])
    paho.connected(running, "ends").disconnect()
    paho.connected(running, "stays", properties=_session_expiry(60)).disconnect()
    paho.connected(running, "dropped").drop()
    disconnects = wait_until(lambda: len(hook.events("on_disconnect")) == 3 and hook.events("on_disconnect"))
    by_client = {client_id: value for _, client_id, value in disconnects}
    assert by_client["ends"] == (None, True)
    assert by_client["stays"] == (None, False)
    error, expire = by_client["dropped"]
    assert error is not None and expire is True


class AddressHook(kushi.Hook):
    """Reads ``remote_address`` at ``on_disconnect``, for every client but "quiet"."""

    id = "address"

    def __init__(self) -> None:
        self.seen: dict[str, Any] = {}

    def on_disconnect(self, client: Any, error: BaseException | None, expire: bool) -> None:
        self.seen[client.client_id] = client.remote_address if client.client_id != "quiet" else None


def test_remote_address_is_the_peers_at_on_disconnect_and_once_the_connection_is_gone(
        make_broker, paho) -> None:
    """On uvloop's TCP transport the address is read when first asked for (MQTTConnection):
    asked during on_disconnect, or first from a detached session's ClientInfo afterwards."""
    hook = AddressHook()
    running = make_broker(hooks=[hook])
    clients = {client_id: paho.connected(running, client_id, properties=_session_expiry(60))
               for client_id in ("closes", "drops", "quiet")}
    addresses = {client_id: client.client.socket().getsockname()
                 for client_id, client in clients.items()}
    clients["closes"].disconnect()
    clients["drops"].drop()
    clients["quiet"].drop()
    wait_until(lambda: len(hook.seen) == 3)
    assert hook.seen == {"closes": addresses["closes"], "drops": addresses["drops"], "quiet": None}

    def detached_addresses() -> dict[str, Any]:
        sessions = running.server.broker.sessions
        return {client_id: sessions[client_id].client.remote_address for client_id in addresses}

    assert running.sync(detached_addresses) == addresses


def _session_expiry(seconds: int) -> Any:
    return connect_properties(SessionExpiryInterval=seconds)


# ---- packets --------------------------------------------------------------------------------

def _rewrite_payload(packet: Any) -> Any:
    if isinstance(packet, Publish) and packet.payload == b"before":
        return dataclasses.replace(packet, payload=b"after", raw=None)
    return packet


def test_on_packet_read_may_replace_a_packet_and_on_packet_processed_follows(make_broker, paho) -> None:
    hook = RecordingHook({"on_packet_read": _rewrite_payload})
    running = make_broker(hooks=[hook])
    subscriber = paho.connected(running, "sub")
    subscriber.subscribe("t", qos=1)
    paho.connected(running, "pub").publish("t", b"before", qos=1)
    subscriber.expect_message("t", b"after")
    publish_events = [(event, value.payload) for event, client_id, value in
                      hook.events("on_packet_read", "on_packet_processed")
                      if client_id == "pub" and isinstance(value, Publish)]
    assert publish_events == [("on_packet_read", b"before"), ("on_packet_processed", b"after")]


class ProcessedErrors(kushi.Hook):
    """Records (packet type, error) of each on_packet_processed."""

    def __init__(self) -> None:
        self.processed: list[tuple[str, BaseException | None]] = []

    def on_packet_processed(self, client: Any, packet: Any, error: BaseException | None) -> None:
        self.processed.append((packet.type.name, error))


def test_on_packet_processed_gets_the_error_that_ended_a_packet(make_broker, raw) -> None:
    """A packet whose handling fails (a second CONNECT, [MQTT-3.1.0-2]) still reaches
    on_packet_processed, with the error; one handled without error gets None."""
    hook = ProcessedErrors()
    running = make_broker(hooks=[hook])
    client = raw(running)
    client.connect_ok("twice")
    client.send(Subscribe(1, (Subscription("t", 0),)))
    client.recv_packet()                               # SUBACK: the SUBSCRIBE was processed
    client.send(Connect(client_id="twice"))
    client.expect_disconnect(0x82)
    wait_until(lambda: len(hook.processed) == 2)
    (first, first_error), (second, second_error) = hook.processed
    assert (first, first_error) == ("SUBSCRIBE", None)
    assert second == "CONNECT" and isinstance(second_error, ProtocolError)


# ---- subscriptions ----------------------------------------------------------------------------

def _unsubscribe_t_instead(packet: Unsubscribe) -> Unsubscribe:
    return dataclasses.replace(packet, filters=("t",))


def test_subscribed_and_unsubscribe_rewrite_takes_effect(make_broker, paho) -> None:
    hook = RecordingHook({"on_unsubscribe": _unsubscribe_t_instead})
    running = make_broker(hooks=[hook])
    subscriber = paho.connected(running, "sub")
    assert subscriber.subscribe_many([("t", 1), ("control", 0)]) == [1, 0]
    [(_, client_id, (suback_for, codes))] = hook.events("on_subscribed")
    assert client_id == "sub" and codes == [1, 0]
    assert [s.filter for s in suback_for.subscriptions] == ["t", "control"]
    assert hook.events("on_unsubscribe", "on_unsubscribed") == []

    subscriber.unsubscribe("never-subscribed")        # the hook turns it into "t"
    publisher = paho.connected(running, "pub")
    publisher.publish("t", b"gone", qos=1)
    publisher.publish("control", b"still here", qos=1)
    subscriber.expect_message("control", b"still here")
    events = hook.events("on_unsubscribe", "on_unsubscribed")
    assert [(event, value.filters) for event, _, value in events] == [
        ("on_unsubscribe", ("never-subscribed",)), ("on_unsubscribed", ("t",))]


# ---- retained messages ------------------------------------------------------------------------

def test_retain_message_stored_cleared_and_published_to_a_new_subscriber(make_broker, paho) -> None:
    hook = RecordingHook()
    running = make_broker(hooks=[hook])
    publisher = paho.connected(running, "pub")
    publisher.publish("r/kept", b"kept", qos=1, retain=True)
    publisher.publish("r/cleared", b"soon gone", qos=1, retain=True)
    publisher.publish("r/cleared", b"", qos=1, retain=True)
    publisher.publish("r/plain", b"not retained", qos=1)
    retains = [(client_id, packet.topic, result) for _, client_id, (packet, result)
               in hook.events("on_retain_message")]
    assert retains == [("pub", "r/kept", 1), ("pub", "r/cleared", 1), ("pub", "r/cleared", -1)]

    subscriber = paho.connected(running, "sub")
    subscriber.subscribe("r/#", qos=0)
    subscriber.expect_message("r/kept", b"kept")
    published = wait_until(lambda: hook.events("on_retain_published"))
    assert [(client_id, packet.topic, packet.payload) for _, client_id, packet in published] == [
        ("sub", "r/kept", b"kept")]


def test_on_retained_expired_when_the_expiry_interval_passed(make_broker, paho) -> None:
    hook = RecordingHook()
    running = make_broker(hooks=[hook])
    publisher = paho.connected(running, "pub")
    publisher.publish("r/short", b"x", qos=1, retain=True,
                      properties=publish_properties(MessageExpiryInterval=1))
    publisher.publish("r/long", b"y", qos=1, retain=True)
    assert hook.events("on_retained_expired") == []
    wait_until(lambda: hook.events("on_retained_expired"), timeout=3.0, message="on_retained_expired")
    assert hook.events("on_retained_expired") == [("on_retained_expired", None, "r/short")]


# ---- QoS flows ------------------------------------------------------------------------------

def test_qos1_and_qos2_publish_then_complete_with_the_same_packet_id(make_broker, paho) -> None:
    hook = RecordingHook()
    running = make_broker(hooks=[hook])
    subscriber = paho.connected(running, "sub")
    subscriber.subscribe("q/#", qos=2)
    publisher = paho.connected(running, "pub")
    publisher.publish("q/0", b"zero", qos=0)
    publisher.publish("q/1", b"one", qos=1)
    publisher.publish("q/2", b"two", qos=2)
    for topic, payload in (("q/0", b"zero"), ("q/1", b"one"), ("q/2", b"two")):
        subscriber.expect_message(topic, payload)
    events = wait_until(lambda: len(hook.events("on_qos_complete")) == 2
                        and hook.events("on_qos_publish", "on_qos_complete"))
    assert all(client_id == "sub" for _, client_id, _ in events)
    # the two flows may interleave; each one is its on_qos_publish first, then its completion
    publishes = [(index, value) for index, (event, _, value) in enumerate(events) if event == "on_qos_publish"]
    completes = [(index, value) for index, (event, _, value) in enumerate(events) if event == "on_qos_complete"]
    expected = [("q/1", 1, Puback), ("q/2", 2, Pubcomp)]
    assert len(publishes) == len(completes) == len(expected)   # none for the QoS 0 message
    for (sent_at, (sent, resends)), (done_at, ack), (topic, qos, ack_type) in zip(publishes, completes, expected):
        assert (sent.topic, sent.qos, resends) == (topic, qos, 0)
        assert type(ack) is ack_type and ack.packet_id == sent.packet_id
        assert sent_at < done_at


def test_on_qos_dropped_for_an_unacknowledged_message_when_the_session_ends(make_broker, raw, paho) -> None:
    hook = RecordingHook()
    running = make_broker(hooks=[hook])
    client = raw(running)
    client.connect_ok("sub")
    client.send(Subscribe(1, (Subscription("q", 1),)))
    client.recv_packet()                               # SUBACK
    paho.connected(running, "pub").publish("q", b"never acked", qos=1)
    delivered = client.recv_packet()
    assert isinstance(delivered, Publish) and delivered.payload == b"never acked"
    assert hook.events("on_qos_dropped") == []
    client.close()                                     # no PUBACK; session expiry 0 ends it
    dropped = wait_until(lambda: hook.events("on_qos_dropped"))
    assert [(client_id, packet.payload) for _, client_id, packet in dropped] == [("sub", b"never acked")]


def test_on_publish_dropped_for_a_message_larger_than_the_client_accepts(make_broker, raw, paho) -> None:
    hook = RecordingHook()
    running = make_broker(hooks=[hook])
    client = raw(running)
    client.connect_ok("small", properties=Properties(maximum_packet_size=64))
    client.send(Subscribe(1, (Subscription("s/#", 0),)))
    client.recv_packet()                               # SUBACK
    publisher = paho.connected(running, "pub")
    publisher.publish("s/big", b"x" * 200, qos=1)
    publisher.publish("s/small", b"fits", qos=1)
    delivered = client.recv_packet()
    assert isinstance(delivered, Publish) and delivered.topic == "s/small"
    dropped = hook.events("on_publish_dropped")
    assert [(client_id, packet.topic) for _, client_id, packet in dropped] == [("small", "s/big")]


# ---- wills ------------------------------------------------------------------------------------

def _change_will_payload(will: Any) -> Any:
    return dataclasses.replace(will, payload=b"changed by the hook")


def test_will_is_filtered_and_sent_on_an_abnormal_close_only(make_broker, paho) -> None:
    hook = RecordingHook({"on_will": _change_will_payload})
    running = make_broker(hooks=[hook])
    watcher = paho.connected(running, "watcher")
    watcher.subscribe("wills/#", qos=0)

    polite = paho(running, "polite")
    polite.will_set("wills/polite", b"original")
    polite.connect()
    polite.disconnect()                                # normal DISCONNECT: no will
    dropped = paho(running, "dropped")
    dropped.will_set("wills/dropped", b"original")
    dropped.connect()
    dropped.drop()                                     # the positive control

    watcher.expect_message("wills/dropped", b"changed by the hook")
    events = wait_until(lambda: hook.events("on_will_sent") and hook.events("on_will", "on_will_sent"))
    assert [(event, client_id) for event, client_id, _ in events] == [
        ("on_will", "dropped"), ("on_will_sent", "dropped")]
    (_, _, will), (_, _, sent) = events
    assert (will.topic, will.payload) == ("wills/dropped", b"original")
    assert (sent.topic, sent.payload) == ("wills/dropped", b"changed by the hook")


def test_a_resent_message_is_on_qos_publish_again_with_one_resend_not_dropped(make_broker, raw, paho) -> None:
    """[MQTT-4.4.0-1] A resumed session resends its unacknowledged message (DUP): the hook
    hears it with ``resends`` 1 and the same packet id; a detached session drops nothing."""
    hook = RecordingHook()
    running = make_broker(hooks=[hook])
    keeps_session = Properties(session_expiry_interval=60)
    first = raw(running)
    first.connect_ok("sub", properties=keeps_session)
    first.send(Subscribe(1, (Subscription("q", 1),)))
    first.recv_packet()                                # SUBACK
    paho.connected(running, "pub").publish("q", b"again", qos=1)
    original = first.recv_packet()
    first.close()                                      # no PUBACK
    wait_until(lambda: hook.events("on_disconnect"))
    second = raw(running)
    second.connect_ok("sub", clean_start=False, properties=keeps_session)
    resent = second.recv_packet()
    assert isinstance(resent, Publish) and resent.dup and resent.packet_id == original.packet_id
    second.send(Puback(resent.packet_id, 0))
    events = wait_until(lambda: hook.events("on_qos_complete") and hook.events(
        "on_qos_publish", "on_qos_complete", "on_qos_dropped"))
    assert [event for event, _, _ in events] == ["on_qos_publish", "on_qos_publish", "on_qos_complete"]
    (_, _, (sent, resends)), (_, _, (again, resends_again)), (_, _, ack) = events
    assert (sent.packet_id, resends) == (original.packet_id, 0)
    assert (again.packet_id, again.payload, resends_again) == (original.packet_id, b"again", 1)
    assert ack.packet_id == original.packet_id


def test_will_on_a_disconnect_with_reason_0x04(make_broker, paho) -> None:
    """[MQTT-3.14.4-3] DISCONNECT 0x04 (with will) publishes the will: on_will, then on_will_sent."""
    hook = RecordingHook({"on_will": _change_will_payload})
    running = make_broker(hooks=[hook])
    watcher = paho.connected(running, "watcher")
    watcher.subscribe("wills/#", qos=0)
    leaving = paho(running, "leaving")
    leaving.will_set("wills/leaving", b"original")
    leaving.connect()
    leaving.disconnect(reasoncode=0x04)
    watcher.expect_message("wills/leaving", b"changed by the hook")
    events = wait_until(lambda: hook.events("on_will_sent") and hook.events("on_will", "on_will_sent"))
    assert [(event, client_id) for event, client_id, _ in events] == [
        ("on_will", "leaving"), ("on_will_sent", "leaving")]
