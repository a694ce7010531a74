"""A session's state as bytes, to move it from one worker to another (takeover, scale-down).

The session is first turned into the records a storage hook keeps
(``kushi.worker.restore.session_records``: ``StoredClient``,
``StoredSubscription``, ``StoredMessage``), so a moved session and a restored
one are built by the same code; those go as msgpack of plain values, messages
and the will as MQTT 5 PUBLISH bytes (``kushi.hooks.records.message_to_bytes``),
so every property survives and nothing is pickled. Times are sent relative to
"now" (``offset = -now`` on both sides) because each process's monotonic
clock has its own origin.

What moves: subscriptions with their options, messages in flight (packet id,
PUBREL owed or not, sent once or not), queued messages, QoS 2 packet ids
received and not released, the will with its delay (and when it is due, if
its connection had closed), the expiry interval, the last packet id used (so
new ids do not collide with the client's memory of old ones), and what only
a live session has: its queue limit, the client's receive maximum and the
count of dropped messages. The inline client's callbacks never move: they
belong to their process.
"""

from __future__ import annotations

import msgpack

from ..hooks.records import (
    StoredClient, StoredMessage, StoredSubscription, message_from_bytes, message_to_bytes,
    publish_as_will, will_as_publish,
)
from ..protocol.packets import Will
from ..worker.restore import session_records, sessions_from_records
from ..worker.session import Session

FORMAT = 3


def session_to_wire(session: Session, now: float) -> bytes:
    """``session`` as bytes, its times relative to ``now``."""
    records = session_records(session, offset=-now)
    client = records.client
    state = {
        "format": FORMAT,
        "client": (client.client_id, client.protocol_version, client.username, client.expiry_interval,
                   None if client.will is None else will_to_wire(client.will), client.will_delay,
                   client.will_due_at, client.disconnected_at, client.inbound_qos2,
                   client.last_packet_id),
        "subscriptions": [(s.filter, s.qos, s.no_local, s.retain_as_published, s.retain_handling,
                           s.identifier) for s in records.subscriptions],
        "messages": [(m.state, m.packet_id, m.sent, m.stored_at, message_to_bytes(m.message), m.shared)
                     for m in records.messages],
        "max_queued": session.max_queued_messages,
        "send_quota_limit": session.send_quota_limit,
        "dropped": session.dropped,
    }
    return msgpack.packb(state)


def session_from_wire(body: bytes, now: float) -> Session:
    """The session ``session_to_wire`` wrote, its times made relative to this process's ``now``."""
    state = msgpack.unpackb(body)
    if state.get("format") != FORMAT:
        raise ValueError(f"unknown session transfer format {state.get('format')!r}")
    (client_id, version, username, expiry, will, will_delay, will_due_at, disconnected_at,
     inbound_qos2, last_packet_id) = state["client"]
    client = StoredClient(client_id, version, username, expiry,
                          None if will is None else publish_as_will(message_from_bytes(will), will_delay),
                          will_delay, will_due_at, disconnected_at, tuple(inbound_qos2), last_packet_id)
    subscriptions = [StoredSubscription(client_id, *fields) for fields in state["subscriptions"]]
    messages = [StoredMessage(client_id, message_from_bytes(body), stored_at, kind, packet_id, sent,
                              None if shared is None else tuple(shared))
                for kind, packet_id, sent, stored_at, body, shared in state["messages"]]
    (session,) = sessions_from_records([client], subscriptions, messages, -now, state["max_queued"])
    session.send_quota_limit = state["send_quota_limit"]
    session.dropped = state["dropped"]
    return session


def will_to_wire(will: Will) -> bytes:
    """A will as the bytes the session directory keeps (MQTT 5 PUBLISH form)."""
    return message_to_bytes(will_as_publish(will))
