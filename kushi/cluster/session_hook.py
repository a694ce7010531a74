"""ClusterSessionHook: the broker's sessions and wills, kept in step with the session directory.

A worker's broker knows only its own sessions. This hook, added last to each
worker's server, connects it to the directory through the fabric using the
hook events the broker already has:

- ``on_connect_authenticate`` (last provider, so it runs only for a client
  every auth hook accepted): claim the client id; if another worker held
  the session, it is taken over from there (0x8E to the old connection) and
  installed here, its subscriptions re-added and known on every worker
  (barrier) before the CONNACK says "session present". A clean start
  without a will does not wait for the claim: its CONNACK goes at once, and
  a session another worker held is taken over and ended just after.
  The claim carries the will: the directory keeps a copy before the client
  has its CONNACK, so it is published even if this worker crashes.
- ``on_disconnect`` / ``on_will_sent`` / ``on_client_expired``: the copy is
  dropped when the will went out or must not; an ended session is released.
- With storage: a clean start 0 whose session no worker holds is looked up in
  the store (``Server.restore_stored_session``): the session of a worker that
  died, before another worker adopted it (``kushi.cluster.worker``).

The session itself moves with ``Broker.export_session`` (on the worker that
gives it up, see ``kushi.cluster.worker``) and ``Broker.import_session``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable
from typing import Any

from ..hooks.base import Hook
from ..protocol.packets import MQTT_5, Connect
from ..worker.session import NEVER
from .fabric import BusFabric
from .session_link import TakenOver


class ClusterSessionHook(Hook):
    """Keeps one worker's sessions and wills in step with the cluster's session directory."""

    id = "cluster-sessions"

    def __init__(self, fabric: BusFabric, server: Any) -> None:
        self.fabric = fabric
        self.server = server
        # bound once: each CONNECT of a clean start without a will hands them on
        self._claim_without_waiting = fabric.sessions.claim_without_waiting
        self._on_taken = self._end_taken_over

    def on_connect_authenticate(self, client: Any, packet: Connect) -> bool | Awaitable[bool]:
        """Claim the client id; bring the session here if another worker held it.

        A clean start without a will answers at once (no task, no round trip
        before the CONNACK: ``SessionLink.claim_without_waiting``); any other
        CONNECT waits for the claim, since its CONNACK depends on the answer
        (session present) or its will must be kept safe first.
        """
        if packet.clean_start and packet.will is None:
            self._claim_without_waiting(client.client_id, self._on_taken)
            return True
        return self._claim(client, packet)

    async def _claim(self, client: Any, packet: Connect) -> bool:
        """The claim a CONNECT waits for: the session it takes over is installed, or ended."""
        client_id = client.client_id
        taken = await self.fabric.sessions.claim(client_id, packet.clean_start, packet.will,
                                                self._session_expiry(packet))
        if taken is None:
            if not packet.clean_start and self.server.restore_stored_session(client_id):
                await self.fabric.barrier()   # storage: a dead worker's session, its interest known
            return True
        if packet.clean_start:
            self._end_taken_over(taken)
            return True
        self.server.broker.import_session(taken.session)
        self.fabric.sessions.deliver_early(client_id)
        await self.fabric.barrier()
        self.fabric.sessions.handover_done(taken.node, client_id)
        return True

    def _end_taken_over(self, taken: TakenOver) -> None:
        """A clean start took over the session another worker held: end it, and tell that
        worker its client's place is known (it stops forwarding)."""
        self._end_taken_session(taken.session)
        self.fabric.sessions.handover_done(taken.node, taken.session.client_id)

    def _end_taken_session(self, session: Any) -> None:
        """A clean start ends the session taken from the other worker, as ``Broker.end_session``
        ends one here: a pending delayed will goes out now [MQTT-3.1.3-9]; what its shared
        groups gave it and it never got goes to another member (``shared_pass_on``); the rest
        is dropped. Its subscriptions were never in this worker's matcher: nothing to remove."""
        broker = self.server.broker
        now = time.monotonic()
        if session.will is not None and session.will_due_at is not None:
            broker.publish_will(session, session.client or broker.server_info, now)
        broker.drop_session_messages(session, now)

    def _session_expiry(self, packet: Connect) -> int:
        """The session expiry the broker will grant (it caps the will delay) [MQTT-3.1.3-9]."""
        if packet.protocol_version == MQTT_5:
            requested = packet.properties.session_expiry_interval or 0
        else:
            requested = 0 if packet.clean_start else NEVER
        return min(requested, self.server.options.maximum_session_expiry)

    def on_disconnect(self, client: Any, error: BaseException | None, expire: bool) -> None:
        session = getattr(client, "session", None)
        if session is None or session.will is None:   # sent already, or dropped by a DISCONNECT
            self.fabric.sessions.will_cleared(client.client_id)
        if expire:
            self.fabric.sessions.session_ended(client.client_id)

    def on_will_sent(self, client: Any, packet: Any) -> None:
        if getattr(client, "client_id", ""):
            self.fabric.sessions.will_cleared(client.client_id)

    def on_client_expired(self, client_id: str) -> None:
        self.fabric.sessions.session_ended(client_id)
