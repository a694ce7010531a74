"""``kushi serve`` as a subprocess, started the way a user starts it, with its log read line by line.

``serve("--tcp", "127.0.0.1:0", ...)`` starts the console script and waits
until each expected listener has logged ``kushi: listening KIND HOST:PORT``;
the bound ports are read from those lines. Every wait reads the process's
stderr with a deadline; nothing here sleeps.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

START_TIMEOUT = 15.0
"""Seconds for the interpreter to start and every listener to be open (2 shared cores)."""

LISTENING = re.compile(r"kushi: listening (\w+) \[?([^\s\]]*)\]?:(\d+)$")


def kushi_command() -> list[str]:
    """The installed ``kushi`` console script of this venv (``python -m`` if it is missing)."""
    script = Path(sys.executable).with_name("kushi")
    return [str(script)] if script.exists() else [sys.executable, "-m", "kushi.ops.cli"]


class KushiProcess:
    """A running ``kushi`` process; ``host``, ``port`` (TCP), ``ws_port``, ``http_port`` once started.

    ``command`` replaces the ``kushi`` console script, for a program that logs
    the same way (an example embedding ``kushi.Server``): ``KushiProcess(args,
    command=[sys.executable, "examples/x.py"])``.
    """

    def __init__(self, args: list[str], command: list[str] | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.args = args
        self.process = subprocess.Popen(
            (command or kushi_command()) + args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        self.listeners: dict[str, tuple[str, int]] = {}

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def mark(self) -> int:
        """The number of lines read so far: pass it as ``since`` to wait only for later lines."""
        with self._changed:
            return len(self.lines)

    @property
    def log(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def wait_for(self, pattern: str | re.Pattern[str], timeout: float = 5.0, since: int = 0) -> re.Match[str]:
        """The first log line from index ``since`` matching ``pattern``; fails after ``timeout``."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines[since:]:
                    match = regex.search(line)
                    if match:
                        return match
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.process.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(
                        f"no log line matching {regex.pattern!r} within {timeout} s "
                        f"(exit code {self.process.poll()}); log:\n" + "\n".join(self.lines))
                self._changed.wait(remaining)

    def wait_listening(self, kinds: list[str]) -> None:
        """Wait for a ``listening`` line of each kind; record the bound addresses."""
        for kind in kinds:
            match = self.wait_for(rf"kushi: listening {kind} ", timeout=START_TIMEOUT)
            parsed = LISTENING.search(match.string)
            assert parsed, f"unparsable listening line: {match.string!r}"
            self.listeners[kind] = (parsed.group(2), int(parsed.group(3)))

    @property
    def host(self) -> str:
        return self.listeners["tcp"][0]

    @property
    def port(self) -> int:
        return self.listeners["tcp"][1]

    @property
    def ws_port(self) -> int:
        return self.listeners["ws"][1]

    @property
    def http_port(self) -> int:
        return self.listeners["http"][1]

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait_exit(self, timeout: float) -> int:
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        """Teardown: SIGTERM, then SIGKILL if it does not exit in time; never leaves a server running."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self._reader.join(timeout=5)
        if self.process.stderr is not None:
            self.process.stderr.close()


def run_kushi(*args: str, timeout: float = START_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run ``kushi ARGS`` to completion (for commands that end by themselves)."""
    return subprocess.run(kushi_command() + list(args), capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
