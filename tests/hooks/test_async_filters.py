"""Coroutine message-path filters in a running broker (issue 4: "Hooks may be plain functions
or coroutines"): each one fires when docs/hooks.md says and its result takes effect; packets
and messages keep their order; a slow coroutine pauses its own client only.

The hooks here await ``asyncio.sleep`` (a few random milliseconds, or an event the test sets):
that is the hooks' behaviour under test, standing in for a database, not the test waiting.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import threading
from typing import Any

import pytest

import kushi
from kushi.hooks.base import PublishRejected
from kushi.protocol.codec import encode
from kushi.protocol.packets import (
    Publish, Puback, Pubrec, Suback, Subscribe, Subscription, Unsubscribe, Will,
)
from kushi.worker.async_filters import DELIVERY_BACKLOG
from support.rawclient import NoPacket
from support.waiting import let_time_pass, wait_until


async def _jitter() -> None:
    """A coroutine hook's own latency: a random few milliseconds (or none)."""
    await asyncio.sleep(random.choice((0, 0, random.uniform(0, 0.003))))


class AsyncAcl(kushi.Hook):
    """An ACL behind an (imagined) async database: the topics and filters it refuses."""

    id = "async-acl"

    def __init__(self, refuse_write: tuple[str, ...] = (), refuse_read: tuple[str, ...] = (),
                 refuse_read_for: dict[str, str] | None = None) -> None:
        self.refuse_write = refuse_write
        self.refuse_read = refuse_read
        self.refuse_read_for = refuse_read_for or {}   # client id -> topic prefix it may not read
        self.asked: list[tuple[str, str, bool]] = []

    async def on_acl_check(self, client: Any, topic: str, write: bool) -> bool:
        await _jitter()
        self.asked.append((client.client_id, topic, write))
        if write:
            return not topic.startswith(self.refuse_write)
        prefix = self.refuse_read_for.get(client.client_id)
        return not topic.startswith(self.refuse_read) and not (prefix and topic.startswith(prefix))


def _publish_all(client: Any, packets: list[Publish]) -> None:
    """Send every packet in one write: the broker reads them together."""
    client.send(b"".join(encode(packet, client.version) for packet in packets))


def _acks(client: Any, count: int) -> list[Any]:
    return [client.recv_packet() for _ in range(count)]


def _payloads_acknowledged(subscriber: Any, count: int) -> list[int]:
    """The next ``count`` QoS 1 messages' payloads as numbers, each one acknowledged."""
    received = []
    for _ in range(count):
        message = subscriber.recv_packet()
        received.append(int(message.payload))
        subscriber.send(Puback(message.packet_id))
    return received


def _subscribed(paho: Any, running: Any, filter: str, *client_ids: str) -> list[Any]:
    """Connected paho clients, each subscribed to ``filter`` at QoS 1."""
    clients = [paho.connected(running, client_id) for client_id in client_ids]
    for client in clients:
        assert client.subscribe(filter, qos=1) == [1]
    return clients


# ---- on_acl_check: the three uses ---------------------------------------------------------

def test_an_async_acl_refusing_a_publish_gives_puback_0x87_and_nothing_is_delivered(
        make_broker, raw, paho) -> None:
    acl = AsyncAcl(refuse_write=("denied/",))
    running = make_broker(hooks=[acl])
    watcher = paho.connected(running, "watcher")
    watcher.subscribe("#", qos=1)
    publisher = raw(running)
    publisher.connect_ok("pub")
    _publish_all(publisher, [Publish("denied/x", b"no", 1, packet_id=1),
                             Publish("open/x", b"yes", 1, packet_id=2)])
    assert _acks(publisher, 2) == [Puback(1, 0x87), Puback(2, 0)]
    watcher.expect_message("open/x", b"yes")           # the refused one never came before it
    assert ("pub", "denied/x", True) in acl.asked and ("watcher", "open/x", False) in acl.asked


