"""SUBSCRIBE / UNSUBSCRIBE conformance: matching, reason codes, shared subscriptions.

Checklist sections 11-14 and 18 (topic names and filters 4.7, $-topics 4.7.2,
shared subscriptions 4.8.2). Absence checks always follow a positive control:
a marker message published after the one that must not arrive.
"""

from __future__ import annotations

import time

import pytest
from paho.mqtt.subscribeoptions import SubscribeOptions
from support.paho import subscribe_properties

from kushi.hooks.base import Hook
from kushi.protocol.packets import (
    Puback,
    Publish,
    Suback,
    Subscribe,
    Subscription,
    Unsuback,
    Unsubscribe,
)
from kushi.protocol.properties import Properties

VERSIONS = pytest.mark.parametrize("version", [4, 5], ids=["v311", "v5"])


def received_until_marker(client, marker_topic: str) -> list[tuple[str, bytes]]:
    """Every (topic, payload) delivered before the marker message, which must come last."""
    seen = []
    while (message := client.wait_for_message()).topic != marker_topic:
        seen.append((message.topic, message.payload))
    return seen


@VERSIONS
def test_wildcard_matching(broker, paho, version):
    """[MQTT-4.7.1-1] [MQTT-4.7.1-2] [MQTT-3.3.2-3] "+" matches one level, "#" the parent and any
    number of levels; the delivered topic is the published one."""
    subscriber = paho.connected(broker, "sub", version)
    assert subscriber.subscribe_many([("s/+/x", 0), ("h/#", 0), ("+", 0), ("end", 0)]) == [0, 0, 0, 0]
    publisher = paho.connected(broker, "pub", version)
    topics = ["s/a/x", "s//x", "s/a/b/x", "s/a", "h", "h/1", "h/1/2/3", "hh/1", "top", "/top", "end"]
    for topic in topics:
        publisher.publish(topic, topic.encode(), qos=1)
    seen = {topic for topic, _ in received_until_marker(subscriber, "end")}
    assert seen == {"s/a/x", "s//x", "h", "h/1", "h/1/2/3", "top"}


@VERSIONS
def test_leading_wildcards_do_not_match_dollar_topics(broker, paho, version):
    """[MQTT-4.7.2-1] (3.1.1 [MQTT-4.7.2-1]) filters starting with # or + do not match $-topics;
    "$x/#" does."""
    hash_all = paho.connected(broker, "hash", version)
    assert hash_all.subscribe("#", 0) == [0]
    plus_first = paho.connected(broker, "plus", version)
    assert plus_first.subscribe("+/status", 0) == [0]
    dollar = paho.connected(broker, "dollar", version)
    assert dollar.subscribe("$x/#", 0) == [0]
    publisher = paho.connected(broker, "pub", version)
    publisher.publish("$x/status", b"hidden", qos=1)
    publisher.publish("plain/status", b"visible", qos=1)
    dollar.expect_message("$x/status", b"hidden")
    for wildcard in (hash_all, plus_first):
        wildcard.expect_message("plain/status", b"visible")
        wildcard.expect_no_message()


@VERSIONS
def test_suback_codes_in_filter_order(broker, raw, version):
    """[MQTT-3.8.4-1] [MQTT-3.8.4-2] [MQTT-3.8.4-5] [MQTT-3.8.4-6] [MQTT-3.9.3-1] one SUBACK with
    the SUBSCRIBE's id and one code per filter in order; an invalid filter gets 0x8F (v5) / 0x80
    (3.1.1 [MQTT-3.9.3-2]: 0x80 is the only failure code)."""
    client = raw(broker, version)
    client.connect_ok("order")
    client.send(Subscribe(321, (
        Subscription("a", 2), Subscription("b/#/c", 1), Subscription("c", 0), Subscription("d/+", 1),
    )))
    suback = client.recv_packet()
    assert isinstance(suback, Suback) and suback.packet_id == 321
    bad = 0x8F if version == 5 else 0x80
    assert suback.reason_codes == (2, bad, 0, 1)


