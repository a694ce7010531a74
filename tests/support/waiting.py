"""Waiting for a condition with a deadline: the alternative to sleeping in a test."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(condition: Callable[[], T], timeout: float = 2.0, interval: float = 0.02,
               message: str = "condition") -> T:
    """Poll ``condition`` until it returns a truthy value, and return that value.

    For state that offers no event to wait on (e.g. the broker's client table).
    Fails the test with ``message`` if ``timeout`` seconds pass first.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{message} not reached within {timeout} s")
        time.sleep(interval)


def let_time_pass(seconds: float) -> None:
    """Let a broker timer run out (message expiry, session expiry, will delay).

    This is not waiting *for* something: the passing of time is the input of the
    test. Keep ``seconds`` just above the timer under test.
    """
    time.sleep(seconds)
