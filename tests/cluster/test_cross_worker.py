"""One broker over several workers: clients forced onto different workers see one broker.

A client is "on worker N" when the server side of its TCP connection is held
by worker N's process (``KushiCluster.worker_of``); a client that lands on
the wrong worker reconnects until it lands where the test wants it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from tests.support.paho import PahoClient, connect_properties, publish_properties, subscribe_properties

from cluster_support import KushiCluster, running_cluster

pytestmark = pytest.mark.timeout(180)
ATTEMPTS = 60


@pytest.fixture(scope="module")
def cluster() -> Iterator[KushiCluster]:
    with running_cluster(3) as cluster:
        yield cluster


@pytest.fixture
def clients(request) -> Iterator[list[PahoClient]]:
    made: list[PahoClient] = []
    yield made
    if "cluster" in request.fixturenames:
        cluster = request.getfixturevalue("cluster")
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            print("the cluster's log:\n" + cluster.log())
        trouble = [line for line in cluster.lines   # a worker dying would explain a failure: say so
                   if " died " in line or "Traceback" in line or " ERROR " in line]
        assert not trouble, "\n".join(trouble)
    for client in made:
        client.stop()


def client_on(cluster: KushiCluster, made: list[PahoClient], client_id: str,
              accept: Callable[[int], bool], clean: bool = True,
              version: int = 5, properties: Properties | None = None) -> tuple[PahoClient, int]:
    """A connected client (CONNECT ``properties``) whose connection a worker accepted by ``accept(worker_id)``."""
    for _ in range(ATTEMPTS):
        client = PahoClient(cluster.host, cluster.port, client_id, version, clean=clean)
        made.append(client)
        client.connect(properties=properties)
        worker = cluster.worker_of(client.client.socket().getsockname()[1])
        if worker is not None and accept(worker):
            return client, worker
        client.disconnect()
    raise AssertionError(f"{client_id}: no connection landed on a wanted worker in {ATTEMPTS} attempts")


def receive(client: PahoClient, count: int, timeout: float) -> list[bytes]:
    """``count`` message payloads, in arrival order; AssertionError if they do not all come in time."""
    payloads = []
    deadline = time.monotonic() + timeout
    while len(payloads) < count:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"only {len(payloads)} of {count} messages arrived"
        payloads.append(client.wait_for_message(timeout=remaining).payload)
    return payloads


def test_a_subscriber_gets_messages_published_on_another_worker(cluster, clients) -> None:
    """[invariant 1] QoS 0 and 1 messages cross workers, in publish order, right after the SUBACK."""
    subscriber, sub_worker = client_on(cluster, clients, "x-sub", lambda w: True)
    subscriber.subscribe("cross/#", qos=1)
    publisher, pub_worker = client_on(cluster, clients, "x-pub", lambda w: w != sub_worker)
    for index in range(50):
        publisher.publish(f"cross/{index % 3}", str(index).encode(), qos=index % 2)
    assert receive(subscriber, 50, 10) == [str(i).encode() for i in range(50)]


def test_retained_message_set_on_one_worker_is_served_by_every_worker(cluster, clients) -> None:
    """[invariant 3] A retained message published on one worker is answered by all of them."""
    publisher, pub_worker = client_on(cluster, clients, "r-pub", lambda w: True)
    publisher.publish("retained/one", b"kept", qos=1, retain=True)
    for worker in range(3):
        subscriber, _ = client_on(cluster, clients, f"r-sub{worker}", lambda w, want=worker: w == want)
        subscriber.subscribe("retained/one", qos=1)
        message = subscriber.wait_for_message(timeout=5)
        assert (message.topic, message.payload, message.retain) == ("retained/one", b"kept", True)
    publisher.publish("retained/one", b"", qos=1, retain=True)   # an empty payload clears it everywhere
    publisher.publish("retained/control", b"c", qos=1, retain=True)
    for worker in range(3):
        subscriber, _ = client_on(cluster, clients, f"r-clr{worker}", lambda w, want=worker: w == want)
        subscriber.subscribe_many([("retained/one", 1), ("retained/control", 1)])
        assert subscriber.wait_for_message(timeout=5).topic == "retained/control"
        subscriber.expect_no_message()


def test_concurrent_retains_on_one_topic_converge_on_every_worker(cluster, clients) -> None:
    """[invariant 3] Publishers on two workers race on one retained topic; all workers end equal."""
    first, first_worker = client_on(cluster, clients, "c-pub0", lambda w: True)
    second, _ = client_on(cluster, clients, "c-pub1", lambda w: w != first_worker)

    def hammer(client: PahoClient, name: str) -> None:
        for index in range(100):
            client.client.publish("race/t", f"{name}:{index}".encode(), qos=0, retain=True)
        client.publish("race/done", name.encode(), qos=1)   # completes after the QoS 0 ones

    threads = [threading.Thread(target=hammer, args=(client, name))
               for client, name in ((first, "a"), (second, "b"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    deadline = time.monotonic() + 10
    while True:
        answers = []
        for worker in range(3):
            subscriber, _ = client_on(cluster, clients, f"c-sub{worker}", lambda w, want=worker: w == want)
            subscriber.subscribe("race/t", qos=0)
            answers.append(subscriber.wait_for_message(timeout=5).payload)
            subscriber.disconnect()
        if len(set(answers)) == 1 or time.monotonic() > deadline:
            break
    assert len(set(answers)) == 1, answers
    assert answers[0] in (b"a:99", b"b:99")  # the last write of one of the two publishers


@pytest.fixture(scope="module")
def roomy_cluster(tmp_path_factory) -> Iterator[KushiCluster]:
    """Two workers whose sessions may queue 20,000 messages.

    A publisher is faster than a paho subscriber, so the subscriber's queue
    must hold the backlog (the default of 1000 drops the oldest, by design,
    with one worker as with several).
    """
    config = tmp_path_factory.mktemp("roomy") / "kushi.yaml"
    config.write_text("options:\n  max_queued_messages: 20000\n")
    with running_cluster(2, "--config", str(config)) as cluster:
        yield cluster


def stream(roomy_cluster: KushiCluster, clients: list[PahoClient], name: str, count: int,
           qos: int) -> tuple[PahoClient, list[bytes]]:
    """``count`` messages at ``qos`` from a publisher on one worker to a subscriber on the other."""
    subscriber, sub_worker = client_on(roomy_cluster, clients, f"{name}-sub", lambda w: True)
    subscriber.subscribe(f"{name}/t", qos=qos)
    publisher, _ = client_on(roomy_cluster, clients, f"{name}-pub", lambda w: w != sub_worker)
    infos = [publisher.client.publish(f"{name}/t", str(index).encode(), qos=qos) for index in range(count)]
    payloads = receive(subscriber, count, 150)
    infos[-1].wait_for_publish(timeout=30)
    assert all(info.is_published() for info in infos)
    return subscriber, payloads


def test_twenty_thousand_qos1_messages_cross_workers_all_and_in_order(roomy_cluster, clients) -> None:
    """[issue 3] 20,000 QoS 1 messages from a publisher on one worker to a subscriber on another."""
    _, payloads = stream(roomy_cluster, clients, "bulk1", 20_000, qos=1)
    assert [int(payload) for payload in payloads] == list(range(20_000))


def test_twenty_thousand_qos2_messages_cross_workers_exactly_once(roomy_cluster, clients) -> None:
    """[issue 3] 20,000 QoS 2 messages across workers: each arrives exactly once, in order."""
    subscriber, payloads = stream(roomy_cluster, clients, "bulk2", 20_000, qos=2)
    assert [int(payload) for payload in payloads] == list(range(20_000))
    subscriber.expect_no_message()   # and nothing after the last one: no duplicate came late


def pair_on_two_workers(cluster: KushiCluster, clients: list[PahoClient], name: str,
                        subscribe: Callable[[PahoClient], object],
                        subscriber_version: int = 5) -> tuple[PahoClient, PahoClient]:
    """A subscriber that has made its subscriptions, then a publisher on another worker.

    The publisher connects after the SUBACKs on purpose: a publish racing a
    SUBACK across workers can miss the new subscription until the broker
    holds the SUBACK for ``fabric.barrier()`` (see the cluster notes).
    """
    subscriber, sub_worker = client_on(cluster, clients, f"{name}-sub", lambda w: True,
                                       version=subscriber_version)
    subscribe(subscriber)
    publisher, pub_worker = client_on(cluster, clients, f"{name}-pub", lambda w: w != sub_worker)
    print(f"{name}: subscriber on worker {sub_worker}, publisher on worker {pub_worker}")  # shown on failure
    return subscriber, publisher


def test_every_publish_property_survives_the_bus(cluster, clients) -> None:
    """[invariant 1] MQTT 5 properties reach a subscriber on another worker unchanged."""
    subscriber, publisher = pair_on_two_workers(cluster, clients, "props",
                                                lambda sub: sub.subscribe("props/t", qos=1))
    properties = publish_properties(UserProperty=[("k", "v"), ("k", "w")], ContentType="text/plain",
                                    ResponseTopic="reply/here", CorrelationData=b"\x00\x01",
                                    PayloadFormatIndicator=1, MessageExpiryInterval=120)
    publisher.publish("props/t", b"body", qos=1, properties=properties)
    got = subscriber.wait_for_message(timeout=5).properties
    assert got.UserProperty == [("k", "v"), ("k", "w")]
    assert (got.ContentType, got.ResponseTopic, got.CorrelationData, got.PayloadFormatIndicator) == \
        ("text/plain", "reply/here", b"\x00\x01", 1)
    assert 0 < got.MessageExpiryInterval <= 120


def test_subscription_identifier_and_granted_qos_are_the_subscribers_own(cluster, clients) -> None:
    """[MQTT-3.3.4-3] The subscriber's worker applies its identifier and its granted QoS (downgrade)."""
    subscriber, publisher = pair_on_two_workers(
        cluster, clients, "subid",
        lambda sub: sub.subscribe("subid/#", qos=0, properties=subscribe_properties(SubscriptionIdentifier=7)))
    publisher.publish("subid/t", b"x", qos=1)
    message = subscriber.wait_for_message(timeout=5)
    assert message.qos == 0 and message.properties.SubscriptionIdentifier == [7]


