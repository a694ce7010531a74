"""Subscriptions: SUBSCRIBE and UNSUBSCRIBE (a base class of ``Broker``).

Each filter gets its own reason code [MQTT-3.8.4-6]: the granted QoS, or why
not (invalid filter, not authorized, shared / wildcard / identifiers not
available). A subscription replaces one with the same filter [MQTT-3.8.4-3];
retained messages follow the SUBACK as retain handling says. The count of
local subscriptions per filter tells the cluster fabric when a filter gains
its first subscriber here or loses its last. A SUBACK waits until every
worker knows this one's interest in its filters (a cluster fabric's
``known_everywhere``: a barrier after new interest, or the one under way for
a filter whose first subscriber is still waiting), so a publish on any worker
after the SUBACK reaches the subscriber. The inline client subscribes through
the same path, with a callback instead of a connection.

The retained messages of a subscription that waited are looked up then, not
when it was made: another worker that set one before it heard of the new
interest did not forward it, and its gossip may come after the SUBSCRIBE; the
barrier proves it has come (``kushi.cluster.fabric``). A retained message
routed live to the subscription meanwhile (its worker knew the interest) gets
no retained copy of its topic after it (``watch_live_retained``): the message
comes once, and nothing older follows it. Without a wait (one process, or
interest known everywhere) the lookup is at once, as before.

While a SUBACK waits, the connection's later packets wait behind it
(``broker.held``; its reading is paused), so every answer (UNSUBACK,
PINGRESP, PUBACK...) keeps the order of the packets it answers, as
[MQTT-4.6.0-2/3/4] asks of acknowledgements; other connections go on. A
worker that hangs without leaving the bus would hold the SUBACK forever: after
``SUBACK_WAIT_AT_MOST`` seconds it is sent anyway, logged and counted
(``broker.suback_wait_timeouts``); a publish on the hung worker may then miss
the new subscriber until it catches up.
"""

from __future__ import annotations

import asyncio
import logging
from time import monotonic
from typing import TYPE_CHECKING, Any, Callable

from ..errors import KushiError, ProtocolError
from ..protocol.packets import MQTT_5, Publish, Suback, Subscribe, Subscription, Unsuback, Unsubscribe
from ..protocol.topics import parse_shared, validate_topic_filter
from .fabric import NOTHING_LIVE, LiveTopics
from .session import Session, SubscriptionEntry

if TYPE_CHECKING:
    from .connection import MQTTConnection

NO_SUBSCRIPTION_EXISTED = 0x11
SUBACK_WAIT_AT_MOST = 5.0   # seconds a SUBACK waits for every worker to know the new interest

log = logging.getLogger("kushi.broker")


