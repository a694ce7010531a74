"""[issue 4] Introspection with several workers: kushi.Server(Options(workers=2)).clients(),
client(id), subscriptions(id), disconnect_client(id, reason) and retained(filter) answer for the
clients of every worker (the supervisor asks them over the bus: kushi.cluster.introspection).

introspection_server.py embeds the server and runs each command the test writes to its stdin;
real paho clients are spread over both workers (cluster_support.worker_holding reads /proc).
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from cluster_support import worker_holding
from test_embedded import Program
from tests.support.paho import PahoClient
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(90)
PROGRAM = str(Path(__file__).with_name("introspection_server.py"))
ANSWER_TIMEOUT = 20.0


class IntrospectingProgram(Program):
    """introspection_server.py: ``ask`` writes one command and returns its answer."""

    def ask(self, *command: str) -> Any:
        assert self.process.stdin is not None
        self.process.stdin.write(" ".join(command) + "\n")
        self.process.stdin.flush()
        while True:
            kind, _, rest = self.lines.get(timeout=ANSWER_TIMEOUT).partition(" ")
            if kind == "ANSWER":
                return json.loads(rest)
            if kind == "ERROR":
                raise IntrospectionFailed(rest)


class IntrospectionFailed(Exception):
    """The program's call raised: the error class and message it printed."""


def spread_clients(port: int, pids: dict[int, int], clients: list[PahoClient]) -> dict[str, int]:
    """Connect v5 clients until every worker holds one; client id -> the worker holding it."""
    landed: dict[str, int] = {}
    index = 0
    while set(landed.values()) != set(pids):
        assert index < 40, f"40 connections all landed on workers {set(landed.values())}"
        client = PahoClient("127.0.0.1", port, f"c-{index}")
        client.client.username_pw_set(f"user-{index}")
        clients.append(client)
        client.connect(keepalive=45)
        worker = worker_holding(pids, port, client.client.socket().getsockname()[1])
        assert worker is not None, "no worker holds the connection"
        landed[f"c-{index}"] = worker
        index += 1
    return landed


def test_introspection_answers_for_the_clients_of_every_worker() -> None:
    program = IntrospectingProgram(PROGRAM, "2", "10")
    clients: list[PahoClient] = []
    try:
        port_text, pids_text = program.next_line("PORT").split(" ", 1)
        port, pids = int(port_text), {int(k): v for k, v in json.loads(pids_text).items()}
        assert set(pids) == {0, 1}
        landed = spread_clients(port, pids, clients)
        by_id = {f"c-{index}": client for index, client in enumerate(clients)}   # as connected
        first_on = {worker: next(c for c, w in landed.items() if w == worker) for worker in pids}

        listed = program.ask("clients")
        assert {(c["client_id"], c["worker_id"]) for c in listed} == set(landed.items())

        for worker, client_id in first_on.items():
            client = by_id[client_id]
            client.subscribe(f"w{worker}/+/status", 1)
            client.publish(f"a/{worker}", f"from worker {worker}".encode(), qos=1, retain=True)
            snapshot = program.ask("client", client_id)
            host, client_port = client.client.socket().getsockname()
            assert (snapshot["worker_id"], snapshot["protocol_version"], snapshot["username"],
                    snapshot["listener"], snapshot["keep_alive"], snapshot["remote_address"],
                    snapshot["subscriptions"]) == \
                (worker, 5, f"user-{client_id[2:]}", "t", 45, [host, client_port], 1)
            subscriptions = program.ask("subscriptions", client_id)
            assert list(subscriptions) == [f"w{worker}/+/status"]
            assert subscriptions[f"w{worker}/+/status"]["qos"] == 1

        assert program.ask("client", "nobody") is None
        assert program.ask("subscriptions", "nobody") == {}
        expected = [["a/0", "from worker 0", 1, True], ["a/1", "from worker 1", 1, True]]
        wait_until(lambda: sorted(program.ask("retained", "a/#")) == expected, timeout=10,
                   message="retained('a/#') listing the messages retained on both workers")

        for worker, client_id in first_on.items():
            assert program.ask("disconnect", client_id, "0x98") is True
            assert int(getattr(by_id[client_id].wait_disconnected(), "value", -1)) == 0x98
            wait_until(lambda: program.ask("client", client_id) is None, timeout=10,
                       message=f"{client_id} (worker {worker}) gone after disconnect_client")
        assert program.ask("disconnect", "nobody", "0x98") is False
        remaining = {c["client_id"] for c in program.ask("clients")}
        assert remaining == set(landed) - set(first_on.values())

        old = PahoClient("127.0.0.1", port, "old", version=4)   # 3.1.1 has no DISCONNECT to send
        clients.append(old)
        old.connect()
        worker = worker_holding(pids, port, old.client.socket().getsockname()[1])
        assert program.ask("client", "old")["worker_id"] == worker
        assert program.ask("disconnect", "old", "0x98") is True
        old.wait_disconnected()
    finally:
        for client in clients:
            client.stop()
        assert program.stop() == 0


def test_a_worker_that_does_not_answer_is_named_not_left_out() -> None:
    """A stopped worker (SIGSTOP): clients() raises BusError naming it instead of listing the
    other worker's clients alone; client(id) of a client on the answering worker still works."""
    program = IntrospectingProgram(PROGRAM, "2", "1")
    clients: list[PahoClient] = []
    stopped = None
    try:
        port_text, pids_text = program.next_line("PORT").split(" ", 1)
        port, pids = int(port_text), {int(k): v for k, v in json.loads(pids_text).items()}
        landed = spread_clients(port, pids, clients)
        on_worker_0 = next(client_id for client_id, worker in landed.items() if worker == 0)
        on_worker_1 = next(client_id for client_id, worker in landed.items() if worker == 1)
        stopped = pids[1]
        os.kill(stopped, signal.SIGSTOP)
        with pytest.raises(IntrospectionFailed, match=r"^BusError clients\(\): no answer from worker\(s\) w1 "):
            program.ask("clients")
        assert program.ask("client", on_worker_0)["worker_id"] == 0
        with pytest.raises(IntrospectionFailed, match="w1"):
            program.ask("client", on_worker_1)
        os.kill(stopped, signal.SIGCONT)
        stopped = None
        assert {c["client_id"] for c in program.ask("clients")} == set(landed)
    finally:
        if stopped is not None:
            os.kill(stopped, signal.SIGCONT)
        for client in clients:
            client.stop()
        assert program.stop() == 0
