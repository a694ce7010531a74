"""/metrics, /healthz and $SYS of a multi-worker broker: served by the supervisor, for the whole broker."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cluster_support import raw_client_on, raw_subscriber, running_cluster

from kushi.protocol.packets import Publish, Suback, Subscribe, Subscription

pytestmark = pytest.mark.timeout(90)


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) -> value, from a real GET /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def wait_for_scrape(port: int, condition: Callable[[dict], bool], timeout: float = 10.0) -> dict:
    """Scrape until ``condition(samples)`` holds (the workers report every second)."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(port)
        if condition(samples):
            return samples
        assert time.monotonic() < deadline, f"condition never held; last scrape: {samples}"
        time.sleep(0.2)   # the next scrape; the supervisor's figures change once a second


def total(samples: dict, name: str) -> float:
    return samples.get((name, ()), 0.0)


def per_worker(samples: dict, name: str) -> dict[str, float]:
    return {dict(labels)["worker"]: value for (sample, labels), value in samples.items()
            if sample == name and labels}


def test_metrics_add_up_the_messages_of_every_worker() -> None:
    """Clients on both workers: /metrics counts the messages each worker received and sent."""
    with running_cluster(2, http=True) as cluster:
        with urllib.request.urlopen(f"http://127.0.0.1:{cluster.http_port}/healthz", timeout=5) as response:
            assert (response.status, response.read()) == (200, b"ok\n")
        subscriber, sub_worker = raw_subscriber(cluster, lambda w: True, "metrics/#", 0, "m-sub")
        publishers = []
        for name, accept in (("m-pub-same", lambda w: w == sub_worker), ("m-pub-other", lambda w: w != sub_worker)):
            publisher, _ = raw_client_on(cluster, accept)
            publisher.connect_ok(name)
            publishers.append(publisher)
        for index in range(10):
            publishers[index % 2].send(Publish("metrics/t", b"x", qos=0))
        for _ in range(10):
            assert isinstance(subscriber.recv_packet(timeout=5), Publish)

        samples = wait_for_scrape(cluster.http_port, lambda s: total(s, "kushi_messages_sent_total") >= 10
                                  and total(s, "kushi_clients_connected") == 3)
        assert total(samples, "kushi_messages_received_total") >= 10
        assert total(samples, "kushi_workers") == 2
        received = per_worker(samples, "kushi_worker_messages_received_total")
        assert set(received) == {"w0", "w1"} and all(value >= 5 for value in received.values()), received
        connected = per_worker(samples, "kushi_worker_clients_connected")
        assert connected[f"w{sub_worker}"] == 2 and connected[f"w{1 - sub_worker}"] == 1, connected
        for client in (subscriber, *publishers):
            client.close()


def test_sys_topics_show_the_whole_broker_on_every_worker() -> None:
    """$SYS comes from the supervisor: one value for the broker, seen alike from each worker."""
    with running_cluster(2) as cluster:
        seen = {}
        clients = []
        for worker in range(2):
            client, _ = raw_client_on(cluster, lambda w, want=worker: w == want)
            client.connect_ok(f"sys-{worker}")
            client.send(Subscribe(1, (Subscription("$SYS/broker/workers", qos=0),)))
            assert isinstance(client.recv_packet(), Suback)
            packet = client.recv_packet(timeout=5)
            assert isinstance(packet, Publish) and packet.retain
            seen[worker] = bytes(packet.payload)
            clients.append(client)
        assert seen == {0: b"2", 1: b"2"}
        for client in clients:
            client.close()
