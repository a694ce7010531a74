"""One worker process of a multi-process broker: what runs after the supervisor forks.

Boot order (each step waits for the one before):

1. a fresh event loop (uvloop) and a fresh ZeroMQ context: nothing of the
   supervisor's loop or sockets is touched in the child;
2. join the bus (handshake with every member) and take a snapshot of the
   interest table and retained messages (``BusFabric.sync``);
3. tell the supervisor "synced" and wait for its answer: at first boot the
   supervisor answers when every worker has synced, so no listener opens
   while a worker is still joining;
4. ``Server.start()`` opens the SO_REUSEPORT listeners on the ports the
   supervisor reserved; report "ready" with the bound addresses.

An exception during boot is reported to the supervisor ("boot_failed", with
the message) and the process exits with ``EXIT_BOOT_FAILED``: the supervisor
then stops the whole server instead of restarting the worker in a loop.

Signals: SIGTERM closes gracefully (listeners first, v5 clients get
DISCONNECT 0x8B); SIGINT and SIGQUIT exit at once; SIGHUP reloads every hook
that has ``reload()`` (auth files) in place, keeping every connection.
The supervisor can also send "retire" over the bus: the worker closes with
0x9C (use another server), for SIGTTOU scaling down, and stays on the bus
until its clients' sessions have been taken over by the other workers.

Every second the worker sends the supervisor a snapshot of its counters
(``stats``), which the supervisor adds up for metrics and $SYS. It answers
the supervisor's introspection requests (``clients()``, ``client(id)``...
of ``kushi.Server`` with workers: ``kushi.cluster.introspection``).

Storage (a hook with the ``stored_*`` loaders, e.g. ``kushi serve --storage``):
every worker opens the same store. ``Server.start()`` restores the stored
sessions the session directory lets this worker *adopt* (those no live
worker holds), so at first boot each lands on one worker, and after a crash
the dead worker's sessions come back. The surviving workers adopt them as
soon as the dead one has left the bus (its clients reconnect at once, to
them), and whatever is left when it restarts goes to it. Wills are not
restored: the session directory keeps and publishes those of a dead worker.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import logging
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from ..hooks.base import Hook
from ..protocol.packets import MQTT_5
from ..router.bus import Bus
from ..worker.options import Options
from ..worker.server import Server
from ..worker.sys_info import SYS_INFO
from .client_limit import CONNECTED_COUNTS, ClusterClientLimit
from .fabric import BusFabric
from .handover import HandOver
from .introspection import IntrospectionService
from .session_hook import ClusterSessionHook

log = logging.getLogger("kushi.cluster")

EXIT_BOOT_FAILED = 78        # EX_CONFIG: the worker could not start; do not restart it
SUPERVISOR = "sup"
CONTROL = "ctl"              # bus kind of supervisor -> worker commands
RETIRE = b"retire"
USE_ANOTHER_SERVER = 0x9C
SERVER_SHUTTING_DOWN = 0x8B
BOOT_TIMEOUT = 120.0         # how long a worker waits for the others to sync
RETIRE_GRACE = 10.0          # how long a retiring worker waits for its sessions to be taken over
OPTIONS = "options"          # bus kind: options changed by a SIGHUP reload, for every worker
STATS = "stats"              # bus kind: a worker's statistics snapshot, for the supervisor
STATS_INTERVAL = 1.0         # seconds between two snapshots
GC_YOUNG_THRESHOLD = 30_000  # allocations between two young-generation collections (CPython: 700)


def node_name(worker_id: int) -> str:
    """The bus name of worker ``worker_id``."""
    return f"w{worker_id}"


@dataclass
class WorkerSpec:
    """Everything a forked worker needs; built by the supervisor before the fork."""

    worker_id: int
    runtime_dir: str
    options: Options
    listeners: Sequence[Any]
    hooks: Sequence[tuple[Hook, object | None]]   # (hook, config), added in this order


class _ServerSink:
    """The fabric's sink for a Server whose broker is created inside ``start()``.

    Until the broker exists nothing can be delivered locally anyway (no
    client is connected); retained messages arriving then are kept by the
    fabric and applied by ``attach`` once the broker is there.
    """

    def __init__(self, server: Server, handover: HandOver) -> None:
        self.server = server
        self.handover = handover
        self._source_version_known: bool | None = None

    def deliver_remote(self, message: Any) -> None:
        broker = self.server.broker
        if broker is None:
            return
        if self._tells_source_version(broker):
            broker.deliver_remote(message, source_version=MQTT_5)   # raw v5 bytes reused
        else:
            broker.deliver_remote(message)

    def deliver_remote_run(self, run: list[Any], source_version: int) -> None:
        """A run of messages another worker received, as the bytes its client sent."""
        broker = self.server.broker
        if broker is not None:
            broker.deliver_remote_run(run, source_version)

    def _tells_source_version(self, broker: Any) -> bool:
        """Does this broker's deliver_remote take the wire version of the message (cached)?"""
        if self._source_version_known is None:
            parameters = inspect.signature(broker.deliver_remote).parameters
            self._source_version_known = "source_version" in parameters
        return self._source_version_known

    def apply_retained(self, message: Any) -> None:
        if self.server.broker is not None:
            self.server.broker.apply_retained(message)

    def export_session(self, client_id: str, new_node: str) -> Any:
        """A takeover by ``new_node``: close the connection here (0x8E), give the session up,
        and forward what still arrives here for it (``kushi.cluster.handover``)."""
        broker = self.server.broker
        session = broker.export_session(client_id, time.monotonic()) if broker is not None else None
        if session is not None:
            self.handover.forward_moved(session, new_node)
        return session

    def deliver_shared(self, group: str, filter: str, message: Any) -> bool:
        """A message another worker picked this one for: one local member of the group gets it."""
        deliver = getattr(self.server.broker, "deliver_shared", None)
        return bool(deliver is not None and deliver(group, filter, message))

    def deliver_to_session(self, client_id: str, qos: int, retain: bool,
                           identifiers: tuple[int, ...], message: Any) -> bool:
        return self.handover.deliver_to_session(client_id, qos, retain, identifiers, message)


