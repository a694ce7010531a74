"""kushi.Server beyond the wire protocol: options, hooks on the message path, the inline client.

Real broker, real paho clients; each check waits on a condition with a timeout.
"""

from __future__ import annotations

import dataclasses
import queue

import pytest

from kushi.hooks.base import Hook
from kushi.protocol.codec import encode
from kushi.protocol.packets import Connect, Publish
from support.waiting import wait_until


def test_max_clients_refuses_the_one_too_many(make_broker, paho, raw):
    """Options.max_clients: the next client is refused (v5 0x97 quota exceeded), the others stay."""
    broker = make_broker(max_clients=1)
    first = paho.connected(broker, "first", 5)
    client = raw(broker, 5)
    client.send(Connect(client_id="second"))
    client.expect_connack_refusal(0x97)
    first.subscribe("still/here", 0)
    first.publish("still/here", b"yes")
    first.expect_message("still/here", b"yes")


class Shout(Hook):
    """Changes every payload: the subscriber must get the new bytes, not the received ones."""

    id = "shout"

    def on_publish(self, client, packet):
        return dataclasses.replace(packet, payload=bytes(packet.payload).upper())


@pytest.mark.parametrize("version", [4, 5])
def test_payload_changed_by_on_publish_reaches_subscribers(make_broker, paho, version):
    """A QoS 0 message a hook changed is re-encoded, never forwarded as the bytes received."""
    broker = make_broker(hooks=[Shout()])
    subscriber = paho.connected(broker, "sub", version)
    subscriber.subscribe("loud/#", 0)
    paho.connected(broker, "pub", version).publish("loud/a", b"quiet", qos=0)
    subscriber.expect_message("loud/a", b"QUIET")


class NoSecretsForGuest(Hook):
    """Lets everybody subscribe to anything, but "guest" may not read secret/ topics."""

    id = "no-secrets"

    def on_acl_check(self, client, topic, write):
        if write or client.client_id != "guest":
            return True
        return not topic.startswith("secret/") or "#" in topic or "+" in topic


def test_acl_read_check_applies_to_each_delivery(make_broker, paho):
    """on_acl_check(write=False) is asked per delivery: a wildcard subscription brings no denied topic."""
    broker = make_broker(hooks=[NoSecretsForGuest()])
    guest = paho.connected(broker, "guest", 5)
    assert guest.subscribe("#", 0) == [0]
    publisher = paho.connected(broker, "pub", 5)
    publisher.publish("secret/plan", b"hidden", qos=1)
    publisher.publish("public/news", b"visible", qos=1)
    guest.expect_message("public/news", b"visible")
    guest.expect_no_message()


def test_inline_client_in_a_shared_group(broker, paho):
    """The inline client can be a member of a shared group: each message goes to one member."""
    inline: queue.Queue[bytes] = queue.Queue()
    broker.call(broker.server.subscribe("$share/g/work/+", 3, lambda t, p, m: inline.put(p)))
    member = paho.connected(broker, "member", 5)
    member.subscribe("$share/g/work/+", 1)
    publisher = paho.connected(broker, "pub", 5)
    sent = [b"job%d" % i for i in range(6)]
    for payload in sent:
        publisher.publish("work/x", payload, qos=1)
    got = []
    while len(got) < len(sent):
        try:
            got.append(inline.get(timeout=0.5))
        except queue.Empty:
            got.append(member.wait_for_message().payload)
    assert sorted(got) == sorted(sent)
    assert inline.qsize() == 0


def test_inline_unsubscribe_stops_the_callback(broker):
    """After unsubscribe the inline callback gets nothing more (checked after a control message)."""
    got: queue.Queue[str] = queue.Queue()
    broker.call(broker.server.subscribe("in/a", 1, lambda t, p, m: got.put(t)))
    broker.call(broker.server.subscribe("in/control", 2, lambda t, p, m: got.put(t)))
    broker.call(broker.server.publish("in/a", b"1"))
    assert got.get(timeout=2) == "in/a"
    broker.call(broker.server.unsubscribe("in/a", 1))
    broker.call(broker.server.publish("in/a", b"2"))
    broker.call(broker.server.publish("in/control", b"3"))
    assert got.get(timeout=2) == "in/control"
    assert got.empty()


def test_async_inline_callback(broker):
    """A coroutine callback is run on the broker's loop."""
    got: queue.Queue[bytes] = queue.Queue()

    async def on_message(topic, payload, packet):
        got.put(payload)

    broker.call(broker.server.subscribe("async/#", 1, on_message))
    broker.call(broker.server.publish("async/x", b"awaited", qos=1))
    assert got.get(timeout=2) == b"awaited"