class Subscriptions:
    """Subscription handling, mixed into ``Broker``."""

    def handle_subscribe(self, conn: MQTTConnection, packet: Subscribe, now: float) -> None:
        """SUBSCRIBE: one reason code per filter [MQTT-3.8.4-6], then retained messages."""
        held = self.held.get(conn)
        if held is not None:   # a path that did not hold the rest (hold_rest): in turn, still
            held.append(packet)
            return
        hooks = self.hooks
        if hooks.provides("on_subscribe"):
            packet = hooks.on_subscribe(conn, packet)
        identifiers = packet.properties.subscription_identifiers
        identifier = identifiers[0] if identifiers else None
        reason_codes = []
        wanted: list[tuple[SubscriptionEntry, str]] = []
        for subscription in packet.subscriptions:
            reason_codes.append(self._subscribe_one(conn, subscription, identifier, wanted))
        known = self._interest_known_everywhere([each.filter for each in packet.subscriptions])
        if known is None:
            self._acknowledge_subscribe(conn, packet, reason_codes, self._retained_for(wanted, now), now)
        else:
            # other workers route to this one only once they know of the new interest: the
            # SUBACK waits until every worker has it, so a publish made anywhere after the
            # client has its SUBACK reaches the client (as with one process); the retained
            # messages are looked up then, when the other workers' earlier gossip is in
            live = self._watch_live_retained()
            self._hold_until(conn, known, lambda now: self._acknowledge_subscribe(
                conn, packet, reason_codes, self._retained_for(wanted, now, live), now), live)

    def _hold_until(self, conn: MQTTConnection, known: asyncio.Future[None],
                    acknowledge: Callable[[float], None], live: LiveTopics) -> None:
        """Send the SUBACK (``acknowledge(now)``) when ``known`` is done, or after
        SUBACK_WAIT_AT_MOST; the connection's later packets wait until then (``hold_rest``).
        ``live`` (what ``_watch_live_retained`` gave) is closed then, answered or not."""
        self.held[conn] = []
        conn.hold_input()

        def release(timed_out: bool) -> None:
            rest = self.held.pop(conn, None)
            if rest is None:
                return   # released already (``known``, or the timer)
            timer.cancel()
            try:
                if self.connections.get(conn.client_id) is not conn:
                    return   # the connection ended meanwhile: nothing to answer
                if timed_out:
                    self.suback_wait_timeouts += 1
                    log.warning("SUBACK to %r sent after %.0f s without every worker's answer",
                                conn.client_id, SUBACK_WAIT_AT_MOST)
                now = monotonic()
                acknowledge(now)
            finally:
                live.close()
            try:   # as MQTTConnection.data_received does for a read
                if rest:
                    self.handle_packets(conn, rest, now)
                if conn not in self.held:   # not behind another SUBACK now
                    conn.release_input()
            except KushiError as error:
                conn.fail(error)
            except Exception:
                log.exception("internal error on the connection of %r", conn.client_id)
                conn.fail(KushiError("internal error", reason_code=0x83))

        timer = self.loop.call_later(SUBACK_WAIT_AT_MOST, release, True)
        known.add_done_callback(lambda done: release(False))

    def hold_rest(self, conn: MQTTConnection, packets: list[Any], handled: Any) -> None:
        """Keep the packets of ``packets`` after ``handled`` until ``conn``'s SUBACK is sent."""
        for index, packet in enumerate(packets):
            if packet is handled:
                self.held[conn].extend(packets[index + 1:])
                return

    def _acknowledge_subscribe(self, conn: MQTTConnection, packet: Subscribe, reason_codes: list[int],
                               retained: list[tuple[SubscriptionEntry, list[Publish]]],
                               now: float) -> None:
        """The SUBACK, then the retained messages the subscriptions asked for [MQTT-3.3.1-9]."""
        hooks = self.hooks
        conn.send(Suback(packet.packet_id, tuple(reason_codes)))
        session = conn.session
        for entry, messages in retained:
            for message in messages:
                self.deliver(session, message, min(message.qos, entry.qos), True,
                             (entry.identifier,) if entry.identifier else (), now, None)
                if hooks.provides("on_retain_published"):
                    hooks.on_retain_published(conn, message)
        if hooks.provides("on_subscribed"):
            hooks.on_subscribed(conn, packet, reason_codes)

    def _subscribe_one(self, conn: MQTTConnection, subscription: Subscription,
                       identifier: int | None, wanted: list[tuple[SubscriptionEntry, str]]) -> int:
        """Subscribe to one filter; return its SUBACK reason code (granted QoS or failure).

        A subscription that gets the retained messages of its filter (not shared; retain
        handling 0, or 1 and new [MQTT-3.3.1-9/10/11]) is added to ``wanted`` with the filter.
        """
        options = self.options
        v5 = conn.protocol_version == MQTT_5
        filter = subscription.filter
        try:
            validate_topic_filter(filter)
            group, topic_filter = parse_shared(filter)
        except KushiError:
            return 0x8F if v5 else 0x80
        failure = None
        if group is not None:
            if subscription.no_local:
                raise ProtocolError("no local on a shared subscription")  # [MQTT-3.8.3-4]
            if not options.shared_subscriptions_available:
                failure = 0x9E
        if not options.wildcard_subscriptions_available and ("+" in topic_filter or "#" in topic_filter):
            failure = 0xA2
        if identifier is not None and not options.subscription_identifiers_available:
            failure = 0xA1
        hooks = self.hooks
        if failure is None and hooks.provides("on_acl_check") \
                and not hooks.on_acl_check(conn, filter, False):
            failure = 0x87
        if failure is not None:
            return failure if v5 else 0x80
        granted = min(subscription.qos, options.maximum_qos)
        entry = SubscriptionEntry(conn.client_id, filter, granted, subscription.no_local,
                                  subscription.retain_as_published, subscription.retain_handling,
                                  identifier)
        is_new = self.add_subscription(conn.session, entry)
        handling = subscription.retain_handling
        if group is None and (handling == 0 or (handling == 1 and is_new)):
            wanted.append((entry, topic_filter))
        return granted

    def _retained_for(self, wanted: list[tuple[SubscriptionEntry, str]], now: float,
                      live: LiveTopics = NOTHING_LIVE) -> list[tuple[SubscriptionEntry, list[Publish]]]:
        """The retained messages each subscription of ``wanted`` gets, looked up at ``now``:
        none of a topic routed live to it since it was made (``live``, when it waited)."""
        retained = []
        for entry, topic_filter in wanted:
            messages = self.retained_store.match(topic_filter, now)
            if live.topics:
                messages = [message for message in messages if message.topic not in live.topics]
            if messages:
                retained.append((entry, messages))
        return retained

    def _interest_known_everywhere(self, filters: list[str]) -> asyncio.Future[None] | None:
        """A future done when every worker knows this one's interest in ``filters`` (the
        fabric's ``known_everywhere``); None: nothing to wait for (one process, or known)."""
        known = getattr(self.fabric, "known_everywhere", None)
        return known(filters) if known is not None else None

    def _watch_live_retained(self) -> LiveTopics:
        """The fabric's note of the topics of retained messages routed live here from now on;
        an empty one if it keeps none."""
        watch = getattr(self.fabric, "watch_live_retained", None)
        return watch() if watch is not None else NOTHING_LIVE

    def add_subscription(self, session: Session | None, entry: SubscriptionEntry) -> bool:
        """Add or replace a subscription [MQTT-3.8.4-3]; True if it is new."""
        filter = entry.filter
        if session is not None:
            session.subscriptions[filter] = entry
        is_new = self.matcher.add(filter, entry.client_id, entry)
        if is_new:
            count = self.interest.get(filter, 0)
            self.interest[filter] = count + 1
            if count == 0:
                self.fabric.interest_added(filter)
        return is_new

    def remove_subscription(self, session: Session | None, client_id: str, filter: str) -> bool:
        """Remove one subscription; True if it existed [MQTT-3.10.4-1]."""
        if session is not None:
            session.subscriptions.pop(filter, None)
        removed = self.matcher.remove(filter, client_id)
        if removed:
            self._interest_down(filter)
        return removed

    def _interest_down(self, filter: str) -> None:
        count = self.interest.get(filter, 0) - 1
        if count > 0:
            self.interest[filter] = count
        else:
            self.interest.pop(filter, None)
            self.fabric.interest_removed(filter)

    def handle_unsubscribe(self, conn: MQTTConnection, packet: Unsubscribe) -> None:
        """UNSUBSCRIBE: always answered by UNSUBACK [MQTT-3.10.4-4/5]."""
        hooks = self.hooks
        if hooks.provides("on_unsubscribe"):
            packet = hooks.on_unsubscribe(conn, packet)
        session = conn.session
        reason_codes = tuple(
            0 if self.remove_subscription(session, conn.client_id, filter) else NO_SUBSCRIPTION_EXISTED
            for filter in packet.filters
        )
        conn.send(Unsuback(packet.packet_id, reason_codes if conn.protocol_version == MQTT_5 else ()))
        if hooks.provides("on_unsubscribed"):
            hooks.on_unsubscribed(conn, packet)

    # ---- inline client ----------------------------------------------------------------
    async def inline_subscribe(self, filter: str, subscription_id: int,
                               callback: Callable[..., Any]) -> None:
        """Subscribe the server's own client; matching retained messages are handed over before
        this returns: at once, or (new interest, several workers) when every worker knows of
        it, or after SUBACK_WAIT_AT_MOST, as a client's SUBACK would be."""
        validate_topic_filter(filter)
        entry = SubscriptionEntry(inline_key(subscription_id), filter, 2, identifier=subscription_id,
                                  callback=callback)
        self.add_subscription(None, entry)
        group, topic_filter = parse_shared(filter)
        live: LiveTopics = NOTHING_LIVE
        known = self._interest_known_everywhere([filter])
        if known is not None:   # a cluster fabric: it has the wait too
            live = await self.fabric.live_retained_until(known, f"the inline subscription to {filter!r}")
        wanted = [(entry, topic_filter)] if group is None else []
        for _, messages in self._retained_for(wanted, monotonic(), live):
            for message in messages:
                self.call_inline(entry, message)

    def inline_unsubscribe(self, filter: str, subscription_id: int) -> bool:
        return self.remove_subscription(None, inline_key(subscription_id), filter)


def inline_key(subscription_id: int) -> str:
    """The subscriber key of an inline-client subscription (U+0000 is never in a client id)."""
    return f"\x00inline:{subscription_id}"