def test_an_async_acl_refusing_a_subscription_gives_suback_0x87(make_broker, raw) -> None:
    acl = AsyncAcl(refuse_read=("secret/",))
    running = make_broker(hooks=[acl])
    client = raw(running)
    client.connect_ok("sub")
    client.send(Subscribe(1, (Subscription("secret/#", 1), Subscription("news/#", 1),
                              Subscription("bad/#/filter", 1))))
    assert client.recv_packet() == Suback(1, (0x87, 1, 0x8F))
    assert [topic for _, topic, _ in acl.asked] == ["secret/#", "news/#"], \
        "the ACL is asked about valid filters only, in order"


def test_an_async_acl_is_asked_per_delivery_and_a_refused_reader_does_not_get_it(
        make_broker, paho) -> None:
    acl = AsyncAcl(refuse_read_for={"b": "t/private"})
    running = make_broker(hooks=[acl])
    a, b = _subscribed(paho, running, "t/#", "a", "b")
    publisher = paho.connected(running, "pub")
    publisher.publish("t/private", b"for a", qos=1)
    publisher.publish("t/public", b"for both", qos=1)
    a.expect_message("t/private", b"for a")
    a.expect_message("t/public", b"for both")
    b.expect_message("t/public", b"for both")          # t/private was refused to b only
    assert ("b", "t/private", False) in acl.asked


# ---- the other filters ------------------------------------------------------------------------

class Appender(kushi.Hook):
    """Appends ``mark`` to every published payload; ``sync`` says whether it is a coroutine."""

    def __init__(self, mark: bytes, order: list[str]) -> None:
        self.mark = mark
        self.order = order

    def change(self, packet: Publish) -> Publish:
        self.order.append(self.mark.decode())
        return dataclasses.replace(packet, payload=bytes(packet.payload) + self.mark)


class SyncAppender(Appender):
    def on_publish(self, client: Any, packet: Publish) -> Publish:
        return self.change(packet)


class AsyncAppender(Appender):
    async def on_publish(self, client: Any, packet: Publish) -> Publish:
        await _jitter()
        return self.change(packet)


def test_sync_and_async_on_publish_run_in_the_order_added_each_given_the_last_result(
        make_broker, paho) -> None:
    order: list[str] = []
    running = make_broker(hooks=[SyncAppender(b"a", order), AsyncAppender(b"b", order),
                                 SyncAppender(b"c", order), AsyncAppender(b"d", order)])
    subscriber = paho.connected(running, "sub")
    subscriber.subscribe("t", qos=1)
    paho.connected(running, "pub").publish("t", b"-", qos=1)
    subscriber.expect_message("t", b"-abcd")
    assert order == ["a", "b", "c", "d"]


class AsyncRejecter(kushi.Hook):
    async def on_publish(self, client: Any, packet: Publish) -> Publish:
        await _jitter()
        if packet.payload == b"too big":
            raise PublishRejected(0x97)
        return packet


def test_an_async_on_publish_may_reject_with_a_reason_code(make_broker, raw) -> None:
    running = make_broker(hooks=[AsyncRejecter()])
    publisher = raw(running)
    publisher.connect_ok("pub")
    _publish_all(publisher, [Publish("t", b"too big", 1, packet_id=7), Publish("t", b"fine", 1, packet_id=8)])
    assert _acks(publisher, 2) == [Puback(7, 0x97), Puback(8, 0)]


