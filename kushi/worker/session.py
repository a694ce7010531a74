"""Session: the state MQTT keeps for one client id, with or without a connection.

What lives here (MQTT 5 section 4.1): the client's subscriptions, the QoS 1/2
messages sent and not yet acknowledged (``inflight``), the QoS 2 packet ids
received and not yet released, the messages waiting for a free slot or for the
client to come back (``queue``), the will and the session's expiry.

Pure logic: no I/O, no clock; every method that needs the time takes ``now``
(seconds, ``time.monotonic()``).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ..protocol.packets import Publish, Will

NEVER = 0xFFFFFFFF
"""A Session Expiry Interval meaning the session never expires."""


@dataclass(slots=True)
class SubscriptionEntry:
    """One subscription of one session: the value stored in the subscription trie."""

    client_id: str
    filter: str                  # as subscribed, "$share/group/..." included
    qos: int = 0
    no_local: bool = False
    retain_as_published: bool = False
    retain_handling: int = 0
    identifier: int | None = None
    callback: object = None      # set for the inline client's subscriptions only


@dataclass(slots=True)
class Outbound:
    """A message on its way to one client: queued, or in flight with a packet id.

    ``message`` is the PUBLISH as this client will get it (QoS, retain flag and
    subscription identifiers already chosen). Its own ``packet_id`` means nothing
    here: None, or, where the message goes out exactly as it came in (the QoS 1 run
    of ``Delivery.route_run``), the publisher's, kept to save a copy of the record.
    The id this client gets is ``packet_id`` below; whoever encodes or hands the
    message on (resend, session transfer, storage) uses that one.
    ``received_at`` is when the broker took it, for message expiry.
    """

    message: Publish
    received_at: float
    packet_id: int = 0
    released: bool = False       # PUBREC received and PUBREL sent; waiting for PUBCOMP
    sent: bool = False           # has gone on the wire at least once
    forms: object = None         # the WireForms of the routed message, to share its encoding
    shared: tuple[str, str] | None = None   # (group, filter) if a shared group chose this client:
                                            # its session's end passes it on (shared_pass_on.py)


class RunOutbound(Outbound):
    """An in-flight record of one message of a run another worker sent as received bytes.

    ``Delivery.route_received_run`` writes such a run on without reading it into
    messages; ``source`` is (the ``ReceivedRun``, the message's index in it). The
    message is read from the run's bytes only when asked for (a resend, a
    hand-over, storage), all of the run's at once and then kept; a PUBACK needs
    none. Otherwise an ``Outbound`` like any other.
    """

    __slots__ = ("source", "_message")

    def __init__(self, source: tuple[Any, int], received_at: float, packet_id: int = 0,
                 released: bool = False, sent: bool = False) -> None:
        self.source = source
        self._message: Publish | None = None
        self.received_at = received_at
        self.packet_id = packet_id
        self.released = released
        self.sent = sent
        self.forms = None
        self.shared = None

    @property  # type: ignore[override]
    def message(self) -> Publish:
        message = self._message
        if message is None:
            run, index = self.source
            message = self._message = run.messages()[index]
        return message

    @message.setter
    def message(self, value: Publish) -> None:
        self._message = value


@dataclass(slots=True)
class Session:
    """All the state of one client id; outlives its connections while it has not expired."""

    client_id: str
    protocol_version: int
    max_queued_messages: int = 1000
    expiry_interval: int = 0           # seconds after disconnect; NEVER = keep forever
    subscriptions: dict[str, SubscriptionEntry] = field(default_factory=dict)
    inflight: dict[int, Outbound] = field(default_factory=dict)
    # the queue and the QoS 2 ids are () until the first is added (``queue_for_append``,
    # ``add_inbound_qos2``): most sessions never hold one, and an empty deque and set cost
    # ~840 bytes and two GC-tracked objects per session of a storm's 10,000 (tracemalloc);
    # () reads as an empty one (truth, len, in, iteration)
    queue: deque[Outbound] | tuple[()] = ()
    inbound_qos2: set[int] | tuple[()] = ()
    will: Will | None = None
    will_delay: int = 0
    will_due_at: float | None = None   # set while a delayed will waits to be published
    client: object = None              # ClientInfo of the last connection (hooks see it)
    disconnected_at: float | None = None
    send_quota_limit: int = 65535      # the client's Receive Maximum, capped by ours
    dropped: int = 0                   # queued messages dropped because the queue was full
    _last_packet_id: int = 0

    # ---- packet identifiers ---------------------------------------------
    def allocate_packet_id(self) -> int | None:
        """A non-zero packet id not in use by an inflight message [MQTT-2.2.1-4]; None if all are."""
        if len(self.inflight) >= 65535:
            return None
        packet_id = self._last_packet_id
        while True:
            packet_id = packet_id % 65535 + 1
            if packet_id not in self.inflight:
                self._last_packet_id = packet_id
                return packet_id

    # ---- flow control ------------------------------------------------------
    def has_send_quota(self) -> bool:
        """May one more QoS 1/2 PUBLISH go out now [MQTT-4.9.0-2]?"""
        return len(self.inflight) < self.send_quota_limit

    def enqueue(self, item: Outbound) -> Outbound | None:
        """Queue a message; if the queue is full, drop the oldest and return it."""
        if self.max_queued_messages <= 0:
            self.dropped += 1
            return item   # no queue at all
        queue = self.queue_for_append()
        dropped = None
        if len(queue) >= self.max_queued_messages:
            dropped = queue.popleft()
            self.dropped += 1
        queue.append(item)
        return dropped

    def queue_for_append(self) -> deque[Outbound]:
        """The queue, made when the first message is to go in."""
        queue = self.queue
        if not isinstance(queue, deque):
            queue = self.queue = deque()
        return queue

    def start_inflight(self, item: Outbound) -> bool:
        """Give a message a packet id and record it as in flight; False if no id is free."""
        packet_id = self.allocate_packet_id()
        if packet_id is None:
            return False
        item.packet_id = packet_id
        self.inflight[packet_id] = item
        return True

    def add_inbound_qos2(self, packet_id: int) -> None:
        """A QoS 2 PUBLISH received: its id is held until the PUBREL [MQTT-4.3.3-10]."""
        inbound = self.inbound_qos2
        if not isinstance(inbound, set):
            inbound = self.inbound_qos2 = set()
        inbound.add(packet_id)

    # ---- acknowledgements of what we sent ------------------------------------
    def acknowledge(self, packet_id: int) -> Outbound | None:
        """PUBACK, PUBCOMP, or a failing PUBREC: the message's flow is over."""
        return self.inflight.pop(packet_id, None)

    def release(self, packet_id: int) -> Outbound | None:
        """A successful PUBREC: from now on we owe a PUBREL, never the PUBLISH again."""
        item = self.inflight.get(packet_id)
        if item is not None:
            item.released = True
        return item

    # ---- expiry ---------------------------------------------------------------
    def detach(self, now: float) -> None:
        """The connection has gone; the expiry clock starts."""
        self.disconnected_at = now

    def attach(self) -> None:
        """A connection has taken this session (again); nothing expires while it lives."""
        self.disconnected_at = None
        self.will_due_at = None

    def expires_at(self) -> float | None:
        """When this session ends; None while connected or if it never expires."""
        if self.disconnected_at is None or self.expiry_interval >= NEVER:
            return None
        return self.disconnected_at + self.expiry_interval

    def is_expired(self, now: float) -> bool:
        due = self.expires_at()
        return due is not None and now >= due