def test_clients_and_client_are_snapshots_of_the_connected_clients(broker, paho):
    """clients() / client(id): frozen ClientSnapshot records with what the CONNECT agreed, the
    session's counts and where the client came from; None for an id that is not connected."""
    import time

    from paho.mqtt.properties import Properties as PahoProperties
    from paho.mqtt.packettypes import PacketTypes

    from kushi.worker.introspection import ClientSnapshot
    from support.paho import connect_properties

    before = time.time()
    named = paho(broker, "named", 5, clean=False)
    named.client.username_pw_set("alice")
    named.connect(keepalive=30, properties=connect_properties(SessionExpiryInterval=60))
    identified = PahoProperties(PacketTypes.SUBSCRIBE)
    identified.SubscriptionIdentifier = 7
    named.subscribe("snap/#", 1, properties=identified)
    old = paho.connected(broker, "old", 4)
    clients = broker.call(broker.server.clients())
    assert sorted(client.client_id for client in clients) == ["named", "old"]
    snapshot = broker.call(broker.server.client("named"))
    assert isinstance(snapshot, ClientSnapshot)
    host, port = named.client.socket().getsockname()
    assert (snapshot.username, snapshot.protocol_version, snapshot.remote_address, snapshot.listener,
            snapshot.worker_id, snapshot.keep_alive, snapshot.clean_start,
            snapshot.session_expiry_interval, snapshot.subscriptions) == \
        ("alice", 5, (host, port), "tcp", 0, 30, False, 60, 1)
    assert before - 1 <= snapshot.connected_since <= time.time()
    assert (snapshot.inflight, snapshot.queued) == (0, 0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        snapshot.username = "mallory"   # a copy, not the live connection
    assert broker.call(broker.server.client("old")).protocol_version == 4
    subscription = broker.call(broker.server.subscriptions("named"))["snap/#"]
    assert (subscription.qos, subscription.identifier) == (1, 7)
    old.disconnect()
    wait_until(lambda: broker.call(broker.server.client("old")) is None)
    assert broker.call(broker.server.client("nobody")) is None


def test_disconnect_client(broker, paho):
    """disconnect_client: v5 DISCONNECT with the given reason; False for an unknown client id."""
    client = paho.connected(broker, "victim", 5)
    assert broker.call(broker.server.disconnect_client("victim", 0x98)) is True
    assert int(getattr(client.wait_disconnected(), "value", -1)) == 0x98
    assert broker.call(broker.server.disconnect_client("nobody")) is False


def test_session_moves_between_brokers_with_export_and_import(make_broker, paho):
    """The cluster seam: a session exported from one broker and imported into another keeps its
    subscriptions and queued messages; the client resumes it there with Session Present."""
    import time

    from support.paho import connect_properties

    first, second = make_broker(), make_broker()
    properties = connect_properties(SessionExpiryInterval=60)
    client = paho(first, "mover", 5, clean=False)
    client.connect(properties=properties)
    client.subscribe("move/#", 1)
    client.disconnect()
    paho.connected(first, "pub", 5).publish("move/a", b"queued", qos=1)
    session = first.sync(first.server.broker.export_session, "mover", time.monotonic())
    assert session is not None and first.call(first.server.client("mover")) is None
    second.sync(second.server.broker.import_session, session)
    again = paho(second, "mover", 5, clean=False)
    flags, _, _ = again.connect(properties=properties)
    assert flags.session_present
    again.expect_message("move/a", b"queued")
    paho.connected(second, "pub2", 5).publish("move/b", b"live", qos=1)
    again.expect_message("move/b", b"live")


class SlowLogin(Hook):
    """An asynchronous authentication hook that takes a moment."""

    id = "slow-login"

    async def on_connect_authenticate(self, client, packet):
        import asyncio

        await asyncio.sleep(0.05)  # an awaited hook, as a database lookup would be
        return packet.username == "ok"


@pytest.mark.parametrize("version", [4, 5])
def test_packets_sent_behind_the_connect_wait_for_an_async_hook(make_broker, raw, version):
    """CONNECT and SUBSCRIBE in one write: the SUBSCRIBE is answered after the CONNACK,
    once the awaited hook said yes [MQTT-3.2.0-1]."""
    from kushi.protocol.codec import encode
    from kushi.protocol.packets import Connack, Suback, Subscribe, Subscription

    broker = make_broker(hooks=[SlowLogin()])
    client = raw(broker, version)
    client.send(encode(Connect(version, "piped", username="ok"), version)
                + encode(Subscribe(1, (Subscription("p/#", 1),)), version))
    assert isinstance(client.recv_packet(), Connack)
    suback = client.recv_packet()
    assert isinstance(suback, Suback) and suback.reason_codes == (1,)


class Gate(Hook):
    """One link of a connect-time chain: notes its turn, lets in whoever its rule allows."""

    def __init__(self, name, calls, rule, awaited=False):
        self.id = name
        self.calls = calls
        self.rule = rule
        if awaited:
            self.on_connect_authenticate = self._awaited

    def on_connect_authenticate(self, client, packet):
        self.calls.append((self.id, packet.client_id))
        return self.rule(packet)

    async def _awaited(self, client, packet):
        import asyncio

        await asyncio.sleep(0.01)
        return Gate.on_connect_authenticate(self, client, packet)


@pytest.mark.parametrize("awaited", [(), ("b",), ("a", "c")])
def test_connect_hooks_run_in_order_whether_plain_or_awaited(make_broker, raw, awaited):
    """Plain hooks are answered at once and a coroutine hook is awaited, in the order added:
    a refusal by any link (before or after an awaited one) refuses the CONNECT, and links
    after a refusal are not asked; a hook that raises refuses, the broker goes on."""
    calls = []
    rules = {"a": lambda p: p.username != "a-says-no",
             "b": lambda p: p.username != "b-says-no",
             "c": lambda p: (1 / 0) if p.username == "c-raises" else p.username != "c-says-no"}
    broker = make_broker(hooks=[Gate(name, calls, rule, name in awaited) for name, rule in rules.items()])
    for who, asked, code in [("a-says-no", "a", 0x86), ("b-says-no", "ab", 0x86),
                             ("c-says-no", "abc", 0x86), ("c-raises", "abc", 0x80)]:
        calls.clear()
        client = raw(broker, 5)
        client.send(encode(Connect(5, who, username=who), 5))
        assert client.recv_packet().reason_code == code
        assert client.expect_closed()
        assert calls == [(name, who) for name in asked]
    calls.clear()
    client = raw(broker, 5)
    assert client.connect_ok("welcome", username="ok").reason_code == 0
    assert calls == [("a", "welcome"), ("b", "welcome"), ("c", "welcome")]


@pytest.mark.parametrize("setting", [
    {"receive_maximum": 0}, {"maximum_qos": 3}, {"topic_alias_maximum": 70000},
    {"server_keep_alive": -1}, {"connect_timeout": 0},
])
def test_options_refuse_values_the_protocol_cannot_carry(setting):
    import kushi
    from kushi.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match=next(iter(setting))):
        kushi.Options(**setting)