class AsyncPacketRewriter(kushi.Hook):
    """Rewrites packets as they are read, and records what on_packet_processed saw."""

    def __init__(self) -> None:
        self.processed: list[Any] = []

    async def on_packet_read(self, client: Any, packet: Any) -> Any:
        await _jitter()
        if isinstance(packet, Publish) and packet.payload == b"before":
            return dataclasses.replace(packet, payload=b"after", raw=None)
        return packet

    async def on_subscribe(self, client: Any, packet: Subscribe) -> Subscribe:
        await _jitter()
        return dataclasses.replace(packet, subscriptions=tuple(
            dataclasses.replace(s, filter="renamed/#") if s.filter == "asked/#" else s
            for s in packet.subscriptions))

    async def on_unsubscribe(self, client: Any, packet: Unsubscribe) -> Unsubscribe:
        await _jitter()
        return dataclasses.replace(packet, filters=("renamed/#",))

    def on_packet_processed(self, client: Any, packet: Any, error: BaseException | None) -> None:
        self.processed.append(packet)


def test_async_packet_read_subscribe_and_unsubscribe_rewrites_take_effect(make_broker, paho) -> None:
    hook = AsyncPacketRewriter()
    running = make_broker(hooks=[hook])
    subscriber = paho.connected(running, "sub")
    assert subscriber.subscribe("asked/#", qos=1) == [1]       # subscribed to renamed/# instead
    publisher = paho.connected(running, "pub")
    publisher.publish("renamed/x", b"before", qos=1)
    subscriber.expect_message("renamed/x", b"after")
    assert any(isinstance(p, Publish) and p.payload == b"after" for p in hook.processed)

    subscriber.unsubscribe("anything")                         # turned into renamed/#
    publisher.publish("renamed/x", b"gone", qos=1)
    subscriber.subscribe("control", qos=1)
    publisher.publish("control", b"still here", qos=1)
    subscriber.expect_message("control", b"still here")


class AsyncSelector(kushi.Hook):
    async def on_select_subscribers(self, subscribers: dict[str, Any], packet: Publish) -> dict[str, Any]:
        await _jitter()
        if packet.topic != "t":
            return subscribers
        return {key: entry for key, entry in subscribers.items() if key != "left-out"}


def test_an_async_on_select_subscribers_leaves_a_subscriber_out(make_broker, paho) -> None:
    running = make_broker(hooks=[AsyncSelector()])
    chosen = paho.connected(running, "chosen")
    left_out = paho.connected(running, "left-out")
    for client in (chosen, left_out):
        client.subscribe("t", qos=0)
    publisher = paho.connected(running, "pub")
    publisher.publish("t", b"one", qos=1)
    left_out.subscribe("control", qos=0)
    publisher.publish("control", b"two", qos=1)
    chosen.expect_message("t", b"one")
    left_out.expect_message("control", b"two")                 # not "one" before it


class AsyncWill(kushi.Hook):
    async def on_will(self, client: Any, will: Will) -> Will:
        await _jitter()
        return dataclasses.replace(will, payload=b"changed by the hook")

    async def on_acl_check(self, client: Any, topic: str, write: bool) -> bool:
        await _jitter()
        return not (write and topic == "wills/forbidden")


def test_an_async_on_will_changes_the_will_and_the_async_acl_may_refuse_it(make_broker, paho) -> None:
    running = make_broker(hooks=[AsyncWill()])
    watcher = paho.connected(running, "watcher")
    watcher.subscribe("wills/#", qos=0)
    refused = paho(running, "refused")
    refused.will_set("wills/forbidden", b"original")
    refused.connect()
    refused.drop()
    dropped = paho(running, "dropped")
    dropped.will_set("wills/dropped", b"original")
    dropped.connect()
    dropped.drop()
    watcher.expect_message("wills/dropped", b"changed by the hook")   # not the forbidden one first


# ---- order and backpressure ---------------------------------------------------------------------

class JitteryFilters(kushi.Hook):
    """A write and read ACL and an on_publish that each take a random few milliseconds."""

    async def on_acl_check(self, client: Any, topic: str, write: bool) -> bool:
        await asyncio.sleep(random.uniform(0, 0.002))
        return True

    async def on_publish(self, client: Any, packet: Publish) -> Publish:
        await asyncio.sleep(random.uniform(0, 0.002))
        return packet


