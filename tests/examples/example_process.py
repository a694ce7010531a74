"""An example program running as a subprocess, its log read line by line with deadlines.

``ExampleProcess("acl_example.py", ["--tcp", "127.0.0.1:0"])`` starts
``python examples/acl_example.py --tcp 127.0.0.1:0`` the way a user does. It is
the ops tests' ``KushiProcess`` (log collected by a thread from stderr,
``wait_for`` with a deadline, ``stop`` by SIGTERM then SIGKILL) running an
example instead of ``kushi serve``. ``wait_listening_tcp`` reads the bound
address from the ``listening tcp HOST:PORT`` line, whether the example prints
it itself (``kushi: listening tcp ...``) or leaves it to ``Server.run()``
(``kushi.server: worker 0 listening tcp ...``); the object then has ``host``
and ``port`` and can be handed to the ``paho`` factory like a broker.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path

from ops.kushi_process import START_TIMEOUT, KushiProcess

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

WAIT = 5.0
"""Seconds to wait for a log line that must come."""

LISTENING_TCP = r"listening tcp \[?([^\s\]]+)\]?:(\d+)$"


class ExampleProcess(KushiProcess):
    """``python examples/SCRIPT ARGS`` with its log (stderr) collected line by line."""

    def __init__(self, script: str, args: list[str]) -> None:
        # Not super().__init__(), which would start ``kushi serve``: the same state, another command.
        self.args = args
        self.process = subprocess.Popen(
            [sys.executable, str(EXAMPLES / script), *args], stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        self.listeners: dict[str, tuple[str, int]] = {}

    def mark(self) -> int:
        """The number of lines read so far: pass it as ``since`` to wait only for later lines."""
        with self._changed:
            return len(self.lines)

    def wait_listening_tcp(self, pattern: str = LISTENING_TCP) -> None:
        """Wait for the first line matching ``pattern`` that gives the TCP listener's address."""
        line = self.wait_for(pattern, timeout=START_TIMEOUT).string
        parsed = re.search(LISTENING_TCP, line)
        assert parsed, f"no address in the listening line {line!r}"
        self.listeners["tcp"] = (parsed.group(1), int(parsed.group(2)))


def run_to_completion(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run an example command that ends by itself (e.g. ``--add-device``)."""
    return subprocess.run([sys.executable, str(EXAMPLES / script), *args], capture_output=True,
                          text=True, timeout=START_TIMEOUT, stdin=subprocess.DEVNULL)
