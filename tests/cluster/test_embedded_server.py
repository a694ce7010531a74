"""kushi.Server(Options(workers=N)) in a program: the program becomes the supervisor.

ARCHITECTURE.md, "Embedding": with workers > 1 the calling process is the supervisor
and a node on the bus, hooks are created before the fork and run in each worker, and
the inline client reaches every worker.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from test_embedded import Program
from tests.support.paho import PahoClient

pytestmark = pytest.mark.timeout(60)
PROGRAM = str(Path(__file__).with_name("embedded_server.py"))


def test_server_with_workers_forks_runs_hooks_in_workers_and_inline_client_reaches_all() -> None:
    program = Program(PROGRAM)
    clients: list[PahoClient] = []
    try:
        assert program.next_line("INTROSPECTION") == "0"
        port_text, pids_text = program.next_line("PORT").split(" ", 1)
        port, pids = int(port_text), {int(k): v for k, v in json.loads(pids_text).items()}
        assert len(pids) == 2, f"expected two forked workers, found {pids}"

        refused = PahoClient("127.0.0.1", port, "intruder-1")
        clients.append(refused)
        refused.client.username_pw_set("intruder")
        _, reason_code, _ = refused.connect(expect_success=False)
        assert reason_code.is_failure, "the hook added before start() must run in the workers"

        program.exchange_on_every_worker(port, pids, clients, "from-server/hello", "to-server")
    finally:
        for client in clients:
            client.stop()
        assert program.stop() == 0
