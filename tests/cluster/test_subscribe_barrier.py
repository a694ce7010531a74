"""A SUBACK that waits for every worker to know the new interest (``kushi.worker.subscriptions``).

With several workers the SUBACK of a new filter waits for the cluster's barrier.
Meanwhile the connection's later packets wait behind it, so the answers keep
the order of the packets; and a worker that hangs cannot hold the SUBACK for
longer than ``SUBACK_WAIT_AT_MOST``.
"""

from __future__ import annotations

import os
import signal

import pytest

from cluster_support import raw_client_on, running_cluster

from kushi.protocol.codec import encode
from kushi.protocol.packets import (
    MQTT_5, Pingreq, Pingresp, Puback, Publish, Suback, Subscribe, Subscription, Unsuback,
    Unsubscribe,
)
from kushi.worker.subscriptions import SUBACK_WAIT_AT_MOST
from tests.support.rawclient import NoPacket

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
