"""A SUBACK that waits for every worker to know the new interest (``kushi.worker.subscriptions``).

With several workers the SUBACK of a new filter waits for the cluster's barrier.
Meanwhile the connection's later packets wait behind it, so the answers keep
the order of the packets; and a worker that hangs cannot hold the SUBACK for
longer than ``SUBACK_WAIT_AT_MOST``.

The retained messages a new subscription gets are looked up once the barrier is
done: a worker that set one before it heard of the new interest sent it on by
gossip only, and the gossip is in by then. The in-process tests below place such
a publish exactly in that window (``fabric_support.before_handling``): the other
worker publishes right before it reads the new interest, or right after.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from time import monotonic

import pytest

from cluster_support import raw_client_on, running_cluster
from fabric_support import Cluster, after_handling, before_handling, run, until

from kushi.cluster.fabric import INTEREST_ADDED
from kushi.protocol.codec import encode
from kushi.protocol.packets import (
    MQTT_5, Pingreq, Pingresp, Puback, Publish, Suback, Subscribe, Subscription, Unsuback,
    Unsubscribe,
)
from kushi.worker.subscriptions import SUBACK_WAIT_AT_MOST
from tests.support.rawclient import NoPacket, RawClient

pytestmark = pytest.mark.timeout(60)


def answers(client, count: int, timeout: float = 5) -> list[tuple[str, int | None]]:
    """The next ``count`` packets as (type name, packet id)."""
    packets = [client.recv_packet(timeout=timeout) for _ in range(count)]
    return [(type(packet).__name__, getattr(packet, "packet_id", None)) for packet in packets]


def test_packets_after_a_waiting_subscribe_are_answered_after_its_suback() -> None:
    """[MQTT-4.6.0-2] SUBSCRIBE (new interest: its SUBACK waits for the other worker), PINGREQ,
    UNSUBSCRIBE, PUBLISH QoS 1 and another SUBSCRIBE in one write: answered in that order."""
    with running_cluster(2) as cluster:
        client, _ = raw_client_on(cluster, lambda w: True)
        client.connect_ok("in-order")
        burst = [Subscribe(1, (Subscription("order/a", qos=1),)), Pingreq(),
                 Unsubscribe(2, ("order/none",)), Publish("order/x", b"p", qos=1, packet_id=3),
                 Subscribe(4, (Subscription("order/b", qos=1),)), Pingreq()]
        client.send(b"".join(encode(packet, MQTT_5) for packet in burst))
        assert answers(client, 6) == [
            (Suback.__name__, 1), (Pingresp.__name__, None), (Unsuback.__name__, 2),
            (Puback.__name__, 3), (Suback.__name__, 4), (Pingresp.__name__, None)]


def test_a_hung_worker_delays_a_suback_at_most_the_wait_limit() -> None:
    """A worker stopped (SIGSTOP) without leaving the bus never answers the barrier: the SUBACK
    goes out after SUBACK_WAIT_AT_MOST anyway, logged, and the packets behind it follow."""
    with running_cluster(2) as cluster:
        client, worker = raw_client_on(cluster, lambda w: True)
        client.connect_ok("patient")
        hung = cluster.worker_pids()[1 - worker]
        os.kill(hung, signal.SIGSTOP)
        try:
            mark = len(cluster.lines)
            client.send(b"".join(encode(packet, MQTT_5) for packet in (
                Subscribe(1, (Subscription("hung/a", qos=1),)), Pingreq())))
            with pytest.raises(NoPacket):   # the barrier waits for the stopped worker
                client.recv_packet(timeout=SUBACK_WAIT_AT_MOST / 2)
            assert answers(client, 2, timeout=SUBACK_WAIT_AT_MOST + 5) == [
                (Suback.__name__, 1), (Pingresp.__name__, None)]
            cluster.wait_for_line(r"SUBACK to 'patient' sent after \d+ s without every worker",
                                  start=mark)
        finally:
            os.kill(hung, signal.SIGCONT)


# ---- the retained messages of a new subscription, set on another worker meanwhile -------------

STATUS = "devices/unit-0/status"


def publish_retained_on(server, payload: bytes) -> None:
    """What ``server``'s inline client does, at once (no await): a retained status."""
    server.broker.publish(Publish(STATUS, payload, qos=1, retain=True), None, monotonic())


def inline_subscription() -> tuple[list[tuple[str, bytes, bool]], Callable[..., None]]:
    """A list, and the inline-client callback that fills it with (topic, payload, retain)."""
    received: list[tuple[str, bytes, bool]] = []
    return received, lambda topic, payload, packet: received.append((topic, payload, packet.retain))


async def two_workers(cluster: Cluster):
    """Worker 0 (``here``, where the subscriptions are made) and worker 1 (``there``, its bus)."""
    _, _, here = await cluster.add_server("w0", 0)
    there_bus, _, there = await cluster.add_server("w1", 1)
    return here, there_bus, there


async def offline_everywhere(cluster: Cluster):
    """``two_workers`` whose retained status of unit-0 is "offline" (set on worker 1)."""
    here, there_bus, there = await two_workers(cluster)
    publish_retained_on(there, b"offline")
    await until(lambda: here.broker.retained_store.get(STATUS) is not None)
    return here, there_bus, there


