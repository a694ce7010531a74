"""Sessions to records and back: what storage hooks keep, and the broker restores at start.

``session_records`` turns a ``Session`` into ``kushi.hooks.records``
(``StoredClient``, ``StoredSubscription``, ``StoredMessage``);
``sessions_from_records`` builds ``Session`` objects from them. The same pair
carries a session from one worker to another (``kushi.cluster.session_transfer``).

Times: a ``Session`` keeps ``time.monotonic()`` values; records keep another
clock, ``offset`` seconds ahead (record time = monotonic time + offset). A
storage hook uses the wall clock (``offset = time.time() - time.monotonic()``,
see ``wall_offset``), so the times still mean something after a restart;
a session transfer uses ``offset = -now`` on both sides (times relative to
"now"), because two processes' monotonic clocks have different origins.

``Server.restore_stored_sessions`` (a step of ``start()``) uses the rest:
``stored_clients_to_restore`` reads the hooks' ``stored_clients`` and drops
the sessions that expired meanwhile; the server may then ask ``adopt`` which
client ids this process may take (several workers share one store: each
session lands on one worker); ``install_sessions`` reads
``stored_subscriptions`` and ``stored_inflight`` and installs the sessions
detached, their subscriptions live, as if their clients had just gone
offline (``detached_after_restart``). A client that then connects with clean
start 0 gets session present, its in-flight messages again (DUP) and its
queue. ``install_stored_session`` does the same for one client id, from a
hook that can look one up (``SqliteStorage.stored_session``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..hooks.records import (
    INFLIGHT, QUEUED, RELEASED, SessionRecords, StoredClient, StoredMessage, StoredSubscription,
)
from ..protocol.packets import Publish
from .session import NEVER, Outbound, Session, SubscriptionEntry

if TYPE_CHECKING:
    from .broker import Broker

log = logging.getLogger("kushi.restore")


class RestoredClient:
    """The ClientInfo of a restored session until its client connects (hooks read it)."""

    remote_address = None
    listener = ""
    clean_start = False
    connected = False

    def __init__(self, client_id: str, username: str | None, protocol_version: int) -> None:
        self.client_id = client_id
        self.username = username
        self.protocol_version = protocol_version


def wall_offset() -> float:
    """The ``offset`` from this process's monotonic clock to the wall clock, now."""
    return time.time() - time.monotonic()


def session_records(session: Session, offset: float, messages: bool = True) -> SessionRecords:
    """``session`` as records, its times in the clock ``offset`` seconds ahead of monotonic.

    The inline client's subscriptions (callbacks of this process) are left out.
    ``messages=False`` leaves the queued and in-flight messages out (cheaper).
    """
    client_id = session.client_id
    username = getattr(session.client, "username", None)
    client = StoredClient(
        client_id, session.protocol_version, username, session.expiry_interval, session.will,
        session.will_delay,
        None if session.will_due_at is None else session.will_due_at + offset,
        None if session.disconnected_at is None else session.disconnected_at + offset,
        tuple(sorted(session.inbound_qos2)), session._last_packet_id)
    subscriptions = tuple(
        StoredSubscription(client_id, e.filter, e.qos, e.no_local, e.retain_as_published,
                           e.retain_handling, e.identifier)
        for e in session.subscriptions.values() if e.callback is None)
    stored: list[StoredMessage] = []
    if messages:
        for item in session.inflight.values():
            stored.append(StoredMessage(client_id, _own_copy(item.message), item.received_at + offset,
                                        RELEASED if item.released else INFLIGHT, item.packet_id,
                                        item.sent, item.shared))
        for item in session.queue:
            stored.append(StoredMessage(client_id, _own_copy(item.message), item.received_at + offset,
                                        shared=item.shared))
    return SessionRecords(client, subscriptions, tuple(stored))


def _own_copy(message: Publish) -> Publish:
    """The message as a record holds it: no packet id (an outbound one may carry its
    publisher's, see ``Outbound``), no received bytes, its payload as bytes of its own."""
    if message.packet_id is None and message.raw is None and type(message.payload) is bytes:
        return message
    return replace(message, packet_id=None, raw=None, payload=bytes(message.payload))