@VERSIONS
@pytest.mark.parametrize("bad_filter", ["a/#/b", "a#", "a/b+", "+a/b", "#/x", "a/#b"])
def test_invalid_topic_filters_refused(broker, raw, bad_filter, version):
    """[MQTT-4.7.1-1] [MQTT-4.7.1-2] (3.1.1 [MQTT-4.7.1-2] [MQTT-4.7.1-3]) "#" only last and alone
    in its level, "+" fills its level: others are refused (0x8F; 3.1.1 0x80), the connection goes on."""
    client = raw(broker, version)
    client.connect_ok("badfilter")
    client.send(Subscribe(1, (Subscription(bad_filter, 0), Subscription("ok/+", 0))))
    assert client.recv_packet().reason_codes == (0x8F if version == 5 else 0x80, 0)


@pytest.mark.parametrize("bad_filter", ["$share/g", "$share//a", "$share/g+/a", "$share/g#/a", "$share/g/"])
def test_invalid_shared_filters_refused(broker, raw, bad_filter):
    """[MQTT-4.8.2-1] [MQTT-4.8.2-2] "$share/" + a ShareName without / + # + "/" + a filter."""
    client = raw(broker, 5)
    client.connect_ok("badshare")
    client.send(Subscribe(1, (Subscription(bad_filter, 0),)))
    answer = client.recv_packet()
    assert isinstance(answer, Suback) and answer.reason_codes == (0x8F,), answer


@pytest.mark.parametrize("option, filter_, code, properties", [
    ("wildcard_subscriptions_available", "w/+", 0xA2, Properties()),
    ("wildcard_subscriptions_available", "w/#", 0xA2, Properties()),
    ("shared_subscriptions_available", "$share/g/w", 0x9E, Properties()),
    ("subscription_identifiers_available", "w", 0xA1, Properties(subscription_identifiers=(5,))),
])
def test_unavailable_features_refused_per_filter(make_broker, raw, option, filter_, code, properties):
    """Issue 2: SUBACK 0xA2 / 0x9E / 0xA1 when wildcard / shared / subscription-id support is off."""
    broker = make_broker(**{option: False})
    client = raw(broker, 5)
    client.connect_ok("feature")
    client.send(Subscribe(1, (Subscription(filter_, 1),), properties))
    answer = client.recv_packet()
    assert isinstance(answer, Suback) and answer.reason_codes == (code,), answer


def test_wildcards_refused_when_unavailable_311(make_broker, raw):
    """3.1.1 [MQTT-3.8.3-2] a server without wildcard subscriptions rejects filters using them
    (return code 0x80) and still grants the others."""
    broker = make_broker(wildcard_subscriptions_available=False)
    client = raw(broker, 4)
    client.connect_ok("nowild")
    client.send(Subscribe(1, (Subscription("w/+", 1), Subscription("w/#", 1), Subscription("w/x", 1))))
    answer = client.recv_packet()
    assert isinstance(answer, Suback) and answer.reason_codes == (0x80, 0x80, 1), answer


def test_subscribe_granted_qos_capped_by_maximum_qos(make_broker, paho):
    """[MQTT-3.2.2-10] [MQTT-3.8.4-7] with Maximum QoS 1, SUBSCRIBE QoS 2 is accepted and granted 1."""
    broker = make_broker(maximum_qos=1)
    client = paho.connected(broker, "capped", 5)
    assert client.subscribe("cap/t", 2) == [1]


class DenySecrets(Hook):
    """Refuses subscriptions and deliveries on secret/#."""

    id = "deny-secrets"

    def on_acl_check(self, client, topic, write):
        return not topic.startswith("secret")


