"""A multi-worker ``kushi serve`` in a subprocess, and where its clients landed.

``KushiCluster`` starts the real console script with ``--workers N`` on port 0,
reads its log lines in a thread, and waits on them with deadlines. The real
port comes from the supervisor's ``kushi: listening tcp HOST:PORT`` line.

``worker_of(client_port)`` answers which worker holds a client's connection:
it finds the server side of the TCP connection in /proc/net/tcp and the
worker whose file descriptors include that socket. No log parsing, no guess.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ops.kushi_process import KushiProcess

KUSHI = str(Path(sys.executable).with_name("kushi"))
STARTED = re.compile(r"worker (\d+) started \(pid (\d+)\)")
LISTENING = re.compile(r" kushi: listening tcp (\S+):(\d+)$")
LISTENING_WS = re.compile(r" kushi: listening ws (\S+):(\d+)$")
LISTENING_HTTP = re.compile(r" kushi: listening http (\S+):(\d+)$")


@contextmanager
def running_cluster(workers: int, *extra: str, websocket: bool = False,
                    http: bool = False) -> Iterator[KushiCluster]:
    """A ``kushi serve --workers N`` that is listening; stopped (SIGTERM) at the end."""
    cluster = KushiCluster(workers, *extra, websocket=websocket, http=http)
    try:
        cluster.wait_ready()
        yield cluster
    finally:
        cluster.stop()


class KushiCluster:
    """``kushi serve --workers N`` as a child process, with its log lines at hand."""

    def __init__(self, workers: int, *extra: str, env: dict[str, str] | None = None,
                 websocket: bool = False, http: bool = False, program: str | None = None) -> None:
        ws = ["--ws", "127.0.0.1:0"] if websocket else ["--no-ws"]
        metrics = ["--http", "127.0.0.1:0"] if http else ["--no-http"]
        args = ["serve", "--tcp", "127.0.0.1:0", *ws, *metrics, "--workers", str(workers), *extra]
        command = [KUSHI]
        if program is not None:   # a program embedding kushi.Server that logs as kushi serve does
            args, command = list(extra), [sys.executable, program]
        self.workers = workers
        self.serve = KushiProcess(args, command=command, env=env)   # reads the log lines
        self.process = self.serve.process
        self.host = ""
        self.port = 0
        self.websocket = websocket
        self.ws_port = 0
        self.http = http
        self.http_port = 0

    @property
    def lines(self) -> list[str]:
        return self.serve.lines

    def wait_for_line(self, pattern: str | re.Pattern[str], timeout: float = 20.0,
                      start: int = 0) -> re.Match[str]:
        """The first log line from index ``start`` matching ``pattern``; AssertionError after ``timeout``."""
        return self.serve.wait_for(pattern, timeout, since=start)

    def wait_ready(self, timeout: float = 30.0) -> None:
        match = self.wait_for_line(LISTENING, timeout)
        self.host, self.port = match.group(1), int(match.group(2))
        if self.websocket:
            self.ws_port = int(self.wait_for_line(LISTENING_WS, timeout).group(2))
        if self.http:
            self.http_port = int(self.wait_for_line(LISTENING_HTTP, timeout).group(2))

    def log(self) -> str:
        return self.serve.log

    def worker_pids(self) -> dict[int, int]:
        """Worker id -> pid of its latest start, from the supervisor's log."""
        pids: dict[int, int] = {}
        for line in list(self.lines):
            match = STARTED.search(line)
            if match:
                pids[int(match.group(1))] = int(match.group(2))
        return pids

    def _our_orphan(self, pid: int) -> bool:
        """Is ``pid`` still one of our workers (a kushi process whose parent was our supervisor or
        is gone)? A pid number reused by another test's worker has a live supervisor as parent."""
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            return False
        parent = int(fields[1])
        return fields[0] != "Z" and parent in (1, self.process.pid) and b"kushi" in _cmdline(pid)

    def worker_pids_alive(self) -> dict[int, int]:
        """Worker id -> pid of the workers whose process still runs (not gone, not a zombie)."""
        return {worker: pid for worker, pid in self.worker_pids().items() if _running(pid)}

    def worker_of(self, client_port: int) -> int | None:
        """The id of the worker holding the server side of the client's connection from ``client_port``."""
        return worker_holding(self.worker_pids(), self.port, client_port)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Signal the supervisor and wait for it to exit; kills it after ``timeout``."""
        if self.process.poll() is None:
            self.process.send_signal(signum)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                for pid in self.worker_pids().values():
                    _kill_quietly(pid)
                self.process.kill()
                self.process.wait()
                raise AssertionError("the supervisor did not stop in time; log:\n" + self.log())
        self.serve._reader.join(5)
        for pid in self.worker_pids().values():   # never leave an orphaned worker behind
            if self._our_orphan(pid):
                _kill_quietly(pid)
        return self.process.returncode


def worker_holding(pids: dict[int, int], server_port: int, client_port: int) -> int | None:
    """Which of the workers ``pids`` (id -> pid) holds the server side of the client's connection."""
    inode = _server_socket_inode(server_port, client_port)
    if inode is None:
        return None
    for worker_id, pid in pids.items():
        if inode in socket_inodes(pid):
            return worker_id
    return None


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return b""


