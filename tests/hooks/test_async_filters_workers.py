"""Coroutine message-path filters with kushi.Server(Options(workers=2)): the hook is created
before the fork and awaited in each worker; a message published on one worker reaches the
subscribers on both, each checked by the async read ACL, in order (ARCHITECTURE.md, invariant 1).
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kushi.protocol.codec import encode
from kushi.protocol.packets import Pingresp, Puback, Publish, Suback, Subscribe, Subscription
from support.rawclient import NoPacket, RawClient

pytestmark = pytest.mark.timeout(90)
PROGRAM = str(Path(__file__).with_name("async_hooks_program.py"))
PINGREQ = b"\xc0\x00"


class Program:
    """async_hooks_program.py as a child process; the lines it prints, by their first word."""

    def __init__(self) -> None:
        self.process = subprocess.Popen([sys.executable, PROGRAM], stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, text=True)
        self.lines: queue.Queue[list[str]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.split(" ", 2))

    def next(self, word: str, timeout: float = 20.0) -> list[str]:
        """The rest of the next line starting with ``word`` (lines before it are skipped)."""
        while True:
            line = self.lines.get(timeout=timeout)
            if line[0] == word:
                return [part.strip() for part in line[1:]]

    def stop(self) -> int:
        """SIGTERM, and the exit status (the program is killed if it does not end in 20 s)."""
        self.process.terminate()
        timer = threading.Timer(20, self.process.kill)
        timer.start()
        status = self.process.wait()
        timer.cancel()
        return status


def _subscribed(port: int, client_id: str, program: Program, filters: list[str]) -> tuple[RawClient, str]:
    """A connected raw client subscribed to ``filters`` (QoS 1), and the pid of its worker."""
    client = RawClient("127.0.0.1", port)
    client.connect_ok(client_id)
    session_id, pid = program.next("SESSION")
    assert session_id == client_id
    client.send(encode(Subscribe(1, tuple(Subscription(f, 1) for f in filters)), 5) + PINGREQ)
    suback = client.recv_packet()
    assert isinstance(suback, Suback), "the SUBACK first: it answers the first packet"
    assert isinstance(client.recv_packet(), Pingresp)
    return client, pid


def _on_both_workers(program: Program, port: int, pids: set[str], kinds: tuple[str, ...],
                     filters: list[str], clients: list[RawClient]) -> dict[str, tuple[RawClient, str]]:
    """Subscribed clients named "<kind>-<n>", kinds in turn, until each kind is on each worker."""
    subscribers: dict[str, tuple[RawClient, str]] = {}
    for index in range(40):
        client_id = f"{kinds[index % len(kinds)]}-{index}"
        client, pid = _subscribed(port, client_id, program, filters)
        clients.append(client)
        subscribers[client_id] = (client, pid)
        held = {(cid.split("-")[0], p) for cid, (_, p) in subscribers.items()}
        if held == {(kind, p) for kind in kinds for p in pids}:
            return subscribers
    pytest.fail(f"40 connections did not land on both workers: {held}")


def _started(program: Program, clients: list[RawClient]) -> tuple[int, set[str], RawClient, str]:
    """The program's port and worker pids, and a connected publisher with its worker's pid."""
    port_text, pids_text = program.next("PORT")
    port, pids = int(port_text), set(map(str, json.loads(pids_text).values()))
    assert len(pids) == 2
    publisher = RawClient("127.0.0.1", port)
    clients.append(publisher)
    publisher.connect_ok("publisher")
    _, publisher_pid = program.next("SESSION")
    return port, pids, publisher, publisher_pid


def test_async_filters_in_two_workers_keep_order_and_refuse_what_the_acl_refuses() -> None:
    program = Program()
    clients: list[RawClient] = []
    try:
        port, pids, publisher, publisher_pid = _started(program, clients)
        subscribers = _on_both_workers(program, port, pids, ("insider", "outsider"),
                                       ["data/#", "private/#"], clients)
        assert any(pid != publisher_pid for _, pid in subscribers.values())

        count = 200
        packets = [Publish("private/x", b"p", 1, packet_id=1), Publish("denied/x", b"d", 1, packet_id=2)]
        packets += [Publish("data/x", str(n).encode(), 1, packet_id=n + 3) for n in range(count)]
        publisher.send(b"".join(encode(packet, 5) for packet in packets))
        acks = [publisher.recv_packet(timeout=10) for _ in packets]
        assert acks == [Puback(1, 0), Puback(2, 0x87)] + [Puback(n + 3, 0) for n in range(count)]

        for client_id, (client, _) in subscribers.items():
            expected = [] if client_id.startswith("outsider") else [("private/x", b"p!")]
            expected += [("data/x", f"{n}!".encode()) for n in range(count)]
            received = []
            for _ in expected:
                message = client.recv_packet(timeout=10)
                received.append((message.topic, bytes(message.payload)))
                client.send(Puback(message.packet_id))
            assert received == expected, f"{client_id} got them out of order or too many"
    finally:
        for client in clients:
            client.close()
        assert program.stop() == 0


def test_a_shared_group_across_two_workers_gets_each_message_once_past_the_async_acl() -> None:
    """Members of $share/g/jobs/# on both workers: the worker that picks a remote member hands
    the message over (deliver_shared), where the member's read ACL is awaited; insiders only may
    read jobs/private/..., so those go to an insider, on whichever worker."""
    program = Program()
    clients: list[RawClient] = []
    try:
        port, pids, publisher, _ = _started(program, clients)
        members = _on_both_workers(program, port, pids, ("insider", "outsider"),
                                   ["$share/g/jobs/#"], clients)
        count = 40
        topics = [f"jobs/{'private' if n % 4 == 0 else 'open'}/{n}" for n in range(count)]
        publisher.send(b"".join(encode(Publish(topic, b"", 1, packet_id=n + 1), 5)
                                for n, topic in enumerate(topics)))
        assert [publisher.recv_packet(timeout=10) for _ in topics] == [
            Puback(n + 1, 0) for n in range(count)]

        got: dict[str, str] = {}
        deadline = time.monotonic() + 10
        while len(got) < count and time.monotonic() < deadline:
            for client_id, (client, _) in members.items():
                try:
                    message = client.recv_packet(timeout=0.05)
                except NoPacket:
                    continue
                client.send(Puback(message.packet_id))
                assert message.topic not in got, f"{message.topic} delivered twice"
                got[message.topic] = client_id
        private = {topic for topic in topics if "/private/" in topic}
        delivered_private = {topic for topic, client_id in got.items() if topic in private}
        assert all(got[topic].startswith("insider") for topic in delivered_private), got
        assert set(got) - private == set(topics) - private, "an open job got lost"
        assert {pid for _, pid in members.values()} == pids
    finally:
        for client in clients:
            client.close()
        assert program.stop() == 0