def test_not_authorized_filter_gets_0x87(make_broker, raw):
    """Issue 2: a filter the ACL refuses gets SUBACK 0x87 (v5), 0x80 (3.1.1 [MQTT-3.9.3-2]: no
    other failure code exists); the others are granted."""
    broker = make_broker(hooks=[DenySecrets()])
    v5 = raw(broker, 5)
    v5.connect_ok("acl5")
    v5.send(Subscribe(1, (Subscription("secret/x", 1), Subscription("open/x", 1))))
    assert v5.recv_packet().reason_codes == (0x87, 1)
    v311 = raw(broker, 4)
    v311.connect_ok("acl4")
    v311.send(Subscribe(1, (Subscription("secret/x", 1), Subscription("open/x", 1))))
    assert v311.recv_packet().reason_codes == (0x80, 1)


@VERSIONS
def test_unsubscribe_stops_delivery(broker, paho, version):
    """[MQTT-3.10.4-1] [MQTT-3.10.4-2] [MQTT-3.10.4-4] [MQTT-3.10.4-6] after UNSUBACK no new
    messages for the removed filters; the other subscriptions keep working."""
    subscriber = paho.connected(broker, "sub", version)
    assert subscriber.subscribe_many([("u/a", 1), ("u/b", 1), ("u/keep", 1)]) == [1, 1, 1]
    codes = subscriber.unsubscribe(["u/a", "u/b"])
    if version == 5:
        assert codes == [0, 0]
    publisher = paho.connected(broker, "pub", version)
    publisher.publish("u/a", b"gone", qos=1)
    publisher.publish("u/b", b"gone", qos=1)
    publisher.publish("u/keep", b"kept", qos=1)
    subscriber.expect_message("u/keep", b"kept")
    subscriber.expect_no_message()


def test_unsuback_codes_and_literal_filter_comparison(broker, raw):
    """[MQTT-3.10.4-1] [MQTT-3.10.4-5] [MQTT-3.11.3-1] UNSUBACK has the id and one code per filter,
    in order: 0x00 removed, 0x11 none existed; filters compare literally (a/b does not remove a/+)."""
    client = raw(broker, 5)
    client.connect_ok("unsub")
    client.send(Subscribe(1, (Subscription("a/+", 1), Subscription("x", 1))))
    client.recv_packet()
    client.send(Unsubscribe(99, ("a/b", "x", "never")))
    answer = client.recv_packet()
    assert isinstance(answer, Unsuback) and answer.packet_id == 99
    assert answer.reason_codes == (0x11, 0x00, 0x11)
    client.send(Publish("a/b", b"still", qos=1, packet_id=5))
    packets = [client.recv_packet(), client.recv_packet()]
    assert any(isinstance(p, Puback) for p in packets)
    delivered = [p for p in packets if isinstance(p, Publish)]
    assert delivered and delivered[0].topic == "a/b", "a/+ was removed by unsubscribing a/b"


def test_unsuback_311_has_packet_id(broker, raw):
    """3.1.1 [MQTT-3.10.4-4] UNSUBACK echoes the id (no reason codes), even when nothing matched."""
    client = raw(broker, 4)
    client.connect_ok("unsub311")
    client.send(Unsubscribe(7, ("nothing",)))
    assert client.recv_bytes(4) == b"\xb0\x02\x00\x07", "UNSUBACK: type, length 2, the id, no payload"


@VERSIONS
def test_resubscribe_replaces_subscription(broker, paho, version):
    """[MQTT-3.8.4-3] (3.1.1 [MQTT-3.8.4-3]) the same filter again replaces the subscription:
    one copy per message, at the new QoS."""
    subscriber = paho.connected(broker, "sub", version)
    assert subscriber.subscribe("re/t", 0) == [0]
    assert subscriber.subscribe("re/t", 2) == [2]
    publisher = paho.connected(broker, "pub", version)
    publisher.publish("re/t", b"one", qos=2)
    publisher.publish("re/t", b"two", qos=2)
    assert subscriber.expect_message("re/t", b"one").qos == 2
    assert subscriber.expect_message("re/t", b"two").qos == 2, "a second copy of 'one' arrived"
    subscriber.expect_no_message()


