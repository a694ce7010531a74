"""The supervisor embedded in a program: its inline client reaches every worker; stats add up."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from cluster_support import worker_holding
from tests.support.paho import PahoClient

pytestmark = pytest.mark.timeout(60)
PROGRAM = str(Path(__file__).with_name("embedded_supervisor.py"))


class Program:
    """embedded_supervisor.py (or ``program`` run with ``args``) as a child process; its stdout
    lines in a queue; ``process.stdin`` is a pipe to it."""

    def __init__(self, program: str = PROGRAM, *args: str) -> None:
        self.stderr = tempfile.TemporaryFile(mode="w+")   # its log, shown when it exits badly
        self.process = subprocess.Popen([sys.executable, program, *args], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=self.stderr, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def next_line(self, prefix: str, timeout: float = 20.0) -> str:
        while True:
            line = self.lines.get(timeout=timeout)
            if line.startswith(prefix):
                return line[len(prefix):].strip()

    def exchange_on_every_worker(self, port: int, pids: dict[int, int], clients: list[PahoClient],
                                 retained_topic: str, inbound_prefix: str) -> int:
        """Connect clients until some have landed on every worker; each one must get the program's
        retained ``retained_topic`` ("hi") and reach its inline subscription on ``inbound_prefix``/#.
        Returns how many clients it took."""
        workers_seen: set[int | None] = set()
        index = 0
        while workers_seen != set(pids):
            assert index < 40, f"40 connections all landed on workers {workers_seen}"
            client = PahoClient("127.0.0.1", port, f"{inbound_prefix}-{index}")
            clients.append(client)
            client.connect()
            workers_seen.add(worker_holding(pids, port, client.client.socket().getsockname()[1]))
            client.subscribe(retained_topic, qos=1)
            message = client.wait_for_message(timeout=5)
            assert (message.topic, message.payload, message.retain) == (retained_topic, b"hi", True)
            client.publish(f"{inbound_prefix}/{index}", str(index).encode(), qos=1)
            assert self.next_line("INLINE") == f"{inbound_prefix}/{index} {index}"
            index += 1
        return index

    def stop(self) -> int:
        """SIGTERM; the exit code. A non-zero code is printed with the program's log tail
        (pytest shows it with the failing assertion)."""
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        if code != 0:
            self.stderr.seek(0)
            print(f"{self.process.args[1]} exited {code}; its log ends with:",
                  *self.stderr.read().splitlines()[-30:], sep="\n")
        self.stderr.close()
        return code


def test_inline_client_of_the_supervisor_reaches_every_worker_and_stats_add_up() -> None:
    """[issue 3, inline node] What the supervisor publishes reaches clients on every worker, what
    they publish reaches the supervisor's subscription, and its statistics add the workers up."""
    program = Program()
    clients: list[PahoClient] = []
    try:
        port_text, pids_text = program.next_line("PORT").split(" ", 1)
        port, pids = int(port_text), {int(k): v for k, v in json.loads(pids_text).items()}
        assert set(pids) == {0, 1}
        index = program.exchange_on_every_worker(port, pids, clients, "from-sup/hello", "to-sup")
        deadline = time.monotonic() + 10
        while True:   # the workers report every STATS_INTERVAL: wait for a snapshot after the above
            clients[0].publish("to-sup/stats", b"", qos=1)
            program.next_line("INLINE")
            stats = json.loads(program.next_line("STATS"))
            if stats["clients_connected"] == index and stats["messages_received"] > index \
                    or time.monotonic() > deadline:
                break
            time.sleep(0.1)   # re-ask after the next snapshots; bounded by the deadline
        assert stats["clients_connected"] == index and stats["messages_received"] > index, stats
        assert (stats["workers"], stats["retained"], stats["bus_gaps"]) == (2, 1, 0)
    finally:
        for client in clients:
            client.stop()
        assert program.stop() == 0


def test_inline_subscription_of_the_supervisor_gets_the_retained_messages_of_every_worker() -> None:
    """[MQTT-3.3.1-9] A retained message set through a worker reaches a later inline
    subscription of the supervisor before ``subscribe`` returns, with RETAIN = 1 (as a worker's
    inline client hands them over): set just before, its gossip may still be on the way, which
    the subscription's barrier waits for."""
    program = Program()
    clients: list[PahoClient] = []
    try:
        port = int(program.next_line("PORT").split(" ", 1)[0])
        client = PahoClient("127.0.0.1", port, "retainer")
        clients.append(client)
        client.connect()
        client.publish("status/unit-7", b"online", qos=1, retain=True)   # waits for the PUBACK
        assert program.process.stdin is not None
        program.process.stdin.write("SUB status/#\n")
        program.process.stdin.flush()
        assert program.next_line("LATE") == "status/unit-7 online 1"
        assert program.next_line("SUBSCRIBED") == "status/#"
    finally:
        for client in clients:
            client.stop()
        assert program.stop() == 0
