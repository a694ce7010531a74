"""A shared-group member's session ends: what the group gave it and it never got goes to another member.

MQTT 5 section 4.8.2: when the connection to the member a shared subscription
chose for a QoS 1 message breaks before the member acknowledged it, the server
may wait for the member to come back; "if the Client's Session terminates
before the Client reconnects, the Server SHOULD send the Application Message to
another Client that is subscribed to the same Shared Subscription". kushi waits
while the session lives (a session expiry above 0) and passes the message on
when the session ends: on expiry, on a disconnect with session expiry 0, or
when a clean start discards it (``Broker.end_session``).

A QoS 2 message is different. Once its PUBLISH went out, the member may hold it,
and exactly once forbids a second copy: the server "MUST NOT send the
Application Message to any other subscribed Client" [MQTT-4.8.2-5]; with a
PUBREC the member has it for certain. So of what the ending session owes the
client, these go on:

* QoS 1 in flight (sent, not acknowledged: the member acknowledged none of it),
* QoS 2 in flight that never went out on the wire (``sent`` False),
* everything queued (never sent).

The message goes to a member on this worker if there is one
(``Delivery.deliver_to_member``: no bus hop, and a worker the session just left
may still count its hand-over forwarder as a member), else to the worker whose
turn it is among the others (``fabric.pick_shared`` and ``forward_shared``): the original message at its
original QoS, capped by the new member's subscription, with the Message Expiry
Interval it has left, DUP 0 (a first delivery to that client). When no other
member is left, or the message has expired, it stays with the session and is
dropped with it, as before. Outbound copies record the group that chose them
(``Outbound.shared``); copies from plain subscriptions are never passed on.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..protocol.packets import Publish
from .session import Outbound, Session, remaining_expiry


def pass_on_shared(broker: Any, session: Session, now: float) -> None:
    """Give the ending ``session``'s shared-group messages the client did not get to other members.

    Those passed on leave ``session.inflight`` and ``session.queue``; the rest
    stay, for the caller to drop as it drops any. Call it once the session's
    subscriptions are gone, so that the group cannot choose the same member again.
    """
    inflight = session.inflight
    for packet_id, item in list(inflight.items()):
        if item.shared is not None and not item.released and (item.message.qos == 1 or not item.sent) \
                and hand_to_group(broker, item, now):
            del inflight[packet_id]
    queue = session.queue
    if any(item.shared is not None for item in queue):
        kept = [item for item in queue if item.shared is None or not hand_to_group(broker, item, now)]
        queue.clear()
        queue.extend(kept)


def hand_to_group(broker: Any, item: Outbound, now: float) -> bool:
    """Offer ``item``'s message to its shared group as a new message; True if a member took it."""
    group, filter = item.shared
    message = original_message(item)
    remaining = remaining_expiry(message, item.received_at, now)
    if remaining is not None:
        if remaining <= 0:
            return False   # expired [MQTT-3.3.2-5]: dropped with the session
        message = replace(message, properties=replace(message.properties,
                                                      message_expiry_interval=remaining))
    members = local_members(broker, group, filter, message.topic)
    if members is not None and broker.deliver_to_member(group, filter, members, message, now, None):
        return True   # a member here first: no bus hop, and never a hand-over's forwarder elsewhere
    pick_shared = getattr(broker.fabric, "pick_shared", None)
    node = pick_shared(group, filter, False) if pick_shared is not None else None
    if node is not None:
        broker.fabric.forward_shared(node, group, filter, message)
        return True
    return False


def original_message(item: Outbound) -> Publish:
    """The message as it was published: not this member's QoS, retain flag or identifiers.

    That is the routed message every copy ``deliver`` makes keeps in its forms
    (a copy without forms, restored or moved, gives its own). Without the raw
    bytes it came in (they carry the publisher's packet id and flags), DUP 0.
    """
    forms = item.forms
    message = forms.message if forms is not None else item.message
    return replace(message, dup=False, packet_id=None, raw=None)


def local_members(broker: Any, group: str, filter: str, topic: str) -> Any:
    """The members of ``$share/group/filter`` on this worker, or None if it has none."""
    for local_group, local_filter, members in broker.matcher.match(topic).shared:
        if local_group == group and local_filter == filter and members:
            return members
    return None
