"""A session's state as bytes, to move it from one worker to another (takeover, scale-down).

msgpack of plain values; messages travel as MQTT 5 PUBLISH bytes (the bus
form of ``kushi.cluster.fabric``), so every property survives and nothing
is pickled. Times are sent as ages ("stored 3.2 s ago") because each
process's monotonic clock has its own origin.

What moves (``kushi.worker.session.Session``): subscriptions with their
options, messages in flight (packet id, PUBREL owed or not), queued
messages, QoS 2 packet ids received and not released, the will with its
delay (and when it is due, if its connection had closed), the expiry
interval, the client's receive maximum, and the last packet id used (so
new ids do not collide with the client's memory of old ones).
The inline client's callbacks never move: they belong to their process.
"""

from __future__ import annotations

from dataclasses import replace

import msgpack

from ..protocol.packets import Publish, Will
from ..worker.session import Outbound, Session, SubscriptionEntry
from .wire import decode_message, encode_message

FORMAT = 1


def session_to_wire(session: Session, now: float) -> bytes:
    """``session`` as bytes, its times relative to ``now``."""
    will = session.will
    state = {
        "format": FORMAT,
        "client_id": session.client_id,
        "version": session.protocol_version,
        "max_queued": session.max_queued_messages,
        "expiry": session.expiry_interval,
        "subscriptions": [
            (e.filter, e.qos, e.no_local, e.retain_as_published, e.retain_handling, e.identifier)
            for e in session.subscriptions.values() if e.callback is None
        ],
        "inflight": [(item.packet_id, encode_message(item.message), now - item.received_at,
                      item.released, item.sent) for item in session.inflight.values()],
        "queue": [(encode_message(item.message), now - item.received_at) for item in session.queue],
        "inbound_qos2": sorted(session.inbound_qos2),
        "will": None if will is None else encode_message(_will_as_publish(will)),
        "will_delay": session.will_delay,
        "will_due_in": None if session.will_due_at is None else session.will_due_at - now,
        "disconnected_for": None if session.disconnected_at is None else now - session.disconnected_at,
        "send_quota_limit": session.send_quota_limit,
        "dropped": session.dropped,
        "last_packet_id": session._last_packet_id,
    }
    return msgpack.packb(state)


def session_from_wire(body: bytes, now: float) -> Session:
    """The session ``session_to_wire`` wrote, its times made relative to this process's ``now``."""
    state = msgpack.unpackb(body)
    if state.get("format") != FORMAT:
        raise ValueError(f"unknown session transfer format {state.get('format')!r}")
    client_id = state["client_id"]
    session = Session(client_id, state["version"], state["max_queued"])
    session.expiry_interval = state["expiry"]
    for filter, qos, no_local, retain_as_published, retain_handling, identifier in state["subscriptions"]:
        session.subscriptions[filter] = SubscriptionEntry(
            client_id, filter, qos, no_local, retain_as_published, retain_handling, identifier)
    for packet_id, message, age, released, sent in state["inflight"]:
        session.inflight[packet_id] = Outbound(_without_packet_id(message), now - age, packet_id,
                                               released, sent)
    for message, age in state["queue"]:
        session.queue.append(Outbound(_without_packet_id(message), now - age))
    session.inbound_qos2 = set(state["inbound_qos2"])
    session.will_delay = state["will_delay"]
    if state["will"] is not None:
        session.will = _publish_as_will(decode_message(state["will"]), session.will_delay)
    if state["will_due_in"] is not None:   # a delayed will was pending on the old worker
        session.will_due_at = now + state["will_due_in"]
    disconnected_for = state["disconnected_for"]
    session.disconnected_at = None if disconnected_for is None else now - disconnected_for
    session.send_quota_limit = state["send_quota_limit"]
    session.dropped = state["dropped"]
    session._last_packet_id = state["last_packet_id"]
    return session


def _without_packet_id(body: bytes) -> Publish:
    """Outbound messages are kept without a packet id (it lives in ``Outbound.packet_id``)."""
    return replace(decode_message(body), packet_id=None, raw=None)


def _will_as_publish(will: Will) -> Publish:
    """A will in PUBLISH form; the will delay is not a PUBLISH property and travels apart."""
    properties = will.properties
    if properties.will_delay_interval is not None:
        properties = replace(properties, will_delay_interval=None)
    return Publish(will.topic, will.payload, will.qos, will.retain, properties=properties)


def _publish_as_will(message: Publish, delay: int) -> Will:
    properties = message.properties
    if delay:
        properties = replace(properties, will_delay_interval=delay)
    return Will(message.topic, bytes(message.payload), message.qos, message.retain, properties)


def will_to_wire(will: Will) -> bytes:
    """A will as the bytes the session directory keeps (MQTT 5 PUBLISH form)."""
    return encode_message(_will_as_publish(will))