def test_maximum_qos_downgrades_what_a_v311_client_publishes(make_broker, paho):
    """Options.maximum_qos=1: a 3.1.1 client (never told the maximum) publishing QoS 2 completes
    its flow and the message goes on at QoS 1; a v5 client is told Maximum QoS 1 in CONNACK."""
    broker = make_broker(maximum_qos=1)
    subscriber = paho.connected(broker, "sub", 4)
    assert subscriber.subscribe("mq/#", 2) == [1]
    paho.connected(broker, "pub", 4).publish("mq/a", b"two", qos=2)
    assert subscriber.expect_message("mq/a", b"two").qos == 1
    _, _, properties = paho(broker, "five", 5).connect()
    assert properties.MaximumQoS == 1


def test_clients_cannot_publish_into_sys(broker, paho, raw):
    """$SYS belongs to the server: a client's PUBLISH there is refused (v5 PUBACK 0x87) and not
    delivered, while the server's own (inline) $SYS messages are."""
    from kushi.protocol.packets import Puback, Publish

    watcher = paho.connected(broker, "watcher", 5)
    watcher.subscribe("$SYS/#", 0)
    faker = raw(broker, 5)
    faker.connect_ok("faker")
    faker.send(Publish("$SYS/broker/clients/connected", b"9999", qos=1, packet_id=1))
    answer = faker.recv_packet()
    assert isinstance(answer, Puback) and answer.reason_code == 0x87
    broker.call(broker.server.publish("$SYS/broker/version", b"kushi"))
    watcher.expect_message("$SYS/broker/version", b"kushi")


class Recorder(Hook):
    """Records on_published calls."""

    id = "recorder"

    def __init__(self) -> None:
        self.published: queue.Queue[tuple[str, str]] = queue.Queue()

    def on_published(self, client, packet):
        self.published.put((client.client_id, packet.topic))