class WorkerProcess:
    """The broker of one worker, its bus node and its fabric."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.bus = Bus(node_name(spec.worker_id), spec.runtime_dir, registrar=SUPERVISOR,
                       join_timeout=30.0)
        self.fabric = BusFabric(self.bus, spec.worker_id)
        self.server = Server(spec.options)
        self.server.worker_id = spec.worker_id
        self.server.fabric = self.fabric
        self.server.adopt = self.fabric.sessions.adopt
        self.server.restore_wills = False
        self.stopping: asyncio.Future[int] | None = None
        self.bus.on(CONTROL, self._on_control)
        self.bus.on_peer_left.append(self._on_peer_left)
        self.bus.on(SYS_INFO, self._on_sys_info)
        self.bus.on(OPTIONS, self._on_options)
        IntrospectionService(self.bus, self.server)   # the supervisor's clients(), client(id)...
        self.client_limit: ClusterClientLimit | None = None
        if spec.options.max_clients:
            self.client_limit = ClusterClientLimit(self.server, node_name(spec.worker_id))
            self.bus.on(CONNECTED_COUNTS, self._on_connected_counts)

    async def run(self) -> int:
        """Boot, serve until told to stop, close; returns the process exit code."""
        loop = asyncio.get_running_loop()
        self.stopping = loop.create_future()
        try:
            await self._boot()
        except Exception as exc:
            log.error("worker %d failed at boot: %s", self.spec.worker_id, exc)
            try:
                await self.bus.request(SUPERVISOR, "boot_failed",
                                       msgpack.packb((type(exc).__name__, str(exc))), timeout=2.0)
            except Exception:
                pass  # the exit code says it as well
            return EXIT_BOOT_FAILED
        self._install_signal_handlers(loop)
        reporting = loop.create_task(self._report_stats())
        reason_code = await self.stopping
        reporting.cancel()
        await self.server.close(reason_code)
        if reason_code == USE_ANOTHER_SERVER:
            await self._hand_sessions_over(RETIRE_GRACE)
        await self.bus.close()
        return 0

    async def _hand_sessions_over(self, grace: float) -> None:
        """Retiring: stay on the bus until the clients told 0x9C took their sessions elsewhere.

        Each reconnecting client's new worker takes its session over from here;
        sessions whose clients do not come back within ``grace`` are lost.
        """
        broker = self.server.broker
        deadline = asyncio.get_running_loop().time() + grace
        while broker is not None and broker.sessions and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)   # re-check; takeovers are served meanwhile
        if broker is not None and broker.sessions:
            log.warning("worker %d retired with %d sessions not taken over", self.spec.worker_id,
                        len(broker.sessions))

    async def _boot(self) -> None:
        if self.client_limit is not None:   # first: a refused client meets no other hook
            self.server.add_hook(self.client_limit)
        for hook, config in self.spec.hooks:
            self.server.add_hook(hook, config)
        self.server.add_hook(ClusterSessionHook(self.fabric, self.server))  # last: after every auth hook
        for listener in self.spec.listeners:
            self.server.add_listener(listener)
        await self.bus.start()
        await self.fabric.sync()
        await self.bus.request(SUPERVISOR, "synced", timeout=BOOT_TIMEOUT)
        # Server.start() attaches the sink before any listener opens, so the synced
        # retained messages are in the broker before the first client can subscribe
        self.server.fabric_sink = _ServerSink(self.server, HandOver(self.fabric, self.server))
        tune_garbage_collector()
        await self.server.start()
        addresses = [(handle.config.id, getattr(handle.config, "kind", "?"), handle.host, handle.port)
                     for handle in self.server.listeners.values()]
        await self.bus.request(SUPERVISOR, "ready", msgpack.packb(addresses))

    async def _report_stats(self) -> None:
        """Send the supervisor a snapshot of this worker's counters every STATS_INTERVAL seconds.

        The supervisor answers metrics scrapes and $SYS from the latest
        snapshots; it never asks a worker on a scrape.
        """
        while True:
            self.bus.send(SUPERVISOR, STATS, msgpack.packb(self.stats()))
            await asyncio.sleep(STATS_INTERVAL)

    def stats(self) -> dict[str, int]:
        """The server's counters and the bus's, flat."""
        bus, fabric = self.bus.stats, self.fabric.stats
        return {**self.server.stats(), "bus_gaps": bus.gaps, "bus_batches_sent": bus.batches_sent,
                "bus_batches_received": bus.batches_received, "bus_forwarded": fabric.forwarded,
                "bus_delivered_remote": fabric.delivered_remote}

    def _install_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.add_signal_handler(signal.SIGTERM, self.stop, SERVER_SHUTTING_DOWN)
        for signum in (signal.SIGINT, signal.SIGQUIT):
            loop.add_signal_handler(signum, os._exit, 0)
        loop.add_signal_handler(signal.SIGHUP, self.reload)

    def stop(self, reason_code: int) -> None:
        """Close gracefully; clients are told ``reason_code`` (v5)."""
        if self.stopping is not None and not self.stopping.done():
            log.info("worker %d stopping (reason 0x%02X)", self.spec.worker_id, reason_code)
            self.stopping.set_result(reason_code)

    def reload(self) -> None:
        """SIGHUP: reload every hook that can (auth files) without touching a connection."""
        reload_hooks([hook for hook, _ in self.spec.hooks])

    def _on_sys_info(self, sender: str, payload: bytes) -> None:
        """The supervisor's whole-broker statistics: this worker's hooks' ``on_sys_info_tick``."""
        hooks = self.server.hooks
        if hooks.provides("on_sys_info_tick"):
            hooks.on_sys_info_tick({**msgpack.unpackb(payload), "worker_id": self.spec.worker_id})

    def _on_peer_left(self, node: str) -> None:
        """Another worker died or retired: restore the stored sessions it held (storage only)."""
        broker = self.server.broker
        if node != SUPERVISOR and broker is not None and self.server.hooks.provides("stored_clients"):
            broker.spawn(self.server.restore_stored_sessions())

    def _on_connected_counts(self, sender: str, payload: bytes) -> None:
        if self.client_limit is not None:
            self.client_limit.counts_received(msgpack.unpackb(payload))

    def _on_options(self, sender: str, payload: bytes) -> None:
        """The supervisor's SIGHUP reload: options (and the log level) changed in place."""
        change = msgpack.unpackb(payload)
        self.server.options.change(change["options"])
        if change["log_level"]:
            logging.getLogger().setLevel(change["log_level"].upper())
        log.info("SIGHUP: options changed: %s", ", ".join(
            [f"{name}={value!r}" for name, value in change["options"].items()]
            + ([f"log_level={change['log_level']}"] if change["log_level"] else [])))

    def _on_control(self, sender: str, payload: bytes) -> None:
        if payload == RETIRE:
            self.stop(USE_ANOTHER_SERVER)


