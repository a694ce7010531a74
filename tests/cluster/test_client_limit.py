"""Options.max_clients with several workers counts the whole broker (kushi.cluster.client_limit)."""

from __future__ import annotations

import time

import pytest

from cluster_support import KushiCluster, raw_client_on, running_cluster
from kushi.protocol.packets import Connack

pytestmark = pytest.mark.timeout(90)

LIMIT = 3


def try_connect(cluster: KushiCluster, worker: int, client_id: str):
    """A CONNECT on ``worker``; returns (its CONNACK reason code, the client)."""
    client, _ = raw_client_on(cluster, lambda w: w == worker)
    connack = client.connect(client_id)
    assert isinstance(connack, Connack), connack
    return connack.reason_code, client


def refused_on(cluster: KushiCluster, worker: int, client_id: str, timeout: float = 10.0) -> bool:
    """Try a CONNECT on ``worker`` until it is refused with 0x97; each accepted try is closed at
    once (the workers learn the others' counts about every second, so early tries may pass)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code, client = try_connect(cluster, worker, client_id)
        client.close()
        if code == 0x97:
            return True
        assert code == 0, hex(code)
        time.sleep(0.2)   # an accepted try: let the next count snapshot go round, then ask again
    return False


def accepted_on(cluster: KushiCluster, worker: int, client_id: str, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code, client = try_connect(cluster, worker, client_id)
        if code == 0:
            return client
        client.close()
        time.sleep(0.2)   # refused while the freed place is not yet known everywhere: ask again
    raise AssertionError(f"no CONNECT accepted on worker {worker} within {timeout} s")


def test_max_clients_holds_for_the_whole_broker_not_per_worker(tmp_path) -> None:
    """Two clients on worker 0 and one on worker 1 fill a limit of 3: both workers then refuse
    the fourth with 0x97 Quota exceeded; once a client leaves, a new one gets in anywhere."""
    config = tmp_path / "kushi.yaml"
    config.write_text(f"options:\n  max_clients: {LIMIT}\n")
    with running_cluster(2, "--config", str(config)) as cluster:
        clients = []
        try:
            for index, worker in enumerate((0, 0, 1)):
                code, client = try_connect(cluster, worker, f"held-{index}")
                clients.append(client)
                assert code == 0
            assert refused_on(cluster, 1, "fourth")   # worker 1 holds one: it must count worker 0's
            assert refused_on(cluster, 0, "fourth")
            clients.pop(0).close()                    # a place on worker 0 comes free
            clients.append(accepted_on(cluster, 1, "late"))
        finally:
            for client in clients:
                client.close()
