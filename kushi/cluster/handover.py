"""Moving a session between workers without losing a message on the way.

When worker B takes client c over from worker A, the other workers still
route c's messages to A until they learn B's interest. So A, as it gives the
session up, leaves *forwarders* in its matcher: one subscriber (for all of
c's filters) whose callback sends each matching message to B addressed to c
("pub-for"). B delivers those to c's session, buffering the ones that beat
the session itself (they travel on another channel than the takeover reply).

The forwarders go when no message for c can reach A any more without also
having gone to B directly:

1. B installs the session and waits for its barrier: every worker now knows
   B's interest; then it tells A "hand-over done".
2. A runs its own barrier: each worker answers over the same FIFO channel
   its earlier messages to A used, so once all have answered, every message
   routed to A before its sender knew B's interest has arrived (and was
   forwarded). Then A removes the forwarders and tells B "forwarding ended".

Exactly once (QoS 2): a message routed in between to both A and B reaches B
twice, forwarded by A and directly, in either order (a message published on
A goes to its forwarder first, then on the bus). Every copy carries the
message's bus id, so B delivers the first and drops the others: B keeps, per
arriving session, a *window* of the ids it got (``SessionLink.windows``),
from the takeover until B has heard "forwarding ended" and then passed a
barrier of its own (the direct copy of anything A forwarded was sent before
its sender answered A's barrier, so before it answers B's). While a window
is open, the broker's ``deliver`` is wrapped (``_deliver_once``): a message
from another node given to c's session is checked against c's window when
it is actually handed over, so it holds also when coroutine filters route it
later (``kushi.worker.async_filters``); every other subscriber gets it as
usual. Fallback timers remove forwarders (``FORWARD_AT_MOST``) and windows
(``WINDOW_AT_MOST``) whose hand-over never completed. While either exists,
the fabric keeps the ids of the messages it routes (``BusFabric.keep_ids``);
always, with coroutine filters.

Not covered: a message a worker sent to both A and B because of *another*
subscriber on B, that reached A before the takeover (so it moved inside the
session) and B after it. It needs a publisher whose copies arrive a whole
takeover apart; the window does not hold the ids of the moved messages.
"""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial
from typing import Any

from ..protocol.packets import Publish
from ..protocol.topics import parse_shared, topic_matches
from ..worker.session import SubscriptionEntry
from .fabric import BusFabric

log = logging.getLogger("kushi.cluster")

FORWARD_AT_MOST = 30.0       # seconds a forwarder lives if the hand-over never completes
SETTLE_AT_MOST = 10.0        # seconds a hand-over waits for coroutine filters to route what came


