"""Fixtures of the example tests: ``run_example`` starts a program of ``examples/`` (see example_process.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from example_process import LISTENING_TCP, ExampleProcess


@pytest.fixture
def run_example() -> Iterator[Callable[..., ExampleProcess]]:
    """A factory: ``run_example(script, *args, listening=REGEX)`` -> a started ExampleProcess.

    Request it before ``paho`` in a test's arguments, so clients stop before the process does.
    """
    started: list[ExampleProcess] = []

    def start(script: str, *args: str, listening: str = LISTENING_TCP) -> ExampleProcess:
        example = ExampleProcess(script, list(args))
        started.append(example)
        example.wait_listening_tcp(listening)
        return example

    yield start
    for example in started:
        example.stop()
