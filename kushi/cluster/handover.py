"""Moving a session between workers without losing a message on the way.

When worker B takes client c over from worker A, the other workers still
route c's messages to A until they learn B's interest. So A, as it gives the
session up, leaves *forwarders* in its matcher: one subscription per filter
of c, whose callback sends each matching message to B addressed to c
("pub-for"). B delivers those to c's session, buffering the ones that beat
the session itself (they travel on another channel than the takeover reply).

The forwarders go when no message for c can reach A any more without also
having gone to B directly:

1. B installs the session and waits for its barrier: every worker now knows
   B's interest; then it tells A "hand-over done".
2. A runs its own barrier: each worker answers over the same FIFO channel
   its earlier messages to A used, so once all have answered, every message
   routed to A before its sender knew B's interest has arrived (and was
   forwarded). Then A removes the forwarders.

A message routed in between to both A and B reaches c twice: QoS 1 allows it
(at least once); for QoS 2 it is a known gap (the cluster notes say so).
A fallback timer removes forwarders whose hand-over never completed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial
from typing import Any

from ..protocol.packets import Publish
from ..worker.session import SubscriptionEntry
from .fabric import BusFabric

log = logging.getLogger("kushi.cluster")

FORWARD_AT_MOST = 30.0       # seconds a forwarder lives if the hand-over never completes


class HandOver:
    """Forwarders for the sessions this worker gave up; delivery of what others forward to us."""

    def __init__(self, fabric: BusFabric, server: Any) -> None:
        self.fabric = fabric
        self.server = server
        self._forwarders: dict[str, tuple[list[tuple[str, str]], asyncio.TimerHandle]] = {}
        fabric.sessions.on_handover_done = self.handover_done

    # ---- the worker that gave the session up -------------------------------------------

    def forward_moved(self, session: Any, new_node: str) -> None:
        """Forward to ``new_node`` every message matching the subscriptions ``session`` had here."""
        broker = self.server.broker
        client_id = session.client_id
        self._remove(client_id)
        added = []
        for entry in session.subscriptions.values():
            key = f"\x00moved:{client_id}\x00{entry.filter}"
            forwarder = SubscriptionEntry(
                key, entry.filter, entry.qos, False, entry.retain_as_published, 0, entry.identifier,
                callback=partial(self._forward, new_node, client_id, entry))
            broker.add_subscription(None, forwarder)
            added.append((entry.filter, key))
        timer = asyncio.get_running_loop().call_later(FORWARD_AT_MOST, self._remove, client_id)
        self._forwarders[client_id] = (added, timer)

    def _forward(self, new_node: str, client_id: str, entry: SubscriptionEntry,
                 topic: str, payload: bytes, message: Publish) -> None:
        qos = min(entry.qos, message.qos)
        retain = message.retain and entry.retain_as_published
        identifiers = (entry.identifier,) if entry.identifier else ()
        self.fabric.sessions.forward_to_client(new_node, client_id, qos, retain, identifiers, message)

    async def handover_done(self, client_id: str) -> None:
        """The new holder is known everywhere: drain what is on its way to us, then stop forwarding."""
        await self.fabric.barrier()
        self._remove(client_id)

    def _remove(self, client_id: str) -> None:
        entry = self._forwarders.pop(client_id, None)
        if entry is None:
            return
        forwarders, timer = entry
        timer.cancel()
        broker = self.server.broker
        for filter, key in forwarders:
            broker.remove_subscription(None, key, filter)

    # ---- the worker that took the session ----------------------------------------------

    def deliver_to_session(self, client_id: str, qos: int, retain: bool,
                           identifiers: tuple[int, ...], message: Publish) -> bool:
        """A message forwarded for ``client_id``; False if its session is not here (yet)."""
        broker = self.server.broker
        session = broker.sessions.get(client_id) if broker is not None else None
        if session is None:
            return False
        broker.deliver(session, message, qos, retain, identifiers, time.monotonic(), None)
        return True
