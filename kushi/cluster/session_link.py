"""SessionLink: a worker's side of sessions that move between workers.

Used by ``kushi.cluster.session_hook`` (on the CONNECT path) and
``kushi.cluster.handover`` (forwarding during a hand-over):

- ``claim``: before a CONNACK, ask the session directory (the supervisor) to
  record this worker as the holder of the client id, with the connection's
  will; if another worker held the session, ask it over request/reply to
  give it up (``takeover``) and return it.
- ``forward_to_client`` / ``deliver_early``: messages the previous holder
  forwards for the moved client ("pub-for"), kept until the session is here.
- ``handover_done``: tell the previous holder the client's new place is known
  everywhere, so it may stop forwarding.
- ``session_ended`` / ``will_cleared``: keep the directory up to date.

The *sink* (set by ``BusFabric.attach``) may have ``export_session(client_id,
new_node) -> Session | None`` (close the client's connection here with 0x8E,
give the session up, forward its messages to ``new_node`` for a while) and
``deliver_to_session(client_id, qos, retain, identifiers, message) -> bool``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgpack

from ..protocol.packets import Publish
from ..router.bus import Bus, BusError
from .session_transfer import session_from_wire, session_to_wire, will_to_wire
from .wire import decode_message, encode_message

log = logging.getLogger("kushi.cluster")

CLAIM = "claim"              # request to the directory: this node holds client id's session now
TAKEOVER = "takeover"        # request to the previous holder: hand the session over
RELEASE = "release"          # to the directory: the session ended here
WILL_CLEARED = "will-"       # to the directory: that will must not be sent any more
PUBLISH_FOR = "pub-for"      # a message for one moved client, forwarded by its previous holder
HANDOVER_DONE = "moved"      # to the previous holder: the client's new place is known everywhere
EARLY_LIMIT = 10_000         # forwarded messages kept for a session that has not arrived yet
TAKEOVER_TIMEOUT = 5.0       # seconds a CONNECT waits for the previous holder to give the session up
DIRECTORY = "sup"            # the node keeping the session directory (the supervisor)
ADOPT = "adopt"              # request to the directory: may this node restore these stored sessions?


@dataclass
class TakenOver:
    """A session brought here from ``node`` by a takeover."""

    session: Any
    node: str


class SessionLink:
    """Claims, takeovers and hand-over forwarding for the node of ``bus``."""

    def __init__(self, bus: Bus, directory: str = DIRECTORY) -> None:
        self.bus = bus
        self.directory = directory
        self.sink: Any = None
        self.on_handover_done: Callable[[str], Awaitable[None]] | None = None
        self._claims: dict[str, int] = {}       # client id -> generation of our claim
        self._early: dict[str, list[tuple[int, bool, tuple[int, ...], Publish]]] = {}
        bus.serve(TAKEOVER, self._serve_takeover)
        bus.on(PUBLISH_FOR, self._on_publish_for)
        bus.on(HANDOVER_DONE, self._on_handover_done)

    async def claim(self, client_id: str, clean_start: bool, will: Any = None,
                            session_expiry: int = 0) -> TakenOver | None:
        """Before a CONNACK: make this node the holder of ``client_id``'s session.

        The directory records the connection's ``will`` (a Will, or None) in the
        same step, so every client that gets a CONNACK has its will kept where
        a crash of this worker cannot take it.

        Returns the session taken over from the worker that held it (a
        ``kushi.worker.session.Session``; its connection there got 0x8E), or
        None when no other worker held one. The directory decides races: of
        two concurrent claims the later wins, and takes over from the earlier.
        Once the session is installed and its interest known everywhere, call
        ``handover_done`` so the previous holder stops forwarding.
        """
        held_will = None
        if will is not None:
            held_will = (will_to_wire(will), will.properties.will_delay_interval or 0, session_expiry)
        reply = await self.bus.request(self.directory, CLAIM,
                                       msgpack.packb((client_id, clean_start, held_will)))
        generation, previous = msgpack.unpackb(reply)
        self._claims[client_id] = generation
        if previous is None or previous == self.bus.name or previous not in self.bus.peers:
            return None   # nobody else held it, or its holder has left the bus with it
        try:
            body = await self.bus.request(previous, TAKEOVER, client_id.encode(),
                                          timeout=TAKEOVER_TIMEOUT)
        except BusError as exc:
            log.warning("no takeover of %r from %s: %s", client_id, previous, exc)
            return None
        if not body:
            return None
        return TakenOver(session_from_wire(body, time.monotonic()), previous)

    async def adopt(self, client_ids: list[str]) -> set[str]:
        """Storage: which of these stored sessions this node may restore (no live node holds
        them); the directory claims them for this node (``SessionDirectory.adopt``)."""
        reply = await self.bus.request(self.directory, ADOPT, msgpack.packb(client_ids))
        granted = msgpack.unpackb(reply)
        for client_id, generation in granted:
            self._claims[client_id] = generation
        return {client_id for client_id, _ in granted}

    def _serve_takeover(self, sender: str, payload: bytes) -> bytes:
        """Another worker took ``client_id`` over: give the session up (empty answer: none here)."""
        client_id = payload.decode()
        self._claims.pop(client_id, None)
        export = getattr(self.sink, "export_session", None)
        session = export(client_id, sender) if export is not None else None
        if session is None:
            return b""
        return session_to_wire(session, time.monotonic())

    def forward_to_client(self, node: str, client_id: str, qos: int, retain: bool,
                          identifiers: tuple[int, ...], message: Publish) -> None:
        """Send ``message`` to ``client_id``'s session, which moved to ``node``."""
        self.bus.send(node, PUBLISH_FOR, msgpack.packb(
            (client_id, qos, retain, identifiers, encode_message(message))))

    def _on_publish_for(self, sender: str, payload: bytes) -> None:
        client_id, qos, retain, identifiers, body = msgpack.unpackb(payload)
        item = (qos, retain, tuple(identifiers), decode_message(body))
        deliver = getattr(self.sink, "deliver_to_session", None)
        if deliver is not None and deliver(client_id, *item):
            return
        early = self._early.setdefault(client_id, [])
        if len(early) < EARLY_LIMIT:
            early.append(item)   # it beat the takeover reply: delivered once the session is here

    def deliver_early(self, client_id: str) -> None:
        """Deliver what was forwarded for ``client_id`` before its session was installed here."""
        deliver = getattr(self.sink, "deliver_to_session", None)
        for item in self._early.pop(client_id, ()):
            if deliver is not None:
                deliver(client_id, *item)

    def handover_done(self, previous: str, client_id: str) -> None:
        """Tell ``previous`` that ``client_id``'s interest here is known everywhere."""
        self.bus.send(previous, HANDOVER_DONE, client_id.encode())

    def _on_handover_done(self, sender: str, payload: bytes) -> None:
        if self.on_handover_done is not None:
            asyncio.get_running_loop().create_task(self.on_handover_done(payload.decode()))

    def session_ended(self, client_id: str) -> None:
        """The session of ``client_id`` ended here (clean start, expiry): tell the directory."""
        generation = self._claims.pop(client_id, None)
        self.bus.send(self.directory, RELEASE, msgpack.packb((client_id, generation)))

    def will_cleared(self, client_id: str) -> None:
        """The will of ``client_id`` was sent, or must not be: the directory forgets its copy."""
        self.bus.send(self.directory, WILL_CLEARED, client_id.encode())
