"""Several bus nodes with fabrics in one process (each with its own ZeroMQ context), for tests.

All nodes run on one event loop: what a node does in one handler runs before any other
node reads its bus, which lets a test place an action exactly between two bus items
(``before_handling``, ``after_handling``).
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable

from kushi.cluster.fabric import BusFabric
from kushi.protocol.packets import Publish
from kushi.router.bus import Bus, make_runtime_dir

DEADLINE = 10.0


class RecordingSink:
    """Stands in for a broker: records what the fabric delivers and the retained state it applies."""

    def __init__(self) -> None:
        self.delivered: list[Publish] = []
        self.retained: dict[str, Publish] = {}
        self.sessions: dict[str, object] = {}
        self.exported: list[str] = []
        self.to_sessions: list[tuple[str, Publish]] = []   # hand-over deliveries (client id, message)
        self.changed = asyncio.Event()

    def deliver_remote(self, message: Publish) -> None:
        self.delivered.append(message)
        self.changed.set()

    def export_session(self, client_id: str, new_node: str) -> object | None:
        """A takeover: give up the session held here (as a broker would, closing with 0x8E)."""
        self.exported.append(client_id)
        return self.sessions.pop(client_id, None)

    def deliver_to_session(self, client_id: str, qos: int, retain: bool,
                           identifiers: tuple[int, ...], message: Publish) -> bool:
        """A message forwarded by the session's previous holder."""
        self.to_sessions.append((client_id, message))
        return True

    def apply_retained(self, message: Publish) -> None:
        if message.payload:
            self.retained[message.topic] = message
        else:
            self.retained.pop(message.topic, None)
        self.changed.set()


async def until(condition: Callable[[], bool]) -> None:
    """Wait (bounded) until ``condition()`` holds, re-checking after every loop iteration."""
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.002)  # re-check the condition; bounded by DEADLINE
    await asyncio.wait_for(poll(), DEADLINE)


def before_handling(bus: Bus, kind: str, action: Callable[[], None]) -> None:
    """Run ``action()`` once, right before ``bus`` handles the next item of ``kind``: what the
    node does then, it does before it has heard that item (and anything after it)."""
    _on_next(bus, kind, action, first=True)


def after_handling(bus: Bus, kind: str, action: Callable[[], None]) -> None:
    """Run ``action()`` once, right after ``bus`` handled the next item of ``kind``, before
    the items behind it in its batch."""
    _on_next(bus, kind, action, first=False)


def _on_next(bus: Bus, kind: str, action: Callable[[], None], first: bool) -> None:
    handle = bus._handlers[kind]   # the handler the node registered (Bus.on)

    def handle_with_action(sender: str, payload: bytes) -> None:
        bus.on(kind, handle)
        if first:
            action()
        handle(sender, payload)
        if not first:
            action()
    bus.on(kind, handle_with_action)


class Cluster:
    def __init__(self) -> None:
        self.runtime_dir = make_runtime_dir()
        self.nodes: dict[str, tuple[Bus, BusFabric, RecordingSink]] = {}

    async def add(self, name: str, worker_id: int) -> tuple[Bus, BusFabric, RecordingSink]:
        registrar = next(iter(self.nodes), None)   # the first node added joins nobody
        bus = Bus(name, self.runtime_dir, registrar=registrar)
        fabric = BusFabric(bus, worker_id)
        sink = RecordingSink()
        await bus.start()
        await fabric.sync()
        fabric.attach(sink)
        self.nodes[name] = (bus, fabric, sink)
        return bus, fabric, sink

    async def close(self) -> None:
        for bus, _, _ in self.nodes.values():
            await bus.close()
        shutil.rmtree(self.runtime_dir, ignore_errors=True)


def run(scenario) -> None:
    async def main() -> None:
        cluster = Cluster()
        try:
            await scenario(cluster)
        finally:
            await cluster.close()
    asyncio.run(asyncio.wait_for(main(), DEADLINE * 3))
