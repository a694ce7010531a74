"""Smoke tests of kushi.Server with real paho-mqtt clients (v3.1.1 and v5) over TCP.

The conformance suites (tests/worker/test_mqtt_*.py) check each normative
statement; these check that the basic flows work end to end: connect,
subscribe, publish at each QoS, retained messages, wills, the inline client,
session resume, and graceful close.
"""

from __future__ import annotations

import queue

import pytest

VERSIONS = [3, 4, 5]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_publish_round_trip(broker, paho, version, qos):
    """[MQTT-3.3.4-1] [MQTT-3.8.4-8] a message reaches a subscriber at min(published, granted) QoS."""
    subscriber = paho.connected(broker, "sub", version)
    assert subscriber.subscribe("smoke/#", 2) == [2]
    publisher = paho.connected(broker, "pub", version)
    publisher.publish("smoke/a", b"payload-%d" % qos, qos=qos)
    message = subscriber.expect_message("smoke/a", b"payload-%d" % qos)
    assert message.qos == qos
    assert not message.retain


@pytest.mark.parametrize("version", VERSIONS)
def test_qos_downgraded_to_granted(broker, paho, version):
    """[MQTT-3.8.4-8] a QoS 2 message to a QoS 1 subscription arrives at QoS 1."""
    subscriber = paho.connected(broker, "sub", version)
    assert subscriber.subscribe("down/+", 1) == [1]
    paho.connected(broker, "pub", version).publish("down/x", b"m", qos=2)
    assert subscriber.expect_message("down/x", b"m").qos == 1


@pytest.mark.parametrize("version", VERSIONS)
def test_retained_message_sent_on_subscribe(broker, paho, version):
    """[MQTT-3.3.1-5] [MQTT-3.3.1-6] retained set, sent with RETAIN=1 on subscribe, cleared by empty payload."""
    publisher = paho.connected(broker, "pub", version)
    publisher.publish("ret/a", b"kept", qos=1, retain=True)
    first = paho.connected(broker, "first", version)
    first.subscribe("ret/#", 1)
    message = first.expect_message("ret/a", b"kept")
    assert message.retain
    publisher.publish("ret/a", b"", qos=1, retain=True)
    first.expect_message("ret/a", b"")
    publisher.publish("ret/b", b"control", qos=1, retain=True)
    second = paho.connected(broker, "second", version)
    second.subscribe("ret/#", 1)
    second.expect_message("ret/b", b"control")
    second.expect_no_message()


@pytest.mark.parametrize("version", VERSIONS)
def test_will_published_on_abnormal_close_only(broker, paho, version):
    """[MQTT-3.1.2-8] [MQTT-3.14.4-3] a dropped connection publishes its will; DISCONNECT does not."""
    watcher = paho.connected(broker, "watcher", version)
    watcher.subscribe("will/#", 1)
    polite = paho(broker, "polite", version)
    polite.will_set("will/polite", b"gone", qos=1)
    polite.connect()
    polite.disconnect()
    rude = paho(broker, "rude", version)
    rude.will_set("will/rude", b"gone", qos=1)
    rude.connect()
    rude.drop()
    watcher.expect_message("will/rude", b"gone")
    watcher.expect_no_message()


@pytest.mark.parametrize("version", VERSIONS)
def test_persistent_session_queues_while_offline(broker, paho, version):
    """[MQTT-3.2.2-3] [MQTT-4.4.0-1] a resumed session has Session Present and gets what was queued."""
    from support.paho import connect_properties

    properties = connect_properties(SessionExpiryInterval=60) if version == 5 else None
    subscriber = paho(broker, "keeper", version, clean=False)
    subscriber.connect(properties=properties)
    subscriber.subscribe("queued/#", 1)
    subscriber.disconnect()
    paho.connected(broker, "pub", version).publish("queued/a", b"while away", qos=1)
    again = paho(broker, "keeper", version, clean=False)
    flags, _, _ = again.connect(properties=properties)
    assert flags.session_present or version == 3  # a 3.1 CONNACK has no Session Present flag
    again.expect_message("queued/a", b"while away")


