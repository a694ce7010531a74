"""The session directory on the bus: the supervisor's side of claims, releases and wills.

``DirectoryNode`` answers the ``claim`` and ``adopt`` requests of the workers' fabrics,
keeping the will each claim carries, takes their ``release``/``will-`` notes, and when a worker leaves
the bus (its process died) publishes the wills of the clients it held, each
after its will delay, unless the client came back first. The bookkeeping
itself is ``kushi.cluster.directory.SessionDirectory``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import msgpack

from ..protocol.packets import Publish
from ..router.bus import Bus
from .directory import SessionDirectory
from .session_link import ADOPT, CLAIM, RELEASE, WILL_CLEARED
from .wire import decode_message

log = logging.getLogger("kushi.cluster")


class DirectoryNode:
    """The session directory served over ``bus``; ``publish`` sends a will to every worker."""

    def __init__(self, bus: Bus, publish: Callable[[Publish], None]) -> None:
        self.bus = bus
        self.publish = publish
        self.directory = SessionDirectory()
        self._pending_wills: dict[str, tuple[asyncio.TimerHandle, bytes]] = {}
        bus.serve(CLAIM, self._serve_claim)
        bus.serve(ADOPT, self._serve_adopt)
        bus.on(RELEASE, self._on_release)
        bus.on(WILL_CLEARED, self._on_will_cleared)
        bus.on_peer_left.append(self._on_node_left)

    def _serve_claim(self, sender: str, payload: bytes) -> bytes:
        """The claims of one batch of ``sender`` (``SessionLink``), in order; the answer is
        ``SessionDirectory.claim_all``'s (first generation, not free)."""
        claims = msgpack.unpackb(payload)
        first, not_free = self.directory.claim_all(claims, sender)
        if self._pending_wills:
            self._claimed_back(claims, not_free)
        return msgpack.packb((first, not_free))

    def _claimed_back(self, claims: list[Any], not_free: list[Any]) -> None:
        """Clients of a dead worker connected again before their will was due: it is not
        sent, unless the new connection is a clean start, which ends the old session now
        and sends its will now [MQTT-3.1.3-9]. A claim that was not recorded (a client id
        alone, held by another node) changes nothing."""
        not_recorded = set(not_free[0::2])
        for index, claim in enumerate(claims):
            bare = claim.__class__ is str
            if bare and index in not_recorded:
                continue
            client_id = claim if bare else claim[0]
            pending = self._pending_wills.pop(client_id, None)
            if pending is not None:
                timer, body = pending
                timer.cancel()
                if bare or claim[1]:   # clean start
                    self._publish_will(client_id, body)

    def _serve_adopt(self, sender: str, payload: bytes) -> bytes:
        """Stored sessions ``sender`` may restore: those no live worker holds (storage)."""
        live = set(self.bus.peers) | {sender}
        return msgpack.packb(self.directory.adopt(msgpack.unpackb(payload), sender, live))

    def _on_release(self, sender: str, payload: bytes) -> None:
        """The sessions that ended on ``sender`` in one gathering: [client id, generation, ...]."""
        self.directory.release_all(msgpack.unpackb(payload), sender)

    def _on_will_cleared(self, sender: str, payload: bytes) -> None:
        self.directory.clear_will(payload.decode(), sender)

    def _on_node_left(self, node: str) -> None:
        """A worker is gone: its sessions are lost; its clients' wills go out when due."""
        now = time.monotonic()
        loop = asyncio.get_running_loop()
        for due in self.directory.node_died(node, now):
            timer = loop.call_later(max(due.due_at - now, 0.0), self._publish_will, due.client_id, due.body)
            self._pending_wills[due.client_id] = (timer, due.body)

    def _publish_will(self, client_id: str, body: bytes) -> None:
        self._pending_wills.pop(client_id, None)
        log.info("publishing the will of %r, whose worker died", client_id)
        self.publish(decode_message(body))