def reload_hooks(hooks: Sequence[Hook]) -> None:
    """Call ``reload()`` on each hook that has it, and log what came of it.

    A hook that cannot read its file keeps its old rules (it never opens
    access) and says so by raising or returning False; the error is logged,
    so a bad edit does not take the broker down.
    """
    for hook in hooks:
        reload = getattr(hook, "reload", None)
        if reload is None:
            continue
        name = getattr(hook, "id", type(hook).__name__)
        try:
            reloaded = reload() is not False
        except Exception:
            log.exception("SIGHUP: reloading %s failed", name)
            reloaded = False
        if reloaded:
            log.info("SIGHUP: reloaded %s", name)
        else:
            log.error("SIGHUP: %s kept its previous rules (see the error above)", name)


def tune_garbage_collector() -> None:
    """The worker's garbage collector, set for connection storms (issue 5, S5).

    Every CONNECT allocates a dozen container objects that live as long as the
    client (connection, reader, session and its containers, the CONNECT record):
    with CPython's default young threshold (700) a storm of 10,000 clients ran
    ~320 young, ~29 middle and 2 full collections, the full ones over every live
    client, ~0.24-0.31 s of a storm's ~1.3 s of CPU (gc callbacks, one-process
    server). A young generation of 10,000 objects: 84, 6 and no full collection,
    ~0.10-0.14 s. Counted live (``benchmarks/callgrind_storm.py serve -n 10000``, the
    worker's instructions per connect): 91,351 with 10,000, 85,189 with 30,000, 84,963
    with 50,000, 84,859 with 100,000; so 30,000, the smallest young generation near that
    floor (each young collection is a pause over up to that many objects; they come
    only as tracked objects accumulate, in a storm, not with the message flow).
    ``gc.freeze()`` first puts what start-up made
    (modules, hooks, the bus) out of the collector's sight for good: it is never
    garbage, and full collections no longer walk it. Here, in the worker process
    only: a program that embeds ``kushi.Server`` keeps its own collector settings.
    """
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def worker_main(spec: WorkerSpec) -> int:
    """Run worker ``spec`` in this (freshly forked) process; returns its exit code."""
    try:
        import uvloop
        loop = uvloop.new_event_loop()
    except ImportError:  # uvloop is not built for every platform
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(WorkerProcess(spec).run())
    finally:
        loop.close()
