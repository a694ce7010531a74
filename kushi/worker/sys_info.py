"""``on_sys_info_tick``: the broker's statistics handed to hooks every ``Options.sys_interval`` s.

Who fires it, so that a hook always sees the whole broker once per interval:

- **One process** (``kushi.Server`` with one worker): the server's own
  once-a-second tick, with the server's statistics.
- **Several workers** (``kushi serve``, ``kushi.Server(Options(workers=N))``):
  only the supervisor knows the whole broker's figures (it adds up the
  workers' snapshots), but the hooks run in the workers. So the supervisor
  sends the figures over the bus (``SYS_INFO``) each interval and every worker
  hands them to its hooks, adding its own ``worker_id``. A worker never fires
  the event from its own tick.

The ``info`` dict: the statistics of ``stats()`` (``clients_connected``,
``messages_received``, ...; with several workers also ``workers``) plus
``uptime`` (whole seconds), ``version`` and ``worker_id``.

Publishing the ``$SYS`` topics is a separate matter (``kushi.ops.sys_topics``).
No clock is read here: ``now`` is passed in.
"""

from __future__ import annotations

from typing import Any, Mapping

from .. import __version__

SYS_INFO = "sys-info"
"""Bus kind: the supervisor's statistics for the workers' ``on_sys_info_tick`` hooks."""


class SysInfoTicker:
    """Says when the next ``on_sys_info_tick`` is due and builds its ``info``."""

    def __init__(self, interval: float, started: float) -> None:
        self.interval = interval
        self.started = started
        self._next = started + interval

    def due(self, now: float) -> bool:
        """True once per ``interval`` (never when the interval is 0: $SYS is off)."""
        if self.interval <= 0 or now < self._next:
            return False
        self._next = now + self.interval
        return True

    def info(self, stats: Mapping[str, Any], now: float, worker_id: int | None) -> dict[str, Any]:
        return {**stats, "uptime": int(now - self.started), "version": __version__,
                "worker_id": worker_id}
