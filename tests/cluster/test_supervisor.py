"""The supervisor: port 0 over several workers, restarts, boot failures, signals.

Each test runs the real ``kushi serve --workers N`` and bounds every wait.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from kushi.hooks.passwords import hash_password
from kushi.protocol.packets import (
    Connack, Disconnect, Pingreq, Pingresp, Suback, Subscribe, Subscription,
)
from kushi.protocol.properties import Properties
from tests.support.paho import PahoClient
from tests.support.rawclient import RawClient

from cluster_support import (
    KushiCluster, listening_inodes, raw_client_on, running_cluster, socket_inodes, worker_holding,
)

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def cluster3():
    with running_cluster(3) as cluster:
        yield cluster


def test_port_zero_is_shared_by_every_worker_and_the_supervisor_holds_no_listener(cluster3) -> None:
    """Three workers listen on the port the supervisor reserved; the supervisor listens on nothing."""
    listening = listening_inodes(cluster3.port)
    pids = cluster3.worker_pids()
    assert sorted(pids) == [0, 1, 2]
    for worker_id, pid in pids.items():
        assert len(socket_inodes(pid) & listening) == 1, f"worker {worker_id} is not listening"
    assert not socket_inodes(cluster3.process.pid) & listening
    client = RawClient(cluster3.host, cluster3.port)
    assert client.connect_ok("anyone").reason_code == 0


def test_a_worker_killed_with_sigkill_is_restarted_and_serves(cluster3) -> None:
    """[invariant 6] kill -9 of a worker: the supervisor starts it again and it listens again."""
    old_pid = cluster3.worker_pids()[1]
    mark = len(cluster3.lines)
    os.kill(old_pid, signal.SIGKILL)
    cluster3.wait_for_line(r"worker 1 died \(killed by SIGKILL\); restarting", start=mark)
    cluster3.wait_for_line(r"worker 1 ready", start=mark)
    new_pid = cluster3.worker_pids()[1]
    assert new_pid != old_pid
    assert len(socket_inodes(new_pid) & listening_inodes(cluster3.port)) == 1
    for attempt in range(10):  # whichever worker the kernel picks, every connection works
        RawClient(cluster3.host, cluster3.port).connect_ok(f"after-restart-{attempt}")


def test_a_configuration_error_at_boot_stops_the_server_with_its_message() -> None:
    """A worker that cannot start (TLS files missing) stops everything: exit non-zero, no fork loop."""
    cluster = KushiCluster(2, "--tls", "127.0.0.1:0", "--cert", "/nonexistent.pem",
                           "--key", "/nonexistent.key")
    try:
        code = cluster.process.wait(30)
    finally:
        cluster.stop()
    log = cluster.log()
    assert code != 0, log
    assert "failed at boot" in log and "cannot load TLS files" in log, log
    assert log.count("started (pid") <= 2, log   # each worker started once at most: no restart loop


def test_sigterm_stops_gracefully_and_v5_clients_get_server_shutting_down() -> None:
    """SIGTERM: every worker closes; a v5 client is sent DISCONNECT 0x8B; the exit code is 0."""
    cluster = KushiCluster(2)
    try:
        cluster.wait_ready()
        clients = [RawClient(cluster.host, cluster.port) for _ in range(4)]
        for index, client in enumerate(clients):
            client.connect_ok(f"graceful-{index}")
        cluster.process.send_signal(signal.SIGTERM)
        for client in clients:
            packet = client.recv_packet(timeout=10)
            assert isinstance(packet, Disconnect) and packet.reason_code == 0x8B
    finally:
        code = cluster.stop()
    assert code == 0, cluster.log()


def test_sighup_reloads_the_password_file_in_every_worker_without_dropping_clients(tmp_path) -> None:
    """SIGHUP: connected clients stay connected; the new password applies to the next CONNECT on every worker."""
    passwords = tmp_path / "passwd"
    passwords.write_text(f"alice:{hash_password('old', iterations=1000)}\n")
    with running_cluster(2, "--password-file", str(passwords)) as cluster:
        connected = []
        for worker in (0, 1):
            client, _ = raw_client_on(cluster, lambda w, want=worker: w == want)
            client.connect_ok(f"stays-{worker}", username="alice", password=b"old")
            connected.append(client)
        passwords.write_text(f"alice:{hash_password('new', iterations=1000)}\n")
        mark = len(cluster.lines)
        cluster.process.send_signal(signal.SIGHUP)
        for worker in (0, 1):
            cluster.wait_for_line(rf" w{worker} .*SIGHUP: reloaded", start=mark)
        for client in connected:
            client.send(Pingreq())
            assert isinstance(client.recv_packet(), Pingresp)
        for worker in (0, 1):
            refused, _ = raw_client_on(cluster, lambda w, want=worker: w == want)
            answer = refused.connect(f"old-{worker}", username="alice", password=b"old")
            assert isinstance(answer, Connack) and answer.reason_code == 0x86, answer
            accepted, _ = raw_client_on(cluster, lambda w, want=worker: w == want)
            accepted.connect_ok(f"new-{worker}", username="alice", password=b"new")


def test_sigttin_adds_a_worker_and_sigttou_retires_it_moving_its_sessions() -> None:
    """SIGTTIN: one more worker, listening on the same port. SIGTTOU: the newest retires, its
    clients are told 0x9C (use another server) and a persistent session moves to another worker."""
    persistent = Properties(session_expiry_interval=300)
    with running_cluster(2) as cluster:
        mark = len(cluster.lines)
        cluster.process.send_signal(signal.SIGTTIN)
        cluster.wait_for_line(r"worker 2 ready", start=mark)
        assert len(socket_inodes(cluster.worker_pids()[2]) & listening_inodes(cluster.port)) == 1
        client, _ = raw_client_on(cluster, lambda w: w == 2)
        client.connect_ok("mover", clean_start=False, properties=persistent)
        client.send(Subscribe(1, (Subscription("moving/#", qos=1),)))
        assert isinstance(client.recv_packet(), Suback)
        mark = len(cluster.lines)
        cluster.process.send_signal(signal.SIGTTOU)
        packet = client.recv_packet(timeout=10)
        assert isinstance(packet, Disconnect) and packet.reason_code == 0x9C
        again, _ = raw_client_on(cluster, lambda w: w != 2)
        assert again.connect_ok("mover", clean_start=False, properties=persistent).session_present
        cluster.wait_for_line(r"worker 2 exited", start=mark)
        assert "restarting" not in "\n".join(cluster.lines[mark:])
        assert sorted(cluster.worker_pids_alive()) == [0, 1]


def test_workers_exit_when_the_supervisor_is_killed() -> None:
    """kill -9 of the supervisor: no orphan worker is left holding the port."""
    cluster = KushiCluster(2)
    try:
        cluster.wait_ready()
        pids = list(cluster.worker_pids().values())
        cluster.process.kill()
        cluster.process.wait(10)
        deadline = time.monotonic() + 15
        while any(os.path.exists(f"/proc/{pid}") for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)   # re-check until the workers are gone; bounded by the deadline
        assert not [pid for pid in pids if os.path.exists(f"/proc/{pid}")]
        assert not listening_inodes(cluster.port)
    finally:
        cluster.stop()


def test_sigint_stops_fast() -> None:
    """SIGINT: the workers exit at once (no grace period) and so does the supervisor, with 0."""
    cluster = KushiCluster(2)
    try:
        cluster.wait_ready()
        client = RawClient(cluster.host, cluster.port)
        client.connect_ok("fast")
        started = time.monotonic()
        cluster.process.send_signal(signal.SIGINT)
        assert cluster.process.wait(5) == 0
        assert time.monotonic() - started < 5
        assert client.expect_closed(timeout=5)
    finally:
        cluster.stop()


def test_a_websocket_listener_on_port_zero_is_shared_too() -> None:
    """The WebSocket port is reserved like the TCP one; WebSocket clients on every worker get
    what a TCP client publishes elsewhere."""
    with running_cluster(2, websocket=True) as cluster:
        assert cluster.ws_port and cluster.ws_port != cluster.port
        seen: set[int | None] = set()
        for index in range(40):
            if seen >= {0, 1}:
                break
            subscriber = PahoClient(cluster.host, cluster.ws_port, f"ws-{index}", 5, transport="websockets")
            publisher = PahoClient(cluster.host, cluster.port, f"tcp-{index}", 5)
            try:
                subscriber.connect()
                raw_socket = subscriber.client.socket()._socket   # paho's WebSocket wrapper
                seen.add(worker_holding(cluster.worker_pids(), cluster.ws_port, raw_socket.getsockname()[1]))
                subscriber.subscribe("ws/#", qos=1)
                publisher.connect()
                publisher.publish("ws/t", f"m{index}".encode(), qos=1)
                assert subscriber.wait_for_message(timeout=5).payload == f"m{index}".encode()
            finally:
                subscriber.stop()
                publisher.stop()
        assert seen >= {0, 1}, seen
