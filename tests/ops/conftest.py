"""Fixtures of the ops tests: ``serve`` starts ``kushi serve`` as a subprocess (see kushi_process.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from kushi_process import KushiProcess


@pytest.fixture
def serve() -> Iterator[Callable[..., KushiProcess]]:
    """A factory: ``serve(*args, listening=["tcp", "ws", "http"])`` -> a started KushiProcess.

    Request it before ``paho`` in a test's arguments, so clients stop before the process does.
    """
    started: list[KushiProcess] = []

    def start(*args: str, listening: list[str] | None = None) -> KushiProcess:
        process = KushiProcess(["serve", *args])
        started.append(process)
        process.wait_listening(listening if listening is not None else ["tcp", "ws", "http"])
        return process

    yield start
    for process in started:
        process.stop()