def test_a_v311_subscriber_gets_a_v5_publishers_message_from_another_worker(cluster, clients) -> None:
    """Protocol versions mix across workers: the v3.1.1 subscriber gets a v3.1.1 PUBLISH."""
    subscriber, publisher = pair_on_two_workers(cluster, clients, "mixed",
                                                lambda sub: sub.subscribe("mixed/t", qos=1),
                                                subscriber_version=4)
    publisher.publish("mixed/t", b"hello", qos=1, properties=publish_properties(ContentType="x"))
    message = subscriber.wait_for_message(timeout=5)
    assert (message.topic, message.payload, message.qos) == ("mixed/t", b"hello", 1)


def test_retain_as_published_holds_across_workers(cluster, clients) -> None:
    """[MQTT-3.3.1-12/13] The retain flag of a live message follows the subscriber's option."""
    def subscribe(sub: PahoClient) -> None:
        sub.subscribe("rap/keep", options=SubscribeOptions(qos=1, retainAsPublished=True))
        sub.subscribe("rap/clear", options=SubscribeOptions(qos=1, retainAsPublished=False))

    subscriber, publisher = pair_on_two_workers(cluster, clients, "rap", subscribe)
    publisher.publish("rap/keep", b"a", qos=1, retain=True)
    publisher.publish("rap/clear", b"b", qos=1, retain=True)
    flags = {}
    for _ in range(2):
        message = subscriber.wait_for_message(timeout=5)
        flags[message.topic] = message.retain
    assert flags == {"rap/keep": True, "rap/clear": False}
    for topic in ("rap/keep", "rap/clear"):
        publisher.publish(topic, b"", qos=1, retain=True)   # leave no retained message behind