_new = object.__new__


def new_session(client_id: str, protocol_version: int, max_queued_messages: int) -> Session:
    """``Session(client_id, protocol_version, max_queued_messages)`` in fewer steps, for the
    session a CONNECT starts (each client of a connection storm): the dataclass ``__init__``,
    called through ``type_call`` with 17 parameters and two default factories, costs ~3,600
    instructions, this ~2,600 (callgrind; a live connect ~1,200 less). Every field as the
    dataclass sets it (tests/worker/test_session.py holds the two equal)."""
    session = _new(Session)
    session.client_id = client_id
    session.protocol_version = protocol_version
    session.max_queued_messages = max_queued_messages
    session.expiry_interval = 0
    session.subscriptions = {}
    session.inflight = {}
    session.queue = ()
    session.inbound_qos2 = ()
    session.will = None
    session.will_delay = 0
    session.will_due_at = None
    session.client = None
    session.disconnected_at = None
    session.send_quota_limit = 65535
    session.dropped = 0
    session._last_packet_id = 0
    return session


def remaining_expiry(message: Publish, received_at: float, now: float) -> int | None:
    """The Message Expiry Interval left for ``message`` at ``now`` [MQTT-3.3.2-6].

    None if the message has no expiry; 0 or less means it has expired [MQTT-3.3.2-5].
    """
    interval = message.properties.message_expiry_interval
    if interval is None:
        return None
    return interval - int(now - received_at)