def test_500_qos1_messages_keep_their_publisher_s_order_and_their_acks_too(make_broker, raw) -> None:
    running = make_broker(hooks=[JitteryFilters()])
    subscriber = raw(running)
    subscriber.connect_ok("sub")
    subscriber.send(Subscribe(1, (Subscription("ordered/#", 1),)))
    assert subscriber.recv_packet() == Suback(1, (1,))
    publisher = raw(running)
    publisher.connect_ok("pub")
    count = 500                                                # on three topics, taken in turn
    _publish_all(publisher, [Publish(f"ordered/{n % 3}", str(n).encode(), 1, packet_id=n + 1)
                             for n in range(count)])
    assert _acks(publisher, count) == [Puback(n + 1, 0) for n in range(count)]
    assert _payloads_acknowledged(subscriber, count) == list(range(count))


class Gate(kushi.Hook):
    """on_publish of client "slow" waits until the test opens the gate."""

    def __init__(self) -> None:
        self.opened = asyncio.Event()
        self.waiting = 0
        self.passed = 0

    async def on_publish(self, client: Any, packet: Publish) -> Publish:
        if client.client_id == "slow":
            self.waiting += 1
            await self.opened.wait()
            self.passed += 1
        return packet


def test_a_slow_coroutine_filter_pauses_reading_from_its_client_only(make_broker, raw, paho) -> None:
    gate = Gate()
    running = make_broker(hooks=[gate])
    slow = raw(running)
    slow.connect_ok("slow")
    count, size = 48, 1_000_000                                # 48 MB behind the first message
    packets = [Publish("bulk", bytes(size), 0) for _ in range(count)]
    sender = threading.Thread(target=_publish_all, args=(slow, packets), daemon=True)
    sender.start()
    wait_until(lambda: gate.waiting)

    other = paho.connected(running, "other")                  # served meanwhile
    other.subscribe("chat", qos=1)
    paho.connected(running, "talker").publish("chat", b"hello", qos=1)
    other.expect_message("chat", b"hello")
    let_time_pass(0.5)                                         # time for the broker to read on, if it did
    received = running.server.stats()["bytes_received"]
    assert sender.is_alive(), "the broker read everything: nothing held the slow client back"
    assert received < 16 * size, f"{received} bytes read while the filter waited"

    running.loop.call_soon_threadsafe(gate.opened.set)
    sender.join(20)
    assert not sender.is_alive()
    wait_until(lambda: gate.passed == count, timeout=20)


def test_a_client_that_closes_while_its_packets_wait_is_seen_gone_once_they_are_handled(
        make_broker, raw, paho) -> None:
    """Reading is paused, so the close is read after the packets before it, as without hooks."""
    gate = Gate()
    running = make_broker(hooks=[gate])
    watcher = paho.connected(running, "watcher")
    watcher.subscribe("t", qos=1)
    slow = raw(running)
    slow.connect_ok("slow")
    _publish_all(slow, [Publish("t", str(n).encode(), 1, packet_id=n + 1) for n in range(10)])
    wait_until(lambda: gate.waiting)
    slow.close()
    running.loop.call_soon_threadsafe(gate.opened.set)
    for n in range(10):
        watcher.expect_message("t", str(n).encode())
    wait_until(lambda: running.call(running.server.client("slow")) is None)
    assert running.sync(lambda: dict(running.server.broker.async_filters._inbound)) == {}


# ---- protocol errors keep their place in the order -------------------------------------------

def test_a_malformed_packet_behind_good_ones_fails_the_connection_after_them(make_broker, raw) -> None:
    running = make_broker(hooks=[JitteryFilters()])
    client = raw(running)
    client.connect_ok("pub")
    good = b"".join(encode(Publish("t", b"ok", 1, packet_id=n), 5) for n in (1, 2))
    client.send(good + b"\x00\x00")                             # packet type 0 is reserved
    assert _acks(client, 2) == [Puback(1, 0), Puback(2, 0)]
    client.expect_disconnect(0x81)