def test_resubscribe_loses_no_message(broker, paho):
    """[MQTT-3.8.4-4] replacing a subscription (the same filter again, while messages flow) loses
    none of them: every one of a stream published around the re-SUBSCRIBEs arrives, in order."""
    subscriber = paho.connected(broker, "sub", 5)
    assert subscriber.subscribe("flow/t", 1) == [1]
    publisher = paho.connected(broker, "pub", 5)
    sent = [f"{index}".encode() for index in range(60)]
    for index, payload in enumerate(sent):
        publisher.client.publish("flow/t", payload, qos=1)
        if index % 20 == 10:
            assert subscriber.subscribe("flow/t", 1) == [1]
    publisher.publish("flow/t", b"done", qos=1)
    received = []
    while (message := subscriber.wait_for_message()).payload != b"done":
        received.append(message.payload)
    assert received == sent


@VERSIONS
def test_resubscribe_resends_retained(broker, paho, version):
    """[MQTT-3.8.4-4] (3.1.1 [MQTT-3.8.4-3]) re-subscribing (Retain Handling 0) sends the retained
    messages again."""
    paho.connected(broker, "pub", version).publish("rr/t", b"kept", qos=1, retain=True)
    subscriber = paho.connected(broker, "sub", version)
    assert subscriber.subscribe("rr/t", 1) == [1]
    assert subscriber.expect_message("rr/t", b"kept").retain is True
    assert subscriber.subscribe("rr/t", 1) == [1]
    assert subscriber.expect_message("rr/t", b"kept").retain is True


def test_subscription_identifier_forwarded(broker, paho):
    """[MQTT-3.3.4-3] a message matching a subscription with an identifier carries it."""
    subscriber = paho.connected(broker, "sub", 5)
    assert subscriber.subscribe("sid/t", 1, properties=subscribe_properties(SubscriptionIdentifier=4711)) == [1]
    paho.connected(broker, "pub", 5).publish("sid/t", b"x", qos=1)
    message = subscriber.expect_message("sid/t", b"x")
    assert message.properties.SubscriptionIdentifier == [4711]


def test_shared_subscription_delivers_each_message_to_one_member(broker, paho):
    """[MQTT-4.8.2-3] issue 2: $share/group/filter spreads messages over the group, each to exactly
    one member (round robin: both get some); a plain subscriber still gets every message."""
    members = [paho.connected(broker, f"member{i}", 5) for i in range(2)]
    for member in members:
        assert member.subscribe("$share/g/jobs/#", 1) == [1]
    watcher = paho.connected(broker, "watcher", 5)
    assert watcher.subscribe("jobs/#", 1) == [1]
    publisher = paho.connected(broker, "pub", 5)
    payloads = [f"job{i}".encode() for i in range(10)]
    for payload in payloads:
        publisher.publish("jobs/x", payload, qos=1)
    assert [watcher.wait_for_message().payload for _ in payloads] == payloads
    per_member = collect_from(members, len(payloads))
    assert sorted(p for got in per_member for p in got) == sorted(payloads), "lost or duplicated"
    assert all(per_member), f"one member got nothing: {per_member}"
    for member in members:
        member.expect_no_message(within=0.1)


def collect_from(clients, count: int, timeout: float = 2.0) -> list[list[bytes]]:
    """Payloads delivered to each of ``clients`` until ``count`` arrived in total."""
    import queue
    import time

    got: list[list[bytes]] = [[] for _ in clients]
    deadline = time.monotonic() + timeout
    while sum(map(len, got)) < count:
        assert time.monotonic() < deadline, f"only {sum(map(len, got))} of {count} arrived"
        for index, client in enumerate(clients):
            try:
                got[index].append(client.messages.get(timeout=0.02).payload)
            except queue.Empty:
                pass
    return got


def test_shared_subscription_granted_qos_per_member(broker, paho):
    """[MQTT-4.8.2-3] the member gets the message at its own granted QoS."""
    member = paho.connected(broker, "solo", 5)
    assert member.subscribe("$share/q/jobs", 0) == [0]
    paho.connected(broker, "pub", 5).publish("jobs", b"x", qos=2)
    assert member.expect_message("jobs", b"x").qos == 0


