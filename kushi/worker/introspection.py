"""What ``kushi.Server`` tells a program about its clients: plain, frozen snapshot records.

``server.clients()``, ``client(id)`` and ``subscriptions(id)`` return these
records, never the live connection or session objects: a record is a copy
taken at the moment of the call, holds only plain values (str, int, float,
bool, None) and crosses a process boundary as a msgpack array (``to_wire`` /
``from_wire``). With several workers (``kushi.cluster.introspection``) each
worker builds the records of its own clients and the supervisor gathers them,
so a program gets the same records whether it runs one process or N.
"""

from __future__ import annotations

import time
from dataclasses import astuple, dataclass
from typing import Any

from .connection import MQTTConnection
from .session import Session


@dataclass(frozen=True, slots=True)
class ClientSnapshot:
    """One connected client, as it was when the snapshot was taken."""

    client_id: str
    username: str | None
    protocol_version: int                       # 3, 4 (3.1.1) or 5
    remote_address: tuple[str, int] | str | None  # (host, port); a path for a Unix socket
    listener: str                               # the id of the listener it came in on
    worker_id: int                              # the worker process holding it (0 with one)
    keep_alive: int                             # seconds, as agreed in CONNECT/CONNACK
    clean_start: bool
    session_expiry_interval: int                # seconds after the connection ends
    connected_since: float                      # wall clock (time.time()) of the connection
    inflight: int                               # QoS 1/2 messages sent, not yet acknowledged
    queued: int                                 # messages waiting to be sent
    subscriptions: int                          # filters the session is subscribed to

    def to_wire(self) -> list[Any]:
        return list(astuple(self))

    @classmethod
    def from_wire(cls, fields: list[Any]) -> ClientSnapshot:
        address = fields[3]
        if isinstance(address, list):   # msgpack has no tuples
            fields = [*fields[:3], tuple(address), *fields[4:]]
        return cls(*fields)


@dataclass(frozen=True, slots=True)
class SubscriptionSnapshot:
    """One subscription of a session: the filter as subscribed and its options."""

    filter: str                   # "$share/group/..." included
    qos: int
    no_local: bool
    retain_as_published: bool
    retain_handling: int
    identifier: int | None        # the v5 Subscription Identifier, if one was given

    def to_wire(self) -> list[Any]:
        return list(astuple(self))

    @classmethod
    def from_wire(cls, fields: list[Any]) -> SubscriptionSnapshot:
        return cls(*fields)


def client_snapshot(conn: MQTTConnection, worker_id: int) -> ClientSnapshot:
    """The snapshot of a connected client."""
    session = conn.session
    address = conn.remote_address
    if isinstance(address, tuple):
        address = (address[0], address[1])   # an IPv6 peername has flow info and scope id too
    return ClientSnapshot(
        client_id=conn.client_id,
        username=conn.username,
        protocol_version=conn.protocol_version,
        remote_address=address,
        listener=conn.listener,
        worker_id=worker_id,
        keep_alive=conn.keep_alive,
        clean_start=conn.clean_start,
        session_expiry_interval=session.expiry_interval if session is not None else 0,
        connected_since=time.time() - (time.monotonic() - conn.opened_at),
        inflight=len(session.inflight) if session is not None else 0,
        queued=len(session.queue) if session is not None else 0,
        subscriptions=len(session.subscriptions) if session is not None else 0,
    )


def subscription_snapshots(session: Session) -> dict[str, SubscriptionSnapshot]:
    """A session's subscriptions by filter (as subscribed)."""
    return {
        filter: SubscriptionSnapshot(filter, entry.qos, entry.no_local, entry.retain_as_published,
                                     entry.retain_handling, entry.identifier)
        for filter, entry in session.subscriptions.items()
    }
