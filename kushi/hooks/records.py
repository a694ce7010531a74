"""The records of the storage loaders: what a storage hook keeps and gives back at start.

A storage hook (the built-in ``kushi.hooks.storage.SqliteStorage``, or your
own) keeps the broker's state as these frozen records and returns them from
the four loaders of ``kushi.hooks.base.Hook``; ``kushi.Server.start()``
rebuilds the sessions from them (``kushi.worker.restore``) before any
listener opens:

- ``stored_clients()`` -> ``StoredClient``: one per persistent session.
- ``stored_subscriptions()`` -> ``StoredSubscription``: one per subscription.
- ``stored_inflight()`` -> ``StoredMessage``: the messages of the sessions,
  queued (not yet sent) and in flight (sent, not acknowledged), in the order
  the client is to get them.
- ``stored_retained()`` -> ``kushi.Publish`` with ``retain=True``: one per
  topic, its Message Expiry Interval being what is left of it at load time.

Subscriptions and messages of a client id with no ``StoredClient`` are
ignored: the client record is what makes a session.

Times in records are **wall-clock seconds** (``time.time()``): they must mean
the same after a restart, which a monotonic clock does not. The broker turns
them into its own clock when it loads them.

Wills and messages are ``kushi.Publish``/``Will`` records as elsewhere; to
keep them as bytes, ``message_to_bytes`` / ``message_from_bytes`` give the
MQTT 5 PUBLISH form, which has room for every property.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..protocol.codec import decode_publish, encode, read_varint
from ..protocol.packets import MQTT_5, Publish, Will

QUEUED = "queued"        # waiting for a send slot or for the client to come back; no packet id
INFLIGHT = "inflight"    # sent with ``packet_id``, PUBACK (QoS 1) or PUBREC (QoS 2) awaited
RELEASED = "released"    # QoS 2: PUBREC received, PUBREL sent, PUBCOMP awaited
MESSAGE_STATES = (QUEUED, INFLIGHT, RELEASED)


@dataclass(frozen=True)
class StoredClient:
    """A persistent session (one client id) without its subscriptions and messages.

    ``will_due_at`` is set when the connection had ended and a delayed will was
    waiting to be published; ``disconnected_at`` is None when the client was
    connected at the last save (the broker then counts the session expiry from
    the restart). ``inbound_qos2``: QoS 2 packet ids received from the client
    and not yet released by its PUBREL. ``last_packet_id``: the last packet id
    the broker used for this client, so new ids do not collide with old ones.
    """

    client_id: str
    protocol_version: int
    username: str | None = None
    expiry_interval: int = 0                 # Session Expiry Interval; 0xFFFFFFFF: never
    will: Will | None = None
    will_delay: int = 0
    will_due_at: float | None = None         # wall clock
    disconnected_at: float | None = None     # wall clock
    inbound_qos2: tuple[int, ...] = ()
    last_packet_id: int = 0


@dataclass(frozen=True)
class StoredSubscription:
    """One subscription of one session, with the options of its SUBSCRIBE."""

    client_id: str
    filter: str                              # as subscribed, "$share/group/..." included
    qos: int = 0
    no_local: bool = False
    retain_as_published: bool = False
    retain_handling: int = 0
    identifier: int | None = None


@dataclass(frozen=True)
class StoredMessage:
    """A message on its way to one client: queued, in flight, or released (QoS 2).

    ``message`` is the PUBLISH as this client gets it (its QoS, retain flag and
    subscription identifiers chosen), without a packet id: that is
    ``packet_id``, 0 while queued. ``stored_at`` is when the broker took the
    message (wall clock), for its expiry. ``sent``: it went on the wire at
    least once, so it is resent with DUP set [MQTT-4.4.0-1]. ``shared``: the
    (group, filter) of the shared subscription that chose this client, so the
    message can go to another member if the session ends unfinished
    (``kushi.worker.shared_pass_on``); None for a plain subscription.
    """

    client_id: str
    message: Publish
    stored_at: float
    state: str = QUEUED
    packet_id: int = 0
    sent: bool = False
    shared: tuple[str, str] | None = None


@dataclass(frozen=True)
class SessionRecords:
    """All the records of one session, as ``kushi.Server.session_records`` gives them."""

    client: StoredClient
    subscriptions: tuple[StoredSubscription, ...] = ()
    messages: tuple[StoredMessage, ...] = ()


def message_to_bytes(message: Publish) -> bytes:
    """``message`` as an MQTT 5 PUBLISH (every property kept; packet id 1 stands in when QoS > 0)."""
    message = replace(message, dup=False, raw=None,
                      packet_id=(message.packet_id or 1) if message.qos else None,
                      properties=replace(message.properties, topic_alias=None))
    return encode(message, MQTT_5)


def message_from_bytes(body: bytes) -> Publish:
    """The message ``message_to_bytes`` wrote, without a packet id."""
    _, start = read_varint(body, 1, len(body))
    message = decode_publish(body[0], body, start, len(body), MQTT_5, None)
    return replace(message, packet_id=None, payload=bytes(message.payload))


def will_as_publish(will: Will) -> Publish:
    """A will in PUBLISH form; the Will Delay Interval is no PUBLISH property and is kept apart."""
    properties = will.properties
    if properties.will_delay_interval is not None:
        properties = replace(properties, will_delay_interval=None)
    return Publish(will.topic, will.payload, will.qos, will.retain, properties=properties)


def publish_as_will(message: Publish, delay: int) -> Will:
    """The will ``will_as_publish`` made, its delay put back."""
    properties = message.properties
    if delay:
        properties = replace(properties, will_delay_interval=delay)
    return Will(message.topic, bytes(message.payload), message.qos, message.retain, properties)