def test_no_local_on_shared_subscription_is_protocol_error(broker, raw):
    """[MQTT-3.8.3-4] No Local on a shared subscription: Protocol Error, DISCONNECT 0x82."""
    client = raw(broker, 5)
    client.connect_ok("nlshare")
    client.send(Subscribe(1, (Subscription("$share/g/t", 0, no_local=True),)))
    client.expect_disconnect(0x82)


def test_retain_as_published(broker, paho):
    """[MQTT-3.3.1-12] [MQTT-3.3.1-13] Retain As Published 0 forwards RETAIN 0, 1 keeps the flag."""
    keep = paho.connected(broker, "keep", 5)
    assert keep.subscribe("rap/t", options=SubscribeOptions(qos=1, retainAsPublished=True)) == [1]
    clear = paho.connected(broker, "clear", 5)
    assert clear.subscribe("rap/t", options=SubscribeOptions(qos=1, retainAsPublished=False)) == [1]
    paho.connected(broker, "pub", 5).publish("rap/t", b"r", qos=1, retain=True)
    assert keep.expect_message("rap/t", b"r").retain is True
    assert clear.expect_message("rap/t", b"r").retain is False


def test_established_subscription_gets_retain_0_in_311(broker, paho):
    """3.1.1 [MQTT-3.3.1-9] messages on an established subscription carry RETAIN 0."""
    subscriber = paho.connected(broker, "sub", 4)
    assert subscriber.subscribe("live/t", 1) == [1]
    paho.connected(broker, "pub", 4).publish("live/t", b"r", qos=1, retain=True)
    assert subscriber.expect_message("live/t", b"r").retain is False


def test_unsubscribe_finishes_deliveries_under_way(broker, raw, paho):
    """[MQTT-3.10.4-3] QoS 2 deliveries already started for a removed filter are completed."""
    from kushi.protocol.packets import Pubcomp, Pubrec, Pubrel

    client = raw(broker, 5)
    client.connect_ok("leaving")
    client.send(Subscribe(1, (Subscription("uw/t", 2),)))
    client.recv_packet()
    paho.connected(broker, "pub", 5).publish("uw/t", b"x", qos=2)
    delivered = client.recv_packet()
    assert isinstance(delivered, Publish) and delivered.qos == 2
    client.send(Unsubscribe(2, ("uw/t",)))
    assert isinstance(client.recv_packet(), Unsuback)
    client.send(Pubrec(delivered.packet_id))
    pubrel = client.recv_packet()
    assert isinstance(pubrel, Pubrel) and pubrel.packet_id == delivered.packet_id
    client.send(Pubcomp(delivered.packet_id))


def test_shared_member_refusing_a_message_does_not_pass_it_on(broker, raw, paho):
    """[MQTT-4.8.2-6] a member answering PUBACK >= 0x80: the message is dropped, not offered to
    another member."""
    from support.rawclient import NoPacket

    members = []
    for index in range(2):
        member = raw(broker, 5)
        member.connect_ok(f"member{index}")
        member.send(Subscribe(1, (Subscription("$share/g/sh/t", 1),)))
        assert member.recv_packet().reason_codes == (1,)
        members.append(member)
    publisher = paho.connected(broker, "pub", 5)
    publisher.publish("sh/t", b"refused", qos=1)
    publisher.publish("sh/t", b"m2", qos=1)
    publisher.publish("sh/t", b"m3", qos=1)
    seen: list[bytes] = []
    deadline = time.monotonic() + 2.0
    while len(seen) < 3:
        assert time.monotonic() < deadline, f"only {seen} arrived"
        for member in members:
            try:
                packet = member.recv_packet(timeout=0.05)
            except NoPacket:
                continue
            seen.append(bytes(packet.payload))
            member.send(Puback(packet.packet_id, reason_code=0x80 if packet.payload == b"refused" else 0))
    assert sorted(seen) == [b"m2", b"m3", b"refused"], seen
    for member in members:
        try:
            extra = member.recv_packet(timeout=0.3)
        except NoPacket:
            continue
        raise AssertionError(f"the refused message was offered again: {extra!r}")