# ---- messages from the inline client and to shared groups -------------------------------------

def test_inline_client_messages_pass_the_async_read_acl_in_order(make_broker, paho) -> None:
    acl = AsyncAcl(refuse_read_for={"b": "inline/private"})
    running = make_broker(hooks=[acl, JitteryFilters()])
    a, b = _subscribed(paho, running, "inline/#", "a", "b")

    async def publish_all() -> None:
        await running.server.publish("inline/private", b"for a", qos=1)
        for n in range(100):
            await running.server.publish("inline/public", str(n).encode(), qos=1)

    running.call(publish_all())
    a.expect_message("inline/private", b"for a")
    for n in range(100):
        a.expect_message("inline/public", str(n).encode())
        b.expect_message("inline/public", str(n).encode())     # never the private one


def test_a_shared_group_member_refused_by_the_async_acl_does_not_get_the_message(
        make_broker, paho) -> None:
    acl = AsyncAcl(refuse_read_for={"refused": "work/"})
    running = make_broker(hooks=[acl])
    allowed, refused = _subscribed(paho, running, "$share/g/work/#", "allowed", "refused")
    refused.subscribe("control", qos=1)
    publisher = paho.connected(running, "pub")
    for n in range(6):                                # round robin: each member is picked in turn
        publisher.publish("work/item", str(n).encode(), qos=1)
    publisher.publish("control", b"after", qos=1)
    refused.expect_message("control", b"after")       # no work item came before it
    got = {allowed.wait_for_message().payload for _ in range(3)}
    assert got <= {str(n).encode() for n in range(6)} and len(got) == 3


# ---- what handle_publish decides before its hooks, and hooks added late --------------------

class CountingPublish(kushi.Hook):
    def __init__(self) -> None:
        self.published: list[bytes] = []

    async def on_publish(self, client: Any, packet: Publish) -> Publish:
        await _jitter()
        self.published.append(bytes(packet.payload))
        return packet


def test_a_repeated_qos2_publish_is_answered_without_calling_the_async_on_publish_again(
        make_broker, raw) -> None:
    hook = CountingPublish()
    running = make_broker(hooks=[hook])
    client = raw(running)
    client.connect_ok("pub")
    first = Publish("t", b"once", 2, packet_id=5)
    _publish_all(client, [first, dataclasses.replace(first, dup=True), Publish("t", b"next", 1, packet_id=6)])
    assert _acks(client, 3) == [Pubrec(5), Pubrec(5), Puback(6)]
    assert hook.published == [b"once", b"next"]


def test_an_async_acl_refusal_of_a_v311_publish_is_acknowledged_and_dropped(make_broker, raw, paho) -> None:
    running = make_broker(hooks=[AsyncAcl(refuse_write=("denied/",))])
    watcher = paho.connected(running, "watcher")
    watcher.subscribe("#", qos=1)
    client = raw(running, version=4)
    client.connect_ok("old")
    _publish_all(client, [Publish("denied/x", b"no", 1, packet_id=1), Publish("open/x", b"yes", 1, packet_id=2)])
    assert _acks(client, 2) == [Puback(1), Puback(2)]
    watcher.expect_message("open/x", b"yes")


def test_a_coroutine_filter_registered_after_start_takes_effect(make_broker, raw) -> None:
    running = make_broker()
    client = raw(running)
    client.connect_ok("pub")
    _publish_all(client, [Publish("denied/x", b"before", 1, packet_id=1)])
    assert _acks(client, 1) == [Puback(1)]

    running.sync(running.server.hooks.on, "on_acl_check", AsyncAcl(refuse_write=("denied/",)).on_acl_check)
    _publish_all(client, [Publish("denied/x", b"after", 1, packet_id=2), Publish("ok", b"", 1, packet_id=3)])
    assert _acks(client, 2) == [Puback(2, 0x87), Puback(3)]


