"""SIGHUP reloads the configuration file: options change in place in every worker (issue 3)."""

from __future__ import annotations

import signal

import pytest

from cluster_support import raw_client_on, running_cluster
from kushi.protocol.packets import Pingreq, Pingresp

pytestmark = pytest.mark.timeout(90)


def connack_maximum_qos(cluster, worker: int, client_id: str) -> int:
    """The Maximum QoS a new v5 client on ``worker`` is told (absent means 2)."""
    client, _ = raw_client_on(cluster, lambda w: w == worker)
    try:
        maximum_qos = client.connect_ok(client_id).properties.maximum_qos
    finally:
        client.close()
    return 2 if maximum_qos is None else maximum_qos


def test_sighup_changes_options_in_every_worker_and_keeps_every_connection(tmp_path) -> None:
    """A new maximum_qos in the file applies to the next CONNACK on each worker, after SIGHUP,
    while the clients connected before stay connected."""
    config = tmp_path / "kushi.yaml"
    config.write_text("options:\n  maximum_qos: 2\n")
    with running_cluster(2, "--config", str(config)) as cluster:
        stayers = []
        for worker in (0, 1):
            client, _ = raw_client_on(cluster, lambda w, want=worker: w == want)
            client.connect_ok(f"stays-{worker}")
            stayers.append(client)
            assert connack_maximum_qos(cluster, worker, f"before-{worker}") == 2
        config.write_text("options:\n  maximum_qos: 1\n")
        mark = len(cluster.lines)
        cluster.process.send_signal(signal.SIGHUP)
        for worker in (0, 1):
            cluster.wait_for_line(rf" w{worker} .*SIGHUP: options changed: maximum_qos=1", start=mark)
            assert connack_maximum_qos(cluster, worker, f"after-{worker}") == 1
        for client in stayers:
            client.send(Pingreq())
            assert isinstance(client.recv_packet(), Pingresp)
            client.close()


def test_a_config_that_cannot_be_read_on_sighup_keeps_the_running_one(tmp_path) -> None:
    """A bad value is logged and changes nothing; a setting that needs a restart (sys_interval,
    storage) is logged as waiting for one and the rest still applies. (Flags given on the
    command line, here --workers and the listeners, keep winning over the file.)"""
    config = tmp_path / "kushi.yaml"
    config.write_text("options:\n  maximum_qos: 1\n")
    with running_cluster(2, "--config", str(config)) as cluster:
        config.write_text("options:\n  maximum_qos: 7\n")
        mark = len(cluster.lines)
        cluster.process.send_signal(signal.SIGHUP)
        cluster.wait_for_line(r"SIGHUP: .*maximum_qos.*the configuration in use is kept", start=mark)
        assert [connack_maximum_qos(cluster, w, f"bad-{w}") for w in (0, 1)] == [1, 1]

        storage = tmp_path / "kushi.db"
        config.write_text(f"options:\n  maximum_qos: 0\n  sys_interval: 5\nstorage: {{path: {storage}}}\n")
        mark = len(cluster.lines)
        cluster.process.send_signal(signal.SIGHUP)
        cluster.wait_for_line(r"SIGHUP: sys_interval changed; that takes effect at the next start",
                              start=mark)
        cluster.wait_for_line(r"SIGHUP: storage changed; that takes effect at the next start", start=mark)
        for worker in (0, 1):
            cluster.wait_for_line(rf" w{worker} .*SIGHUP: options changed: maximum_qos=0", start=mark)
            assert connack_maximum_qos(cluster, worker, f"zero-{worker}") == 0
        assert len(cluster.worker_pids_alive()) == 2