def test_a_topic_alias_of_the_publisher_does_not_cross_the_bus(cluster, clients) -> None:
    """[MQTT-3.3.2-12] An alias is per connection: the other worker's subscriber sees the topic name."""
    subscriber, publisher = pair_on_two_workers(cluster, clients, "alias",
                                                lambda sub: sub.subscribe("alias/#", qos=1))
    publisher.publish("alias/long/topic", b"1", qos=1, properties=publish_properties(TopicAlias=3))
    publisher.publish("", b"2", qos=1, properties=publish_properties(TopicAlias=3))
    topics = [subscriber.wait_for_message(timeout=5).topic for _ in range(2)]
    assert topics == ["alias/long/topic", "alias/long/topic"]


@pytest.mark.parametrize("publisher_version", [4, 5])
def test_runs_of_messages_cross_the_bus_to_every_kind_of_subscriber(cluster, clients,
                                                                    publisher_version) -> None:
    """[invariant 1, issue 5] A burst on one topic in one write crosses the bus as one run of the
    bytes received (kushi.cluster.wire): subscribers of either version, one with a subscription
    identifier (not the received bytes), get every message once, in order, at their QoS."""
    from cluster_support import raw_client_on

    from kushi.protocol.codec import encode
    from kushi.protocol.packets import Puback, Publish

    name = f"run{publisher_version}"
    v5, sub_worker = client_on(cluster, clients, f"{name}-v5", lambda w: True)
    v311, _ = client_on(cluster, clients, f"{name}-v311", lambda w: w == sub_worker, version=4)
    tagged, _ = client_on(cluster, clients, f"{name}-id", lambda w: w == sub_worker)
    v5.subscribe(f"{name}/t", qos=1)
    v311.subscribe(f"{name}/t", qos=1)
    tagged.subscribe(f"{name}/t", qos=0, properties=subscribe_properties(SubscriptionIdentifier=3))
    publisher, _ = raw_client_on(cluster, lambda w: w != sub_worker)
    publisher.connect_ok(f"{name}-pub", version=publisher_version)
    count = 200
    burst = [Publish(f"{name}/t", str(index).encode(), qos=index // 100, packet_id=index or None)
             for index in range(count)]   # 100 at QoS 0, then 100 at QoS 1: two runs
    publisher.send(b"".join(encode(packet, publisher_version) for packet in burst))
    assert [publisher.recv_packet() for _ in range(100)] == [Puback(index) for index in range(100, 200)]
    for subscriber, qos_of in ((v5, lambda i: i // 100), (v311, lambda i: i // 100), (tagged, lambda i: 0)):
        messages = [subscriber.wait_for_message(timeout=10) for _ in range(count)]
        assert [(int(m.payload), m.qos) for m in messages] == [(i, qos_of(i)) for i in range(count)]
        subscriber.expect_no_message()
    assert tagged.messages.empty() and messages[0].properties.SubscriptionIdentifier == [3]


def test_a_qos0_run_is_written_on_as_it_crossed_within_each_maximum_packet_size(cluster, clients) -> None:
    """[invariant 1, issue 5, MQTT-3.1.2-25] A QoS 0 run that crossed the bus goes to the
    subscribers that take it as received in the bytes that crossed (kushi.cluster.wire.ReceivedRun):
    every message once, in order. A run with a message larger than one subscriber's Maximum
    Packet Size goes message by message: that subscriber gets the others, the rest get all."""
    from cluster_support import raw_client_on

    from kushi.protocol.codec import encode
    from kushi.protocol.packets import Publish

    plain, sub_worker = client_on(cluster, clients, "asrun-plain", lambda w: True)
    small, _ = client_on(cluster, clients, "asrun-small", lambda w: w == sub_worker,
                         properties=connect_properties(MaximumPacketSize=64))
    plain.subscribe("asrun/t", qos=0)
    small.subscribe("asrun/t", qos=0)
    publisher, _ = raw_client_on(cluster, lambda w: w != sub_worker)
    publisher.connect_ok("asrun-pub", version=5)
    for payloads in ([b"%d" % i for i in range(100)],                                  # all fit
                     [b"%d" % i + (b"" if i % 10 else b"x" * 100) for i in range(100)]):  # not all
        publisher.send(b"".join(encode(Publish("asrun/t", payload), 5) for payload in payloads))
        assert receive(plain, len(payloads), 10) == payloads
        fitting = [payload for payload in payloads if len(payload) < 40]
        assert receive(small, len(fitting), 10) == fitting
        plain.expect_no_message()
        small.expect_no_message()


def test_a_qos1_run_that_crossed_is_resent_from_its_bytes_to_a_subscriber_back(cluster, clients) -> None:
    """[MQTT-4.4.0-1, issue 5] A QoS 1 run that crossed the bus is written on in the bytes that
    crossed, its in-flight records reading the messages from them only when asked
    (kushi.worker.session.RunOutbound): a subscriber that did not acknowledge them and comes back,
    on that worker or another, gets each again with DUP set, its packet id, in order."""
    from cluster_support import raw_client_on

    from kushi.protocol.codec import encode
    from kushi.protocol.packets import Puback, Publish, Suback, Subscribe, Subscription

    subscriber, sub_worker = raw_client_on(cluster, lambda w: True)
    subscriber.connect_ok("resend-sub", version=4, clean_start=False)
    subscriber.send(Subscribe(1, (Subscription("resend/t", 1),)))
    assert isinstance(subscriber.recv_packet(), Suback)
    publisher, _ = raw_client_on(cluster, lambda w: w != sub_worker)
    publisher.connect_ok("resend-pub", version=4)
    payloads = [b"%d" % index for index in range(50)]
    publisher.send(b"".join(encode(Publish("resend/t", payload, 1, packet_id=index + 1), 4)
                            for index, payload in enumerate(payloads)))
    assert [publisher.recv_packet() for _ in payloads] == [Puback(index + 1) for index in range(50)]
    first = [subscriber.recv_packet() for _ in payloads]
    assert [(packet.payload, packet.qos, packet.dup) for packet in first] == [(p, 1, False) for p in payloads]
    assert len({packet.packet_id for packet in first}) == len(payloads)
    subscriber.close()   # nothing acknowledged
    again, _ = raw_client_on(cluster, lambda w: True)
    assert again.connect_ok("resend-sub", version=4, clean_start=False).session_present
    resent = [again.recv_packet() for _ in payloads]
    assert [(packet.payload, packet.dup, packet.packet_id) for packet in resent] == \
        [(packet.payload, True, packet.packet_id) for packet in first]
    again.send(b"".join(encode(Puback(packet.packet_id), 4) for packet in resent))
    again.close()


def test_large_qos1_messages_read_several_at_once_cross_the_bus_whole_and_in_order(cluster, clients) -> None:
    """[issue 5] 64 KiB PUBLISH packets sent back to back land several to a read on the
    publisher's worker, as views of landing buffers (kushi.protocol.reader) that are not used
    again while a message in them is in flight; they reach a subscriber on another worker
    (across the bus) and one on the same worker whole, in order."""
    from cluster_support import raw_client_on

    from kushi.protocol.codec import encode
    from kushi.protocol.packets import Puback, Publish, Suback, Subscribe, Subscription

    subscriber, sub_worker = raw_client_on(cluster, lambda w: True)
    subscriber.connect_ok("large-sub", version=4)
    publisher, pub_worker = raw_client_on(cluster, lambda w: w != sub_worker)
    publisher.connect_ok("large-pub", version=4)
    local, _ = raw_client_on(cluster, lambda w: w == pub_worker)
    local.connect_ok("large-local", version=4)
    for client in (subscriber, local):
        client.send(Subscribe(1, (Subscription("large/t", 1),)))
        assert isinstance(client.recv_packet(), Suback)
    payloads = [bytes([index]) * 65_536 for index in range(60)]   # more than the buffers kept
    publisher.send(b"".join(encode(Publish("large/t", payload, 1, packet_id=index + 1), 4)
                            for index, payload in enumerate(payloads)))
    assert [publisher.recv_packet() for _ in payloads] == [Puback(index + 1) for index in range(60)]
    for client in (subscriber, local):
        received = [client.recv_packet() for _ in payloads]
        assert [packet.payload for packet in received] == payloads
        client.send(b"".join(encode(Puback(packet.packet_id), 4) for packet in received))
    for client in (subscriber, local, publisher):
        client.close()