async def subscribing_to_statuses(server) -> RawClient:
    """A client of ``server`` that has just sent SUBSCRIBE devices/+/status (QoS 1)."""
    client = RawClient("127.0.0.1", server.listeners["tcp"].port)
    await asyncio.to_thread(client.connect_ok, "dashboard")
    client.send(Subscribe(1, (Subscription("devices/+/status", qos=1),)))
    return client


Read = tuple[str, bytes, bool]


def read_until(client: RawClient, last: Callable[[Read], bool]) -> list[Read]:
    """(topic, payload, retain) of each PUBLISH ``client`` reads, a SUBACK as ("SUBACK", b"",
    False), up to the first for which ``last`` holds."""
    read: list[Read] = []
    while not read or not last(read[-1]):
        packet = client.recv_packet(timeout=5)
        if isinstance(packet, Suback):
            read.append(("SUBACK", b"", False))
        else:
            read.append((packet.topic, bytes(packet.payload), packet.retain))
    return read


def test_an_inline_subscription_gets_a_status_retained_elsewhere_before_the_interest_arrived() -> None:
    """Worker 1 retains a status right before it reads worker 0's new interest: it forwards
    nothing live, its retained gossip comes after the subscription was made, and
    ``Server.subscribe`` on worker 0 still hands the retained status over before it returns."""
    async def scenario(cluster: Cluster) -> None:
        here, there_bus, there = await two_workers(cluster)
        before_handling(there_bus, INTEREST_ADDED, lambda: publish_retained_on(there, b"online"))
        received, callback = inline_subscription()
        await here.subscribe("devices/+/status", 1, callback)
        assert received == [(STATUS, b"online", True)]
    run(scenario)


def test_a_suback_is_followed_by_a_status_retained_elsewhere_before_the_interest_arrived() -> None:
    """[MQTT-3.3.1-9] As above for a client's SUBSCRIBE: the SUBACK, then the retained status
    (RETAIN 1), although worker 0 had no copy of it when the SUBSCRIBE came."""
    async def scenario(cluster: Cluster) -> None:
        here, there_bus, there = await two_workers(cluster)
        before_handling(there_bus, INTEREST_ADDED, lambda: publish_retained_on(there, b"online"))
        with await subscribing_to_statuses(here) as client:
            read = await asyncio.to_thread(read_until, client, lambda read: read[0] == STATUS)
        assert read == [("SUBACK", b"", False), (STATUS, b"online", True)]
    run(scenario)


def test_a_second_subscription_waits_for_the_first_ones_barrier_and_gets_the_status() -> None:
    """Two inline subscriptions to one filter in the same loop turn: the second adds no interest
    (the first announced it) but still waits until worker 1 knows it, and gets the status
    worker 1 retained before it did, as the first does."""
    async def scenario(cluster: Cluster) -> None:
        here, there_bus, there = await two_workers(cluster)
        before_handling(there_bus, INTEREST_ADDED, lambda: publish_retained_on(there, b"online"))
        (first, first_callback), (second, second_callback) = inline_subscription(), inline_subscription()
        await asyncio.gather(here.subscribe("devices/+/status", 1, first_callback),
                             here.subscribe("devices/+/status", 2, second_callback))
        assert first == second == [(STATUS, b"online", True)]
    run(scenario)


def test_a_status_retained_elsewhere_while_an_inline_subscription_waits_comes_once() -> None:
    """Worker 1 retains "online" right after it heard worker 0's new interest, before it answers
    the barrier: the message comes live, and the retained status looked up after the barrier
    is that same message, so no retained copy follows it; nor does the older "offline"."""
    async def scenario(cluster: Cluster) -> None:
        here, there_bus, there = await offline_everywhere(cluster)
        after_handling(there_bus, INTEREST_ADDED, lambda: publish_retained_on(there, b"online"))
        received, callback = inline_subscription()
        await here.subscribe("devices/+/status", 1, callback)
        await here.fabric.barrier()   # whatever worker 1 sent meanwhile has been handled here
        assert received == [(STATUS, b"online", True)]
    run(scenario)


def test_a_status_retained_elsewhere_while_a_suback_waits_comes_once() -> None:
    """[MQTT-3.3.1-9] As above for a client's SUBSCRIBE: "online" comes once, live (RETAIN 0;
    before or after the SUBACK: a server may send matching messages before it), and no retained
    "online" or "offline" after the SUBACK."""
    async def scenario(cluster: Cluster) -> None:
        here, there_bus, there = await offline_everywhere(cluster)
        after_handling(there_bus, INTEREST_ADDED, lambda: publish_retained_on(there, b"online"))
        with await subscribing_to_statuses(here) as client:
            read = await asyncio.to_thread(read_until, client, lambda read: read[0] == "SUBACK")
            await here.publish("devices/marker/status", b"end")   # behind anything sent before
            read += await asyncio.to_thread(read_until, client, lambda read: read[1] == b"end")
        assert sorted(read[:-1]) == [("SUBACK", b"", False), (STATUS, b"online", False)]
    run(scenario)
