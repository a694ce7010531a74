"""Several bus nodes with fabrics in one process (each with its own ZeroMQ context), for tests.

A node's fabric serves a ``RecordingSink`` (``Cluster.add``: the fabric alone) or a real
broker (``Cluster.add_server``: a started ``kushi.Server`` with a TCP listener).

All nodes run on one event loop: what a node does in one handler runs before any other
node reads its bus, which lets a test place an action exactly between two bus items
(``before_handling``, ``after_handling``).
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from typing import Any

import kushi
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
        self.nodes: dict[str, tuple[Bus, BusFabric, Any]] = {}   # (bus, fabric, its sink)
        self.servers: list[kushi.Server] = []

    async def add(self, name: str, worker_id: int) -> tuple[Bus, BusFabric, RecordingSink]:
        bus, fabric = await self._join(name, worker_id)
        sink = RecordingSink()
        fabric.attach(sink)
        self.nodes[name] = (bus, fabric, sink)
        return bus, fabric, sink

    async def add_server(self, name: str, worker_id: int) -> tuple[Bus, BusFabric, kushi.Server]:
        """A node whose fabric serves a started ``kushi.Server`` (TCP on 127.0.0.1, port
        ``server.listeners["tcp"].port``), as a worker process sets one up."""
        bus, fabric = await self._join(name, worker_id)
        server = kushi.Server(kushi.Options(sys_interval=0))
        server.worker_id = worker_id
        server.fabric = fabric
        server.add_listener(kushi.TCP("tcp", "127.0.0.1:0"))
        await server.start()   # attaches the broker to the fabric
        self.servers.append(server)
        self.nodes[name] = (bus, fabric, server.broker)
        return bus, fabric, server

    async def _join(self, name: str, worker_id: int) -> tuple[Bus, BusFabric]:
        """A started bus node with its fabric, synced with the nodes added before."""
        registrar = next(iter(self.nodes), None)   # the first node added joins nobody
        bus = Bus(name, self.runtime_dir, registrar=registrar)
        fabric = BusFabric(bus, worker_id)
        await bus.start()
        await fabric.sync()
        return bus, fabric

    async def close(self) -> None:
        for server in self.servers:
            await server.close()
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