def _kill_quietly(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@dataclass
class _TcpSocket:
    local_port: int
    remote_port: int
    listening: bool
    inode: int


def _tcp_sockets() -> Iterator[_TcpSocket]:
    """Every TCP socket of this network namespace, from /proc/net/tcp and tcp6."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for row in rows:
            fields = row.split()
            yield _TcpSocket(int(fields[1].rsplit(":", 1)[1], 16), int(fields[2].rsplit(":", 1)[1], 16),
                             fields[3] == "0A", int(fields[9]))


def _server_socket_inode(server_port: int, client_port: int) -> int | None:
    """The inode of the established socket with local port ``server_port`` and remote ``client_port``."""
    for sock in _tcp_sockets():
        if sock.local_port == server_port and sock.remote_port == client_port and sock.inode:
            return sock.inode
    return None


def socket_inodes(pid: int) -> set[int]:
    """The inodes of the sockets process ``pid`` has open."""
    inodes: set[int] = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except FileNotFoundError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def listening_inodes(port: int) -> set[int]:
    """Inodes of the TCP sockets in LISTEN state on ``port``."""
    return {sock.inode for sock in _tcp_sockets() if sock.listening and sock.local_port == port}


def raw_client_on(cluster: KushiCluster, accept, attempts: int = 60):
    """A RawClient (not yet CONNECTed) whose TCP connection a worker with ``accept(worker_id)`` holds.

    A connection landing elsewhere is closed before any MQTT byte is sent, so
    probing never touches a session.
    """
    from tests.support.rawclient import RawClient

    for _ in range(attempts):
        client = RawClient(cluster.host, cluster.port)
        client_port = client.sock.getsockname()[1]
        deadline = time.monotonic() + 5
        worker = cluster.worker_of(client_port)
        while worker is None and time.monotonic() < deadline:
            time.sleep(0.005)  # the worker has not accepted the connection yet; re-check
            worker = cluster.worker_of(client_port)
        if worker is not None and accept(worker):
            return client, worker
        client.close()
    raise AssertionError(f"no connection landed on a wanted worker in {attempts} attempts")


def raw_subscriber(cluster: KushiCluster, accept, filter: str, qos: int, client_id: str,
                   **connect_fields):
    """A connected RawClient on a worker ``accept`` likes, subscribed to ``filter`` (SUBACK received)."""
    from kushi.protocol.packets import Suback, Subscribe, Subscription

    client, worker = raw_client_on(cluster, accept)
    client.connect_ok(client_id, **connect_fields)
    client.send(Subscribe(1, (Subscription(filter, qos=qos),)))
    packet = client.recv_packet()
    assert isinstance(packet, Suback), packet
    return client, worker


def hop_while_streaming(config_dir: Path, topic: str, qos: int, client_id: str, count: int,
                        read: Callable[[Any, bool], None], hops: int = 20,
                        program: str | None = None) -> int:
    """A persistent subscriber of ``topic`` reconnects ``hops`` times or more, each time onto
    another worker of a ``kushi serve --workers 3``, while a paho publisher streams ``count``
    messages (payloads "0", "1", ...) at ``qos``; returns the number of hops made.

    ``read(client, last)`` handles what the broker sends: on each hop for a moment
    (``last`` False), and at the end on a final connection until everything arrived.
    ``program``: a program embedding the broker (3 workers, queues of 100,000) instead.
    """
    from kushi.protocol.packets import Connack, Disconnect
    from kushi.protocol.properties import Properties
    from tests.support.paho import PahoClient

    persistent = Properties(session_expiry_interval=300)
    config = config_dir / "kushi.yaml"
    config.write_text("options:\n  max_queued_messages: 100000\n")
    cluster = KushiCluster(3, "--config", str(config)) if program is None else \
        KushiCluster(3, program=program)
    publisher = None
    try:
        cluster.wait_ready()
        first, worker = raw_subscriber(cluster, lambda w: True, topic, qos, client_id,
                                       clean_start=False, properties=persistent)
        first.send(Disconnect())
        first.expect_closed()
        publisher = PahoClient(cluster.host, cluster.port, f"{client_id}-publisher")
        publisher.connect()
        published = threading.Event()

        def stream() -> None:
            infos = [publisher.client.publish(topic, str(index).encode(), qos=qos)
                     for index in range(count)]   # paho keeps 20 in flight, queues the rest
            for info in infos:
                info.wait_for_publish(timeout=60)
            published.set()

        threading.Thread(target=stream, daemon=True).start()
        made = 0
        while made < hops or not published.is_set():
            client, worker = raw_client_on(cluster, lambda w, last=worker: w != last)
            connack = client.connect(client_id, clean_start=False, properties=persistent)
            assert isinstance(connack, Connack) and connack.session_present, (made, connack)
            read(client, False)
            client.send(Disconnect())
            client.close()
            made += 1
            assert made < 10 * hops, "the publisher never finished"
        client, _ = raw_client_on(cluster, lambda w, last=worker: w != last)
        client.connect_ok(client_id, clean_start=False, properties=persistent)
        read(client, True)
        return made
    finally:
        if publisher is not None:
            publisher.stop()
        cluster.stop()
