"""$SYS topics: the broker's statistics published as retained messages every ``sys_interval`` seconds.

The topics follow Mosquitto's names, so dashboards written for it work::

    $SYS/broker/version                    kushi 0.1.0
    $SYS/broker/uptime                     1234 seconds
    $SYS/broker/worker                     0   (one process; see below)
    $SYS/broker/workers                    3   (several workers)
    $SYS/broker/clients/connected          12
    $SYS/broker/messages/received          ...
    $SYS/broker/messages/sent
    $SYS/broker/bytes/received
    $SYS/broker/bytes/sent
    $SYS/broker/subscriptions/count
    $SYS/broker/retained messages/count

They go out through the inline client (``server.publish``, retained), so a
client subscribing to ``$SYS/#`` gets the latest values at once. Only values
that changed since the last tick are published again. Subscribers of ``#``
do not see them: a filter starting with a wildcard never matches a ``$``
topic [MQTT-4.7.2-1].

With several workers the supervisor publishes them with the whole broker's
figures (``Supervisor.stats()`` adds the workers up) and ``$SYS/broker/worker``
is left out: a retained topic seen on every worker cannot say which worker a
client is on. ``$SYS/broker/workers`` gives the number of workers serving.

Usage (``kushi serve`` does this when ``Options.sys_interval`` > 0)::

    sys_topics = SysTopics(server, interval=server.options.sys_interval)
    sys_topics.start()
    ...
    await sys_topics.stop()
"""

from __future__ import annotations

import asyncio
import logging
import time
from importlib.metadata import PackageNotFoundError, version as package_version
from typing import Any, Mapping

log = logging.getLogger("kushi.sys")

#: $SYS topic -> the key of server.stats() it shows
STATS_TOPICS: dict[str, str] = {
    "$SYS/broker/clients/connected": "clients_connected",
    "$SYS/broker/messages/received": "messages_received",
    "$SYS/broker/messages/sent": "messages_sent",
    "$SYS/broker/bytes/received": "bytes_received",
    "$SYS/broker/bytes/sent": "bytes_sent",
    "$SYS/broker/subscriptions/count": "subscriptions",
    "$SYS/broker/retained messages/count": "retained",
    "$SYS/broker/workers": "workers",
}


def kushi_version() -> str:
    """The installed version of the kushi package."""
    try:
        return package_version("kushi")
    except PackageNotFoundError:
        return "unknown"


def sys_messages(stats: Mapping[str, Any], *, now: float, started: float,
                 worker_id: int | str | None, version: str) -> dict[str, str]:
    """The $SYS topic -> payload map for one tick; pure, so it is tested without a clock.

    A statistic the broker does not report is left out rather than shown as 0;
    so is the worker id when it is None (the supervisor of several workers).
    """
    messages = {
        "$SYS/broker/version": f"kushi {version}",
        "$SYS/broker/uptime": f"{int(now - started)} seconds",
    }
    if worker_id is not None:
        messages["$SYS/broker/worker"] = str(worker_id)
    for topic, key in STATS_TOPICS.items():
        if key in stats:
            messages[topic] = str(stats[key])
    return messages


class SysTopics:
    """Publishes ``sys_messages`` every ``interval`` seconds through ``server.publish``.

    ``server`` is a ``kushi.Server`` or a ``kushi.cluster.supervisor.Supervisor``:
    anything with ``stats()`` and ``publish()``; ``worker_id`` is used when it has one.
    """

    def __init__(self, server: Any, interval: float) -> None:
        self.server = server
        self.interval = interval
        self.started = time.monotonic()
        self.version = kushi_version()
        self._last: dict[str, str] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start publishing on the running loop; the first tick is immediate."""
        if self.interval > 0 and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="kushi-sys")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def tick(self, now: float) -> int:
        """Publish the topics whose value changed; returns how many were published.

        (The hooks' ``on_sys_info_tick`` is fired by the server or the supervisor
        itself, whether or not $SYS is published: ``kushi.worker.sys_info``.)
        """
        stats = self.server.stats()
        worker_id = getattr(self.server, "worker_id", None)
        messages = sys_messages(stats, now=now, started=self.started, worker_id=worker_id,
                                version=self.version)
        changed = {topic: payload for topic, payload in messages.items()
                   if self._last.get(topic) != payload}
        for topic, payload in changed.items():
            await self.server.publish(topic, payload, retain=True)
        self._last.update(changed)
        return len(changed)

    async def _run(self) -> None:
        while True:
            try:
                await self.tick(time.monotonic())
            except Exception:  # a failed tick must not end $SYS for good
                log.exception("publishing $SYS topics failed")
            await asyncio.sleep(self.interval)