def test_over_websocket_the_pipeline_keeps_the_order_too(make_broker, paho) -> None:
    running = make_broker(hooks=[JitteryFilters()])
    subscriber = paho.connected(running, "sub", transport="websockets")
    subscriber.subscribe("ws/#", qos=1)
    publisher = paho.connected(running, "pub", transport="websockets")
    infos = [publisher.client.publish(f"ws/{n % 2}", str(n).encode(), qos=1) for n in range(100)]
    for info in infos:
        info.wait_for_publish(timeout=5)
    received = [int(subscriber.wait_for_message().payload) for _ in range(100)]
    assert received == list(range(100))


class BrokenAcl(kushi.Hook):
    async def on_acl_check(self, client: Any, topic: str, write: bool) -> bool:
        await _jitter()
        if topic == "boom":
            raise RuntimeError("the ACL database is down")
        return True


def test_an_async_acl_that_raises_on_a_publish_ends_that_connection_as_a_plain_one_would(
        make_broker, raw, paho) -> None:
    running = make_broker(hooks=[BrokenAcl()])
    client = raw(running)
    client.connect_ok("pub")
    _publish_all(client, [Publish("fine", b"", 1, packet_id=1), Publish("boom", b"", 1, packet_id=2),
                          Publish("fine", b"", 1, packet_id=3)])
    assert client.recv_packet() == Puback(1)
    client.expect_disconnect(0x83)
    paho.connected(running, "other").publish("fine", b"", qos=1)   # the worker goes on


class ReadGate(kushi.Hook):
    """The read ACL of each delivery on "flood/x" waits until the test opens the gate."""

    def __init__(self) -> None:
        self.opened = asyncio.Event()

    async def on_acl_check(self, client: Any, topic: str, write: bool) -> bool:
        if topic == "flood/x" and not write:
            await self.opened.wait()
        return True


def _flood_setup(make_broker: Any, raw: Any, gate: ReadGate, qos: int) -> tuple[Any, Any, Any]:
    """A broker with ``gate``; a raw subscriber of "flood/#" at ``qos``; a raw publisher."""
    running = make_broker(hooks=[gate])
    subscriber = raw(running)
    subscriber.connect_ok("sub")
    subscriber.send(Subscribe(1, (Subscription("flood/#", qos),)))
    assert subscriber.recv_packet() == Suback(1, (qos,))
    publisher = raw(running)
    publisher.connect_ok("pub")
    return running, subscriber, publisher


def test_messages_waiting_for_their_read_acl_stop_the_publisher_at_the_backlog(make_broker, raw) -> None:
    gate = ReadGate()
    running, subscriber, publisher = _flood_setup(make_broker, raw, gate, 1)
    count = DELIVERY_BACKLOG + 500
    _publish_all(publisher, [Publish("flood/x", str(n).encode(), 1, packet_id=n + 1) for n in range(count)])
    assert _acks(publisher, DELIVERY_BACKLOG) == [Puback(n + 1) for n in range(DELIVERY_BACKLOG)]
    with pytest.raises(NoPacket):                              # the rest waits for room
        publisher.recv_packet(timeout=0.5)

    running.loop.call_soon_threadsafe(gate.opened.set)
    assert _acks(publisher, 500) == [Puback(n + 1) for n in range(DELIVERY_BACKLOG, count)]
    assert _payloads_acknowledged(subscriber, count) == list(range(count))


def test_settled_is_done_once_the_messages_queued_before_it_are_routed(make_broker, raw) -> None:
    """What a session hand-over between workers waits for (kushi.cluster.handover)."""
    gate = ReadGate()
    running, subscriber, publisher = _flood_setup(make_broker, raw, gate, 0)
    filters = running.server.broker.async_filters
    assert running.sync(lambda: filters.settled().done()), "nothing queued: done at once"

    _publish_all(publisher, [Publish("flood/x", str(n).encode(), 1, packet_id=n + 1) for n in range(3)])
    assert _acks(publisher, 3) == [Puback(1), Puback(2), Puback(3)]
    settled = running.sync(filters.settled)
    assert not settled.done()
    running.loop.call_soon_threadsafe(gate.opened.set)
    assert [subscriber.recv_packet().payload for _ in range(3)] == [b"0", b"1", b"2"]
    wait_until(settled.done)