def test_on_published_fires_for_client_and_inline_publishes(make_broker, paho):
    """on_published: for a client's PUBLISH (its ClientInfo) and for Server.publish ("inline")."""
    recorder = Recorder()
    broker = make_broker(hooks=[recorder])
    paho.connected(broker, "talker", 5).publish("rec/a", b"1", qos=1)
    assert recorder.published.get(timeout=2) == ("talker", "rec/a")
    broker.call(broker.server.publish("rec/b", b"2"))
    assert recorder.published.get(timeout=2) == ("inline", "rec/b")


def test_subscriptions_of_a_session(broker, paho):
    """Server.subscriptions(client_id): filter -> options, kept while the session is away."""
    from support.paho import connect_properties
    from paho.mqtt.subscribeoptions import SubscribeOptions

    client = paho(broker, "lister", 5, clean=False)
    client.connect(properties=connect_properties(SessionExpiryInterval=60))
    client.subscribe("a/+", 1)
    client.subscribe("b/#", options=SubscribeOptions(qos=2, noLocal=True))
    client.disconnect()
    subscriptions = broker.call(broker.server.subscriptions("lister"))
    assert sorted(subscriptions) == ["a/+", "b/#"]
    assert subscriptions["a/+"].qos == 1 and not subscriptions["a/+"].no_local
    assert subscriptions["b/#"].qos == 2 and subscriptions["b/#"].no_local
    assert broker.call(broker.server.subscriptions("nobody")) == {}


class Switchable(Hook):
    """Allows everything until ``deny_reads`` is set: then no client may receive anything."""

    id = "switchable"
    deny_reads = False

    def on_acl_check(self, client, topic, write):
        return write or not self.deny_reads or topic == "control"


def test_acl_is_asked_again_at_each_delivery(make_broker, paho):
    """on_acl_check(write=False) per delivery: a rule that changes after the subscription applies
    to the next message (the control topic stays allowed and must arrive)."""
    hook = Switchable()
    broker = make_broker(hooks=[hook])
    reader = paho.connected(broker, "reader", 4)
    reader.subscribe("#", 1)
    publisher = paho.connected(broker, "pub", 4)
    publisher.publish("news", b"before", qos=1)
    reader.expect_message("news", b"before")
    hook.deny_reads = True
    publisher.publish("news", b"after", qos=1)
    publisher.publish("control", b"still", qos=1)
    reader.expect_message("control", b"still")
    reader.expect_no_message()


class Stamp(Hook):
    """Rewrites every outgoing PUBLISH payload for client "stamped" and records what was sent."""

    id = "stamp"

    def __init__(self) -> None:
        self.sent: queue.Queue[tuple[str, int]] = queue.Queue()

    def on_packet_encode(self, client, packet):
        if isinstance(packet, Publish) and client.client_id == "stamped":
            return dataclasses.replace(packet, payload=b"stamped:" + bytes(packet.payload))
        return packet

    def on_packet_sent(self, client, packet, data):
        if isinstance(packet, Publish):
            self.sent.put((client.client_id, packet.qos))


@pytest.mark.parametrize("qos", [0, 1])
def test_outgoing_publishes_pass_the_packet_hooks(make_broker, paho, qos):
    """on_packet_encode may change an outgoing PUBLISH (QoS 0 included, which is otherwise
    forwarded as the received bytes); on_packet_sent sees it."""
    hook = Stamp()
    broker = make_broker(hooks=[hook])
    stamped = paho.connected(broker, "stamped", 4)
    stamped.subscribe("s/#", qos)
    plain = paho.connected(broker, "plain", 4)
    plain.subscribe("s/#", qos)
    paho.connected(broker, "pub", 4).publish("s/x", b"hi", qos=qos)
    stamped.expect_message("s/x", b"stamped:hi")
    plain.expect_message("s/x", b"hi")
    sent = sorted(hook.sent.get(timeout=2) for _ in range(2))
    assert sent == [("plain", qos), ("stamped", qos)]


class KeptRetained(Hook):
    """A storage hook that kept one retained message from an earlier run."""

    id = "kept-retained"

    def stored_retained(self):
        return [Publish("kept/topic", b"from before", qos=1, retain=True)]


def test_retained_messages_restored_from_a_storage_hook(make_broker, paho):
    """Server.start() loads stored_retained() from the hooks: a new subscriber gets them."""
    broker = make_broker(hooks=[KeptRetained()])
    client = paho.connected(broker, "late", 5)
    client.subscribe("kept/#", 1)
    message = client.expect_message("kept/topic", b"from before")
    assert message.retain
