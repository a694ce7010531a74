"""Shared fixtures: a real kushi broker on real sockets, one per test.

The broker runs in a background thread on its own event loop (uvloop when it is
installed), exactly as an embedding program would run it, and the test talks to
it over TCP or WebSocket from the test thread. ``broker.call(coro)`` runs a
coroutine on the broker's loop (the inline client and introspection:
``server.publish``, ``server.clients()`` ...)
and ``broker.sync(fn)`` runs a plain function there (for what is not thread-safe,
such as reading ``server.broker``).

Anything that escapes to the broker loop's exception handler (an exception in a
protocol callback, a task whose exception nobody retrieved) is a broker bug: it
is collected and fails the test at teardown.

kushi is imported inside the fixtures, not at module level, so that a missing or
broken broker package fails the tests that need a broker and not the collection
of every other test directory.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest

T = TypeVar("T")

STOP_TIMEOUT = 5.0
"""Seconds a broker may take to start or to close before the fixture gives up."""


def _new_event_loop() -> asyncio.AbstractEventLoop:
    """A uvloop loop when uvloop is available (as in production), else asyncio's."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class RunningBroker:
    """A started ``kushi.Server`` on a loop in a background thread.

    Attributes: ``server`` (the kushi.Server), ``host``, ``port`` (TCP),
    ``ws_port`` (WebSocket), ``loop``, ``options``, and ``loop_errors`` (the
    contexts the loop's exception handler received).
    """

    def __init__(self, options: Any, hooks: list[Any]) -> None:
        import kushi

        self.options = options
        self.loop = _new_event_loop()
        self.loop_errors: list[dict[str, Any]] = []
        self.loop.set_exception_handler(self._record_loop_error)
        self._thread = threading.Thread(target=self._run_loop, name="kushi-broker", daemon=True)
        self._thread.start()
        self.server = kushi.Server(options)
        for hook in hooks:
            self.server.add_hook(hook)
        self.server.add_listener(kushi.TCP("tcp", "127.0.0.1:0"))
        self.server.add_listener(kushi.WebSocket("ws", "127.0.0.1:0"))
        try:
            self.call(self.server.start(), timeout=STOP_TIMEOUT)
        except BaseException:
            self._stop_loop()
            raise
        self.host = "127.0.0.1"
        self.port: int = self.server.listeners["tcp"].port
        self.ws_port: int = self.server.listeners["ws"].port
        self._closed = False

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def _record_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        self.loop_errors.append(context)
        loop.default_exception_handler(context)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 5.0) -> T:
        """Run ``coro`` on the broker's loop and return its result (or raise its error)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def sync(self, fn: Callable[..., T], *args: Any, timeout: float = 5.0) -> T:
        """Call the plain function ``fn(*args)`` on the broker's loop and return its result."""

        async def run() -> T:
            return fn(*args)

        return self.call(run(), timeout=timeout)

    def close(self) -> None:
        """Close the server gracefully, then stop the loop and its thread."""
        if self._closed:
            return
        self._closed = True
        try:
            self.call(self.server.close(), timeout=STOP_TIMEOUT)
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(STOP_TIMEOUT)
        if not self._thread.is_alive():
            self.loop.close()

    def describe_loop_errors(self) -> str:
        return "\n".join(
            f"{ctx.get('message')}: {ctx.get('exception')!r}" for ctx in self.loop_errors
        )


@pytest.fixture
def make_broker() -> Iterator[Callable[..., RunningBroker]]:
    """A factory: ``make_broker(hooks=[...], **option_overrides)`` starts a broker.

    Option overrides are fields of ``kushi.Options`` (receive_maximum=2,
    connect_timeout=0.5, ...). $SYS publishing is off unless a test asks for it.
    Every broker made is closed after the test, and the test fails if anything
    reached a broker loop's exception handler.
    """
    started: list[RunningBroker] = []

    def make(hooks: list[Any] | None = None, **overrides: Any) -> RunningBroker:
        import kushi

        overrides.setdefault("sys_interval", 0)
        running = RunningBroker(kushi.Options(**overrides), hooks or [])
        started.append(running)
        return running

    yield make
    errors = []
    for running in started:
        running.close()
        if running.loop_errors:
            errors.append(running.describe_loop_errors())
    assert not errors, "unhandled errors on the broker loop:\n" + "\n".join(errors)


@pytest.fixture
def broker(make_broker: Callable[..., RunningBroker]) -> RunningBroker:
    """A broker with default Options, TCP and WebSocket listeners on 127.0.0.1 port 0."""
    return make_broker()


@pytest.fixture
def paho(make_broker: Callable[..., RunningBroker]) -> Iterator[Any]:
    """A factory of paho-mqtt clients: ``paho(broker, "id", version=4)`` (not yet connected)
    or ``paho.connected(broker, "id", version=5)``. All are stopped after the test,
    before the brokers close."""
    from support.paho import PahoFactory

    factory = PahoFactory()
    yield factory
    factory.stop_all()


@pytest.fixture
def raw(make_broker: Callable[..., RunningBroker]) -> Iterator[Callable[..., Any]]:
    """A factory of raw-socket clients: ``raw(broker, version=5)``; all closed after the test."""
    from support.rawclient import RawClient

    made: list[Any] = []

    def make(running: RunningBroker, version: int = 5) -> Any:
        client = RawClient(running.host, running.port, version)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()