def test_sync_and_async_acl_hooks_are_asked_in_the_order_added_and_the_first_no_stops_it(
        make_broker, raw) -> None:
    asked: list[tuple[str, str]] = []

    class SyncAllow(kushi.Hook):
        def on_acl_check(self, client: Any, topic: str, write: bool) -> bool:
            asked.append(("sync", topic))
            return True

    class AsyncRefuseSecret(kushi.Hook):
        async def on_acl_check(self, client: Any, topic: str, write: bool) -> bool:
            await _jitter()
            asked.append(("async", topic))
            return topic != "secret"

    class SyncLast(kushi.Hook):
        def on_acl_check(self, client: Any, topic: str, write: bool) -> bool:
            asked.append(("last", topic))
            return True

    running = make_broker(hooks=[SyncAllow(), AsyncRefuseSecret(), SyncLast()])
    client = raw(running)
    client.connect_ok("pub")
    _publish_all(client, [Publish("secret", b"", 1, packet_id=1), Publish("open", b"", 1, packet_id=2)])
    assert _acks(client, 2) == [Puback(1, 0x87), Puback(2)]
    assert asked == [("sync", "secret"), ("async", "secret"),
                     ("sync", "open"), ("async", "open"), ("last", "open")]


class CountingReadGate(ReadGate):
    def __init__(self) -> None:
        super().__init__()
        self.deliveries_asked = 0

    async def on_acl_check(self, client: Any, topic: str, write: bool) -> bool:
        if topic == "flood/x" and not write:
            self.deliveries_asked += 1
        return await super().on_acl_check(client, topic, write)


def test_messages_waiting_together_on_one_topic_ask_each_reader_s_acl_once(make_broker, raw) -> None:
    """As the synchronous broker asks once per run (Delivery.route_run): the ACL judges a client
    and a topic, not a message."""
    gate = CountingReadGate()
    running, subscriber, publisher = _flood_setup(make_broker, raw, gate, 0)
    count = 50
    _publish_all(publisher, [Publish("flood/x", str(n).encode(), 1, packet_id=n + 1) for n in range(count)])
    assert len(_acks(publisher, count)) == count
    running.loop.call_soon_threadsafe(gate.opened.set)
    assert [int(subscriber.recv_packet().payload) for _ in range(count)] == list(range(count))
    assert 1 <= gate.deliveries_asked < count


def test_the_inline_client_waits_while_the_delivery_backlog_is_full(make_broker, raw) -> None:
    """server.publish is held back at DELIVERY_BACKLOG waiting messages, as a client's
    connection is, and every message goes out in order once the read ACL answers."""
    gate = ReadGate()
    running, subscriber, _publisher = _flood_setup(make_broker, raw, gate, 0)
    count = DELIVERY_BACKLOG + 50
    published: list[int] = []

    async def publish_all() -> None:
        for n in range(count):
            await running.server.publish("flood/x", str(n).encode())
            published.append(n)

    done = asyncio.run_coroutine_threadsafe(publish_all(), running.loop)
    wait_until(lambda: len(published) >= DELIVERY_BACKLOG, timeout=10)
    with pytest.raises(TimeoutError):                      # the rest waits for room
        done.result(timeout=0.5)
    assert len(published) < count
    running.loop.call_soon_threadsafe(gate.opened.set)
    done.result(timeout=20)
    assert [int(subscriber.recv_packet(timeout=10).payload) for _ in range(count)] == list(range(count))
