"""``kushi.Server`` for any number of workers: the embedding API of ARCHITECTURE.md.

With ``Options(workers=1)`` (the default) this is exactly the one-process
``kushi.worker.server.Server``: everything runs in the caller's event loop.

With ``workers > 1`` the calling process becomes the supervisor and a node on
the bus: ``start()`` forks the workers (each opens the listeners with
SO_REUSEPORT and runs the hooks added here; hooks are created before the fork
and their ``init`` runs in each worker), and the inline client (``publish``,
``subscribe``, ``unsubscribe``) reaches the clients of every worker. ``stats()``
adds up the workers' counters. Introspection (``clients()``, ``client()``,
``subscriptions()``, ``disconnect_client()``, ``retained()``) is the same
coroutines as with one process, answered by the workers over the bus
(``kushi.cluster.introspection``); ``introspection_timeout`` is how long a
worker has to answer before the call raises ``BusError``.

The supervisor installs its own SIGTERM/SIGINT/SIGQUIT/SIGHUP/SIGTTIN/SIGTTOU
handlers on the running loop, as ``kushi serve --workers N`` does.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import ConfigurationError
from ..protocol.packets import Publish
from ..protocol.properties import Properties
from ..worker.introspection import ClientSnapshot, SubscriptionSnapshot
from ..worker.server import Server as OneProcessServer
from .introspection import TIMEOUT as INTROSPECTION_TIMEOUT
from .introspection import ClusterIntrospection
from .supervisor import Supervisor


@dataclass(frozen=True)
class ClusterListener:
    """A listener the workers share: its config and the port they all bound."""

    config: Any
    host: str
    port: int | None

    @property
    def address(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"


class Server(OneProcessServer):
    """One broker, in this process (workers=1) or as a supervisor of N workers."""

    def __init__(self, options: Any = None) -> None:
        self._hook_entries: list[tuple[Any, object | None]] = []   # for the workers: (hook, config)
        super().__init__(options)
        self.supervisor: Supervisor | None = None
        self.introspection_timeout = INTROSPECTION_TIMEOUT   # seconds a worker has to answer

    def add_hook(self, hook: Any, config: object | None = None) -> None:
        """Add a hook; with workers each one adds it with ``config`` (its ``init(config)`` runs there)."""
        super().add_hook(hook, config)
        self._hook_entries.append((hook, config))

    @property
    def multi_worker(self) -> bool:
        return self.options.workers > 1

    # ---- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        if not self.multi_worker:
            return await super().start()
        if self.supervisor is not None:
            raise ConfigurationError("server already started")
        self.supervisor = Supervisor(self.options, self._listener_configs, self._hook_entries,
                                     workers=self.options.workers)
        await self.supervisor.start()
        configs = {config.id: config for config in self.supervisor.listener_configs}
        self.listeners = {  # type: ignore[assignment]
            listener_id: ClusterListener(configs.get(listener_id), host, port)
            for listener_id, (_kind, host, port) in self.supervisor.listeners.items()
        }

    async def serve_forever(self) -> None:
        if not self.multi_worker:
            return await super().serve_forever()
        await self._running_supervisor().wait()

    async def close(self, reason_code: int = 0x8B) -> None:
        """Graceful stop; with workers it is the supervisor's SIGTERM path (0x8B to v5 clients)."""
        if not self.multi_worker:
            return await super().close(reason_code)
        supervisor = self._running_supervisor()
        supervisor.stop(signal.SIGTERM)
        await supervisor.wait()

    def run(self) -> None:
        if not self.multi_worker:
            return super().run()
        self.supervisor = Supervisor(self.options, self._listener_configs, self._hook_entries,
                                     workers=self.options.workers)
        self.supervisor.run()

    # ---- the inline client -----------------------------------------------------------
    async def publish(self, topic: str, payload: bytes | str, retain: bool = False, qos: int = 0,
                      properties: Properties | None = None) -> None:
        if not self.multi_worker:
            return await super().publish(topic, payload, retain, qos, properties)
        await self._running_supervisor().publish(topic, payload, retain, qos, properties)

    async def subscribe(self, filter: str, subscription_id: int, callback: Callable[..., Any]) -> None:
        if not self.multi_worker:
            return await super().subscribe(filter, subscription_id, callback)
        await self._running_supervisor().subscribe(filter, subscription_id, callback)

    async def unsubscribe(self, filter: str, subscription_id: int) -> None:
        if not self.multi_worker:
            return await super().unsubscribe(filter, subscription_id)
        await self._running_supervisor().unsubscribe(filter, subscription_id)

    # ---- introspection ---------------------------------------------------------------
    def stats(self) -> dict[str, int]:
        if not self.multi_worker:
            return super().stats()
        return self._running_supervisor().stats()

    async def clients(self) -> list[ClientSnapshot]:
        """The connected clients of every worker, each a ClientSnapshot (with its ``worker_id``)."""
        if not self.multi_worker:
            return await super().clients()
        return await self._introspection().clients()

    async def client(self, client_id: str) -> ClientSnapshot | None:
        """The connected client ``client_id``, on whichever worker holds it; or None."""
        if not self.multi_worker:
            return await super().client(client_id)
        return await self._introspection().client(client_id)

    async def subscriptions(self, client_id: str) -> dict[str, SubscriptionSnapshot]:
        """The subscriptions of ``client_id``'s session (connected or not), by filter."""
        if not self.multi_worker:
            return await super().subscriptions(client_id)
        return await self._introspection().subscriptions(client_id)

    async def disconnect_client(self, client_id: str, reason_code: int = 0x98) -> bool:
        """Disconnect ``client_id`` wherever it is (v5: DISCONNECT ``reason_code``); False if
        no worker has it connected."""
        if not self.multi_worker:
            return await super().disconnect_client(client_id, reason_code)
        return await self._introspection().disconnect_client(client_id, reason_code)

    async def retained(self, filter: str = "#") -> list[Publish]:
        """The retained messages matching ``filter`` (replicated: every worker has them all)."""
        if not self.multi_worker:
            return await super().retained(filter)
        return await self._introspection().retained(filter)

    def _introspection(self) -> ClusterIntrospection:
        bus = self._running_supervisor().bus
        if bus is None:
            raise ConfigurationError("the server is closed")
        return ClusterIntrospection(bus, self.introspection_timeout)

    def _running_supervisor(self) -> Supervisor:
        if self.supervisor is None:
            raise ConfigurationError("start() the server first")
        return self.supervisor