def test_inline_client_publish_and_subscribe(broker, paho):
    """The inline client: its publishes reach clients, clients' publishes reach its callback."""
    received: queue.Queue[tuple[str, bytes]] = queue.Queue()
    broker.call(broker.server.publish("inline/retained", b"r", retain=True))
    broker.call(broker.server.subscribe("inline/#", 7, lambda topic, payload, packet:
                                        received.put((topic, payload))))
    assert received.get(timeout=2) == ("inline/retained", b"r")
    client = paho.connected(broker, "c", 5)
    client.subscribe("inline/#", 0)
    client.expect_message("inline/retained", b"r")
    broker.call(broker.server.publish("inline/out", "text"))
    client.expect_message("inline/out", b"text")
    assert received.get(timeout=2) == ("inline/out", b"text")
    client.publish("inline/in", b"x", qos=1)
    assert received.get(timeout=2) == ("inline/in", b"x")


def test_introspection_and_stats(broker, paho):
    """clients(), client(id), retained() and stats() describe the running broker."""
    client = paho.connected(broker, "seen", 5)
    client.subscribe("a/b", 1)
    client.publish("a/b", b"1", qos=1, retain=True)
    client.expect_message("a/b", b"1")
    assert [info.client_id for info in broker.call(broker.server.clients())] == ["seen"]
    assert broker.call(broker.server.client("seen")).protocol_version == 5
    assert [m.topic for m in broker.call(broker.server.retained("a/#"))] == ["a/b"]
    stats = broker.sync(broker.server.stats)
    assert stats["clients_connected"] == 1
    assert stats["messages_received"] == 1 and stats["messages_sent"] == 1
    assert stats["retained"] == 1 and stats["subscriptions"] == 1


def test_graceful_close_sends_server_shutting_down(broker, paho):
    """Server.close(): a v5 client gets DISCONNECT 0x8B, a v3.1.1 client is closed."""
    v5 = paho.connected(broker, "five", 5)
    v4 = paho.connected(broker, "four", 4)
    broker.close()
    assert int(getattr(v5.wait_disconnected(), "value", -1)) == 0x8B
    v4.wait_disconnected()


@pytest.mark.parametrize("qos", [0, 1])
def test_outbound_topic_aliases_are_used(broker, raw, paho, qos):
    """[MQTT-3.1.2-26] [MQTT-3.3.2-7] a client with Topic Alias Maximum 1 gets the topic once with
    alias 1, then alias 1 alone; a second topic goes in full, with no alias."""
    from kushi.protocol.packets import Puback, Subscribe, Subscription
    from kushi.protocol.properties import Properties

    client = raw(broker, 5)
    client.connect_ok("aliased", properties=Properties(topic_alias_maximum=1))
    client.send(Subscribe(1, (Subscription("alias/#", qos),)))
    client.recv_packet()
    publisher = paho.connected(broker, "pub", 5)
    seen = []
    for topic in ("alias/a", "alias/a", "alias/b"):
        publisher.publish(topic, b"x", qos=qos)
        packet = client.recv_packet()
        if qos:
            client.send(Puback(packet.packet_id))
        seen.append((packet.topic, packet.properties.topic_alias))
    assert seen == [("alias/a", 1), ("", 1), ("alias/b", None)]


def test_response_topic_with_a_wildcard_is_refused(broker, raw):
    """[MQTT-3.3.2-14] a PUBLISH whose Response Topic has a wildcard ends the connection
    (v5: DISCONNECT 0x82 protocol error or 0x90 topic name invalid)."""
    from kushi.protocol.packets import Publish
    from kushi.protocol.properties import Properties

    client = raw(broker, 5)
    client.connect_ok("asker")
    client.send(Publish("req/x", b"?", properties=Properties(response_topic="answers/#")))
    client.expect_disconnect({0x82, 0x90})
