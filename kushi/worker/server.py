"""kushi.Server: the broker as a library object (one process, one event loop).

    server = kushi.Server(kushi.Options())
    server.add_hook(MyAuth())
    server.add_listener(kushi.TCP("t1", ":1883"))
    await server.start()          # listeners open; server.listeners["t1"].port is bound
    await server.publish("a/b", b"hello")           # the inline client
    await server.subscribe("a/#", 1, on_message)
    await server.close()          # graceful: listeners first, then v5 clients get 0x8B

``run()`` does all of it blocking, on uvloop, until SIGINT or SIGTERM.
With no hook providing authentication every client is let in.

Introspection (``clients``, ``client``, ``subscriptions``, ``disconnect_client``,
``retained``) are coroutines that return plain snapshot records
(``kushi.worker.introspection``), so a program uses the same calls when the
answers come from several workers over the bus (``kushi.cluster.server``).

Storage: ``start()`` restores what the hooks' loaders return (``stored_retained``,
then ``stored_clients`` / ``stored_subscriptions`` / ``stored_inflight``, see
``kushi.worker.restore``) before any listener opens; ``close()`` calls the hooks'
``stop()`` after the clients are disconnected, which is when a storage hook saves.
``session_records`` and ``message_state_versions`` are what a storage hook reads
(``kushi.hooks.storage.SqliteStorage``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
from dataclasses import replace
from time import monotonic
from typing import Any, Awaitable, Callable

from ..errors import AdministrativeAction, ConfigurationError, ServerShuttingDown
from ..hooks.base import Hook
from ..hooks.manager import HookManager
from ..hooks.records import SessionRecords
from ..protocol.packets import Publish
from ..protocol.properties import NO_PROPERTIES, Properties
from ..protocol.topics import validate_topic_name
from .broker import Broker
from .connection import MQTTConnection
from .fabric import Fabric, LocalFabric
from .introspection import ClientSnapshot, SubscriptionSnapshot, client_snapshot, subscription_snapshots
from .listeners import ListenerHandle, start_listener
from .options import Options
from .restore import (
    install_sessions, install_stored_session, message_state_version, session_records, stored_clients_to_restore, wall_offset,
)
from .sys_info import SysInfoTicker

log = logging.getLogger("kushi.server")

TICK_SECONDS = 1.0
CLOSE_GRACE_SECONDS = 2.0


class Server:
    """One MQTT broker: listeners, hooks, the broker core and an inline client."""

    def __init__(self, options: Options | None = None) -> None:
        self.options = options if options is not None else Options()
        self.hooks = HookManager()
        self.worker_id = 0
        self.fabric: Fabric = LocalFabric(self.worker_id)
        self.fabric_sink: Any = None   # what a cluster fabric calls back (``attach``); None: the broker
        self.listeners: dict[str, ListenerHandle] = {}
        self.broker: Broker | None = None
        self._listener_configs: list[Any] = []
        self._tick_task: asyncio.Task[None] | None = None
        self._stopped: asyncio.Event | None = None
        self._closing = False
        # Several workers sharing one store (kushi.cluster.worker sets these): ``adopt`` answers
        # which stored client ids this process may restore (none held by a live worker), and
        # wills are left to the session directory, which publishes those of a dead worker.
        self.adopt: Callable[[list[str]], Awaitable[set[str]]] | None = None
        self.restore_wills = True

    # ---- set-up --------------------------------------------------------------------
    def add_hook(self, hook: Hook, config: object | None = None) -> None:
        """Add a hook; hooks run in the order they were added."""
        self.hooks.add(hook, config)

    def add_listener(self, listener: Any) -> None:
        """Add a listener config (kushi.TCP, WebSocket, TLS, WSS, Unix) before ``start``."""
        if self.broker is not None:
            raise ConfigurationError("add listeners before start()")
        if any(existing.id == listener.id for existing in self._listener_configs):
            raise ConfigurationError(f"two listeners with the id {listener.id!r}")
        self._listener_configs.append(listener)

    async def start(self) -> None:
        """Start the broker, restore stored state, open every listener; their bound ports are then known."""
        if self.broker is not None:
            raise ConfigurationError("server already started")
        loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        self.hooks.init_all()
        self.broker = Broker(self.options, self.hooks, self.fabric, loop)
        await self._restore_retained()
        attach = getattr(self.fabric, "attach", None)
        if attach is not None:
            # before any listener opens: what the fabric synced (retained messages of the
            # other workers) is in the broker before the first client can subscribe; after
            # the stored retained messages, so the live state of the other workers wins
            attach(self.fabric_sink if self.fabric_sink is not None else self.broker)
        await self.restore_stored_sessions()
        try:
            for config in self._listener_configs:
                factory = functools.partial(MQTTConnection, self.broker, config.id)
                handle = await start_listener(config, factory, loop,
                                              max_packet_size=self.options.maximum_packet_size)
                self.listeners[config.id] = handle
                log.debug("worker %d: listener %s open on %s", self.worker_id, config.id,
                          handle.address)  # the CLI logs the "listening ..." lines
        except BaseException:
            for handle in self.listeners.values():
                await handle.close()
            raise
        self._tick_task = loop.create_task(self._tick())
        if self.hooks.provides("on_started"):
            self.hooks.on_started(self)

    async def _restore_retained(self) -> None:
        """Retained messages a storage hook kept (``stored_retained``: Publish records).

        Put in the store directly: a restore is no change, so no hook hears of it
        (a storage hook would write back what it just read) and no worker is told
        (every worker loads the same rows from the shared store).
        """
        if not self.hooks.provides("stored_retained"):
            return
        now = monotonic()
        for message in await self.hooks.stored_retained():
            if isinstance(message, Publish):
                self.broker.retained_store.set(message.topic, replace(message, retain=True), now)
            else:
                log.warning("stored_retained gave %r, not a Publish: ignored", type(message).__name__)

    async def restore_stored_sessions(self) -> int:
        """Restore the sessions the hooks stored (``stored_clients``, ``stored_subscriptions``,
        ``stored_inflight``) that are not expired, not here and, with ``adopt``, adopted.

        ``start()`` calls it before the listeners open; a cluster worker calls it again
        when another worker dies, to take over the sessions that worker held.
        Returns the number of sessions restored.
        """
        broker = self.broker
        if broker is None or self._closing:
            return 0
        clients = await stored_clients_to_restore(broker)
        if clients and self.adopt is not None:
            adopted = await self.adopt([record.client_id for record in clients])
            clients = [record for record in clients
                       if record.client_id in adopted and record.client_id not in broker.sessions]
        return await install_sessions(broker, clients, self.restore_wills)

    def restore_stored_session(self, client_id: str) -> bool:
        """Restore ``client_id``'s stored session now, if a hook with ``stored_session`` has it.

        For a cluster worker: a client reconnecting with clean start 0 whose session no
        live worker holds, e.g. right after its worker died and before anyone adopted it.
        The caller must hold the client id's claim (no other worker may have it).
        """
        broker = self.broker
        if broker is None or client_id in broker.sessions or not self.hooks.provides("stored_clients"):
            return False
        return install_stored_session(broker, client_id, self.restore_wills)

    async def _tick(self) -> None:
        broker = self.broker
        sys_info = SysInfoTicker(self.options.sys_interval, monotonic())
        while True:
            await asyncio.sleep(TICK_SECONDS)
            now = monotonic()
            try:
                broker.tick(now)
                if self.fabric_sink is None and sys_info.due(now):   # workers: the supervisor fires it
                    self._sys_info_tick(sys_info, now)
            except Exception:
                log.exception("broker tick failed")

    def _sys_info_tick(self, sys_info: SysInfoTicker, now: float) -> None:
        """``on_sys_info_tick`` of a one-process server, with its own statistics."""
        if self.hooks.provides("on_sys_info_tick"):
            self.hooks.on_sys_info_tick(sys_info.info(self.stats(), now, self.worker_id))

    async def serve_forever(self) -> None:
        """Wait until the server is closed."""
        if self._stopped is None:
            raise ConfigurationError("start() the server first")
        await self._stopped.wait()

    async def close(self, reason_code: int = 0x8B) -> None:
        """Stop gracefully: listeners first, then clients (v5: DISCONNECT ``reason_code``)."""
        broker = self.broker
        if broker is None or self._closing:
            return
        self._closing = True
        for handle in self.listeners.values():
            await handle.close()
        if self._tick_task is not None:
            self._tick_task.cancel()
        broker.cancel_tasks()  # CONNECTs waiting on hooks or AUTH answers
        closing = list(broker.open_connections)
        for conn in closing:
            if conn.connected:
                conn.fail(ServerShuttingDown("server shutting down", reason_code=reason_code))
            else:
                conn.abort()
        deadline = monotonic() + CLOSE_GRACE_SECONDS
        while any(conn.transport is not None for conn in closing) and monotonic() < deadline:
            await asyncio.sleep(0.01)  # the transports flush the DISCONNECTs, then report lost
        for conn in closing:
            if conn.transport is not None:  # a client that does not read: do not wait for it
                conn.transport.abort()
        if self.hooks.provides("on_stopped"):
            self.hooks.on_stopped(self)
        self.hooks.stop_all()
        self._stopped.set()

    def run(self) -> None:
        """Serve until SIGINT/SIGTERM, on uvloop when it is installed; then close gracefully.

        For scripts: it logs ``listening KIND ADDRESS`` for each listener at info level
        (the real port when the config said 0), and SIGHUP reloads the hooks that have
        a ``reload()`` (auth files) in place, as ``kushi serve`` does.
        """
        async def main() -> None:
            await self.start()
            for handle in self.listeners.values():
                log.info("listening %s %s", handle.config.kind, handle.address)
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, lambda: loop.create_task(self.close()))
            loop.add_signal_handler(signal.SIGHUP, self._reload_hooks)
            await self.serve_forever()

        try:
            import uvloop
        except ImportError:
            asyncio.run(main())
        else:
            uvloop.run(main())

    def _reload_hooks(self) -> None:
        if self.hooks.reload_all():
            log.info("SIGHUP: hooks reloaded")
        else:
            log.error("SIGHUP: a hook could not reload its files and kept its old rules")

    # ---- the inline client -------------------------------------------------------------
    async def publish(self, topic: str, payload: bytes | str, retain: bool = False, qos: int = 0,
                      properties: Properties | None = None) -> None:
        """Publish from inside the server, as if a client had: no write ACL, no publish hooks;
        each delivery passes the read ACL and ``on_select_subscribers`` as any message does.

        With coroutine filters (``kushi.worker.async_filters``) this waits while their
        delivery backlog is full, as a client's connection stops being read then.
        """
        broker = self._inline_broker()
        validate_topic_name(topic)
        if isinstance(payload, str):
            payload = payload.encode()
        message = Publish(topic, payload, min(qos, self.options.maximum_qos), retain,
                          properties=properties or NO_PROPERTIES)
        filters = broker.async_filters
        if filters is not None:
            await filters.room()
        broker.publish(message, None, monotonic())
        if self.hooks.provides("on_published"):
            self.hooks.on_published(broker.server_info, message)

    async def subscribe(self, filter: str, subscription_id: int,
                        callback: Callable[[str, bytes, Publish], Any]) -> None:
        """Call ``callback(topic, payload, packet)`` for each matching message; the retained ones
        before this returns (with several workers, once every worker knows the new filter)."""
        await self._inline_broker().inline_subscribe(filter, subscription_id, callback)

    async def unsubscribe(self, filter: str, subscription_id: int) -> None:
        self._inline_broker().inline_unsubscribe(filter, subscription_id)

    def _inline_broker(self) -> Broker:
        if self.broker is None:
            raise ConfigurationError("start() the server first")
        if not self.options.inline_client:
            raise ConfigurationError("the inline client is disabled (Options.inline_client)")
        return self.broker

    # ---- introspection ------------------------------------------------------------------
    # Coroutines returning snapshot records (kushi.worker.introspection), never live objects:
    # the same API answers with several workers, where the answers come over the bus.
    async def clients(self) -> list[ClientSnapshot]:
        """The connected clients, each a ClientSnapshot taken now."""
        if self.broker is None:
            return []
        return [client_snapshot(conn, self.worker_id) for conn in self.broker.connections.values()
                if conn.connected]   # not one being closed

    async def client(self, client_id: str) -> ClientSnapshot | None:
        """The connected client ``client_id`` (a ClientSnapshot), or None."""
        conn = self.broker.connections.get(client_id) if self.broker else None
        return client_snapshot(conn, self.worker_id) if conn is not None and conn.connected else None

    async def disconnect_client(self, client_id: str, reason_code: int = 0x98) -> bool:
        """Disconnect a client (v5: DISCONNECT ``reason_code``); False if it is not connected."""
        conn = self.broker.connections.get(client_id) if self.broker else None
        if conn is None:
            return False
        conn.fail(AdministrativeAction("disconnected by the server", reason_code=reason_code))
        return True

    async def subscriptions(self, client_id: str) -> dict[str, SubscriptionSnapshot]:
        """The subscriptions of a client's session (connected or not), by filter as subscribed."""
        session = self.broker.sessions.get(client_id) if self.broker else None
        return subscription_snapshots(session) if session is not None else {}

    def session_records(self, client_id: str, messages: bool = True) -> SessionRecords | None:
        """The session of ``client_id`` as storage records (wall-clock times), or None.

        For storage hooks (``kushi.hooks.storage``): what to write for a session.
        ``messages=False`` leaves out its queued and in-flight messages.
        """
        session = self.broker.sessions.get(client_id) if self.broker else None
        if session is None:
            return None
        return session_records(session, wall_offset(), messages)

    def message_state_versions(self) -> dict[str, Any]:
        """For each session that outlives its connection (expiry > 0): a value that changes
        when its queued or in-flight messages change. A storage hook compares them between
        two saves and writes only the sessions whose value changed."""
        if self.broker is None:
            return {}
        return {client_id: message_state_version(session)
                for client_id, session in self.broker.sessions.items() if session.expiry_interval}

    async def retained(self, filter: str = "#") -> list[Publish]:
        """The retained messages matching ``filter``."""
        return self.broker.retained_store.match(filter, monotonic()) if self.broker else []

    def stats(self) -> dict[str, int]:
        return self.broker.stats() if self.broker else {}