class HandOver:
    """Forwarders for the sessions this worker gave up; delivery of what others forward to us."""

    def __init__(self, fabric: BusFabric, server: Any) -> None:
        self.fabric = fabric
        self.server = server
        # client id -> (new node, (filter, key) of each forwarder, fallback timer)
        self._forwarders: dict[str, tuple[str, list[tuple[str, str]], asyncio.TimerHandle]] = {}
        fabric.sessions.on_handover_done = self.handover_done
        fabric.sessions.on_arriving = self._remove   # it comes back: forward nothing away
        fabric.sessions.on_windows = self._watch_deliveries
        # while _deliver_once wraps the broker's deliver: the instance's own one before, or False
        self._plain_deliver: Any = None
        # coroutine filters make the broker route in a task, after the message went on
        server.hooks.when_awaiting(fabric.keep_ids_always)
        fabric.sessions.routed = self.routed

    # ---- the worker that gave the session up -------------------------------------------

    def forward_moved(self, session: Any, new_node: str) -> None:
        """Forward to ``new_node`` every message matching the subscriptions ``session`` had here.

        The plain subscriptions share one forwarder key, so a message matching several is
        sent once, folded as the broker folds a client's subscriptions [MQTT-3.3.4-2/4];
        each shared one has its own (its group picks it or not).
        """
        broker = self.server.broker
        client_id = session.client_id
        self._remove(client_id)
        plain = [entry for entry in session.subscriptions.values()
                 if parse_shared(entry.filter)[0] is None]
        added = []
        for entry in session.subscriptions.values():
            shared = parse_shared(entry.filter)[0] is not None
            key = f"\x00moved:{client_id}" + (f"\x00{entry.filter}" if shared else "")
            forwarder = SubscriptionEntry(
                key, entry.filter, entry.qos, False, entry.retain_as_published, 0, entry.identifier,
                callback=partial(self._forward, new_node, client_id, [entry] if shared else plain))
            broker.add_subscription(None, forwarder)
            added.append((entry.filter, key))
        timer = asyncio.get_running_loop().call_later(FORWARD_AT_MOST, self._remove, client_id)
        self._forwarders[client_id] = (new_node, added, timer)
        self.fabric.keep_ids = True   # a forwarder may be called after the message went on

    def _forward(self, new_node: str, client_id: str, entries: list[SubscriptionEntry],
                 topic: str, payload: bytes, message: Publish) -> None:
        matching = [entry for entry in entries
                    if topic_matches(parse_shared(entry.filter)[1], topic)] or entries
        qos = min(max(entry.qos for entry in matching), message.qos)
        retain = message.retain and any(entry.retain_as_published for entry in matching)
        identifiers = tuple(entry.identifier for entry in matching if entry.identifier)
        self.fabric.sessions.forward_to_client(new_node, client_id, qos, retain, identifiers,
                                               self.fabric.message_id(message), message)

    async def handover_done(self, client_id: str) -> None:
        """The new holder is known everywhere: drain what is on its way to us, then stop forwarding."""
        entry = self._forwarders.get(client_id)
        await self.fabric.barrier()
        await self.routed()
        if entry is not None and self._forwarders.get(client_id) is entry:   # not a newer move's
            self._remove(client_id)
            self.fabric.sessions.forwarding_ended(entry[0], client_id)

    def _remove(self, client_id: str) -> None:
        entry = self._forwarders.pop(client_id, None)
        if entry is None:
            return
        _, forwarders, timer = entry
        timer.cancel()
        broker = self.server.broker
        for filter, key in forwarders:
            broker.remove_subscription(None, key, filter)
        if not self._forwarders and not self.fabric.sessions.windows:
            self.fabric.forget_ids()

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

    async def routed(self) -> None:
        """Until the broker has routed the messages it was handed before now.

        At once, unless coroutine filters route them in tasks (``kushi.worker.async_filters``):
        a barrier proves they have arrived, not that they went where they go.
        """
        settled = getattr(getattr(self.server.broker, "async_filters", None), "settled", None)
        if settled is None:
            return
        try:
            await asyncio.wait_for(settled(), SETTLE_AT_MOST)
        except asyncio.TimeoutError:
            log.warning("hand-over: messages still being routed after %.0f s; going on", SETTLE_AT_MOST)

    def _watch_deliveries(self, windows_open: bool) -> None:
        """Wrap the broker's ``deliver`` while sessions are in hand-over windows here."""
        broker = self.server.broker
        if broker is None:
            return
        if windows_open:
            self.fabric.keep_ids = True
            if self._plain_deliver is None:
                self._plain_deliver = vars(broker).get("deliver", False)   # an instance's own, or none
                broker.deliver = self._deliver_once
            return
        if self._plain_deliver is not None:
            if self._plain_deliver is False:
                del broker.deliver   # the class's method again
            else:
                broker.deliver = self._plain_deliver
            self._plain_deliver = None
        if not self._forwarders:
            self.fabric.forget_ids()

    def _deliver_once(self, session: Any, message: Publish, *rest: Any) -> None:
        """The broker's ``deliver``, skipping a message from another node that this session in a
        window had already (forwarded by its previous holder)."""
        message_id = self.fabric.known_id(message)
        if (message_id is None or message_id[0] == self.fabric.node
                or self.fabric.sessions.first_delivery(session, message_id)):
            plain = self._plain_deliver
            if plain:
                plain(session, message, *rest)
            else:
                type(self.server.broker).deliver(self.server.broker, session, message, *rest)