def sessions_from_records(clients: Iterable[StoredClient],
                          subscriptions: Iterable[StoredSubscription],
                          messages: Iterable[StoredMessage], offset: float,
                          max_queued_messages: int) -> list[Session]:
    """The sessions the records describe, their times turned into this process's monotonic
    clock (``offset`` as in ``session_records``); the exact inverse of ``session_records``.

    Records of a client id without a ``StoredClient`` are ignored.
    """
    sessions: dict[str, Session] = {}
    for record in clients:
        session = Session(record.client_id, record.protocol_version, max_queued_messages)
        session.expiry_interval = record.expiry_interval
        session.client = RestoredClient(record.client_id, record.username, record.protocol_version)
        if record.disconnected_at is not None:
            session.disconnected_at = record.disconnected_at - offset
        session.inbound_qos2 = set(record.inbound_qos2)
        session._last_packet_id = record.last_packet_id
        session.will = record.will
        session.will_delay = record.will_delay
        if record.will_due_at is not None:
            session.will_due_at = record.will_due_at - offset
        sessions[record.client_id] = session
    for sub in subscriptions:
        session = sessions.get(sub.client_id)
        if session is not None:
            session.subscriptions[sub.filter] = SubscriptionEntry(
                sub.client_id, sub.filter, sub.qos, sub.no_local, sub.retain_as_published,
                sub.retain_handling, sub.identifier)
    for stored in messages:
        session = sessions.get(stored.client_id)
        if session is None:
            continue
        item = Outbound(stored.message, stored.stored_at - offset)
        item.shared = stored.shared
        if stored.state == QUEUED or not stored.packet_id:
            session.queue_for_append().append(item)
        else:
            item.packet_id = stored.packet_id
            item.released = stored.state == RELEASED
            item.sent = stored.sent
            session.inflight[stored.packet_id] = item
    return list(sessions.values())


def detached_after_restart(session: Session, now: float, wills: bool) -> None:
    """A stored session coming back after its process stopped: its connection, if it had one
    when saved, ended with that process (``now`` stands in for when). With ``wills`` a will
    still waiting is due after its delay [MQTT-3.1.3-9]; without, it is dropped (the session
    directory of a cluster publishes the wills of a dead worker)."""
    if session.disconnected_at is None:
        session.disconnected_at = now
    if not wills:
        session.will = None
        session.will_due_at = None
    elif session.will is not None and session.will_due_at is None:
        session.will_due_at = now + min(session.will_delay, session.expiry_interval)


def message_state_version(session: Session) -> tuple[Any, ...]:
    """A value that changes whenever the session's messages change (cheap: no copy).

    A storage hook saves a session's messages again only when this differs from
    the value it saved with, so an idle session costs one small tuple per autosave.
    """
    queue = session.queue
    inflight = session.inflight
    inbound = session.inbound_qos2
    if not queue and not inflight and not inbound:   # the common case, kept short
        return (session._last_packet_id, session.dropped, session.disconnected_at)
    return (session._last_packet_id, session.dropped, session.disconnected_at,
            len(inflight), sum(1 for item in inflight.values() if item.released),
            len(queue), id(queue[0]) if queue else 0, id(queue[-1]) if queue else 0,
            frozenset(inbound))


def is_expired(record: StoredClient, wall_now: float) -> bool:
    """Has this stored session expired by ``wall_now`` (it is then not restored)?"""
    if record.disconnected_at is None or record.expiry_interval >= NEVER:
        return False
    return wall_now >= record.disconnected_at + record.expiry_interval


async def stored_clients_to_restore(broker: Broker) -> list[StoredClient]:
    """The hooks' stored clients whose sessions have not expired and are not here already."""
    hooks = broker.hooks
    if not hooks.provides("stored_clients"):
        return []
    wall_now = time.time()
    kept: list[StoredClient] = []
    for record in await hooks.stored_clients():
        if not isinstance(record, StoredClient):
            log.warning("stored_clients gave %r, not a StoredClient: ignored", type(record).__name__)
        elif not is_expired(record, wall_now) and record.client_id not in broker.sessions:
            kept.append(record)
    return kept


async def install_sessions(broker: Broker, clients: list[StoredClient], wills: bool = True) -> int:
    """Restore the sessions of ``clients`` into ``broker`` (detached); the number installed."""
    if not clients:
        return 0
    hooks = broker.hooks
    wanted = {record.client_id for record in clients}
    stored_subscriptions = await hooks.stored_subscriptions()
    subscriptions = [s for s in stored_subscriptions
                     if isinstance(s, StoredSubscription) and s.client_id in wanted]
    messages = [m for m in await hooks.stored_inflight()
                if isinstance(m, StoredMessage) and m.client_id in wanted]
    count = _install(broker, clients, subscriptions, messages, wills)
    if count:
        log.info("restored %d stored sessions", count)
    return count


def install_stored_session(broker: Broker, client_id: str, wills: bool = True) -> bool:
    """Restore one client's session from the first hook whose ``stored_session(client_id)``
    has it (``SqliteStorage`` does); False if none has it, or it has expired."""
    for hook in broker.hooks.hooks:
        lookup = getattr(hook, "stored_session", None)
        records = lookup(client_id) if lookup is not None else None
        if isinstance(records, SessionRecords) and not is_expired(records.client, time.time()):
            _install(broker, [records.client], records.subscriptions, records.messages, wills)
            log.info("restored the stored session of %r", client_id)
            return True
    return False


def _install(broker: Broker, clients: Iterable[StoredClient], subscriptions: Iterable[StoredSubscription],
             messages: Iterable[StoredMessage], wills: bool) -> int:
    now = time.monotonic()
    sessions = sessions_from_records(clients, subscriptions, messages, wall_offset(),
                                     broker.options.max_queued_messages)
    for session in sessions:
        detached_after_restart(session, now, wills)
        broker.import_session(session)
    return len(sessions)
