"""Delivery: how a message leaves the broker for its subscribers (the hot path).

``route`` matches a topic once (the ``TopicMatcher`` caches topic -> subscribers),
folds the overlapping subscriptions of each client into one delivery (highest
QoS [MQTT-3.3.4-2], every subscription identifier [MQTT-3.3.4-4]), picks one
member per shared group [MQTT-4.8.2], and hands each client its copy:

* QoS 0 goes straight to the connection's write buffer. A subscriber of the
  same protocol version gets the very bytes received (``Publish.raw``) when
  nothing changes on the wire; otherwise each wire form (version, retain flag,
  subscription identifiers) is encoded once and shared (``WireForms``).
* QoS 1/2 goes in flight when the client's receive maximum allows
  [MQTT-4.9.0-2], else into the session's bounded queue; ``drain`` moves the
  queue on as acknowledgements free slots.

``Delivery`` is a base class of ``Broker``; it uses the broker's sessions,
connections, matcher, hooks and counters.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from operator import attrgetter
from time import monotonic
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from ..protocol.codec import encode
from ..protocol.packets import MQTT_5, Puback, Pubcomp, Publish, Pubrec, Pubrel, new_publish
from ..protocol.reader import LARGE_PUBLISH
from ..protocol.topics import topic_matches
from .fabric import LocalFabric
from .session import Outbound, RunOutbound, Session, SubscriptionEntry, remaining_expiry

if TYPE_CHECKING:
    from ..cluster.wire import ReceivedRun
    from .connection import MQTTConnection

log = logging.getLogger("kushi.delivery")


class WireForms:
    """The encodings of one message, computed once and shared by all its subscribers."""

    __slots__ = ("message", "source_version", "_cache")

    def __init__(self, message: Publish, source_version: int | None) -> None:
        self.message = message
        self.source_version = wire_family(source_version) if source_version else None
        self._cache: dict[tuple, Any] = {}

    def qos0_bytes(self, version: int, retain: bool, identifiers: tuple[int, ...],
                   alias: Alias | None = None) -> bytes | memoryview:
        """The QoS 0 PUBLISH for a subscriber of protocol ``version`` (and outbound ``alias``)."""
        family = MQTT_5 if version == MQTT_5 else 4  # wire_family, inlined: the hot path
        if family != MQTT_5:
            identifiers = ()
        key = (family, retain, identifiers, alias)
        data = self._cache.get(key)
        if data is None:
            message = self.message
            raw = message.raw
            if (raw is not None and message.qos == 0 and retain == message.retain
                    and not identifiers and family == self.source_version and alias is None):
                data = raw
            else:
                data = encode(with_alias(self.publish_for(0, retain, identifiers), alias), version)
            self._cache[key] = data
        return data

    def with_packet_id(self, packet: Publish, version: int, packet_id: int,
                       alias: Alias | None = None) -> bytes:
        """``packet`` (from ``publish_for``) encoded with ``packet_id``.

        When the message goes out as it came in (same version and QoS, nothing
        added), the received bytes are reused; otherwise the first subscriber's copy
        is encoded outright and, from the second on, reused. Either way only the
        two packet id bytes (and the first byte's flags) change.
        """
        family = wire_family(version)
        key = (id(packet), family, alias)
        template = self._cache.get(key)
        if template is None:
            message = self.message
            raw = message.raw
            if (raw is not None and packet.qos == message.qos and family == self.source_version
                    and alias is None and packet.properties is message.properties):
                # the received bytes, with our packet id, DUP 0 and the retain flag we chose
                offset = packet_id_offset(raw)
                first = bytes((0x30 | packet.qos << 1 | packet.retain,))
                template = self._cache[key] = (first + raw[1:offset], raw[offset + 2:])
            else:
                data = encode(with_alias(Publish(packet.topic, packet.payload, packet.qos,
                                                 packet.retain, False, packet_id, packet.properties),
                                         alias), version)
                self._cache[key] = data
                return data
        if type(template) is bytes:
            offset = packet_id_offset(template)
            template = self._cache[key] = (template[:offset], template[offset + 2:])
        head, tail = template
        return head + packet_id.to_bytes(2, "big") + tail

    def publish_for(self, qos: int, retain: bool, identifiers: tuple[int, ...]) -> Publish:
        """The PUBLISH (without packet id) a subscriber gets with this QoS, flag and identifiers."""
        key = (qos, retain, identifiers)
        packet = self._cache.get(key)
        if packet is None:
            message = self.message
            properties = message.properties
            if identifiers or properties.subscription_identifiers:
                properties = replace(properties, subscription_identifiers=identifiers)
            packet = new_publish(message.topic, message.payload, qos, retain, False, None,
                                 properties, None)
            self._cache[key] = packet
        return packet


_new = object.__new__


def new_outbound(message: Publish, received_at: float, packet_id: int = 0, released: bool = False,
                 sent: bool = False) -> Outbound:
    """``Outbound(message, received_at, packet_id, released, sent)``, made without calling the class.

    ``write_qos1_run`` makes one per message and subscriber, and in CPython 3.11 the
    call of a class with a Python ``__init__`` costs more than the stores themselves
    (callgrind, profile_hotpath.py S3: 26,250 -> 25,895 instructions per message).
    tests/worker/test_inflight_records.py checks that every field is set as the class sets it.
    """
    record = _new(Outbound)
    record.message = message
    record.received_at = received_at
    record.packet_id = packet_id
    record.released = released
    record.sent = sent
    record.forms = None
    record.shared = None
    return record


Alias = tuple  # (topic alias, whether the topic name goes along to set it up)


def with_alias(packet: Publish, alias: Alias | None) -> Publish:
    """``packet`` with an outbound topic alias: the topic only on the alias's first use."""
    if alias is None:
        return packet
    number, send_topic = alias
    return replace(packet, topic=packet.topic if send_topic else "",
                   properties=replace(packet.properties, topic_alias=number))


def packet_id_offset(data: bytes) -> int:
    """Where the packet id of an encoded QoS 1/2 PUBLISH starts (after the topic name)."""
    index = 1
    while data[index] & 0x80:   # the Remaining Length varint
        index += 1
    index += 1
    return index + 2 + (data[index] << 8 | data[index + 1])


def wire_family(version: int) -> int:
    """MQTT 3.1 and 3.1.1 share one PUBLISH format; MQTT 5 has properties."""
    return MQTT_5 if version == MQTT_5 else 4


def longest_raw(run: Sequence[Publish]) -> int:
    """The size of the longest packet of a run of received messages (``run_targets``)."""
    return max(len(message.raw) for message in run)   # type: ignore[arg-type]


received_longest = attrgetter("longest")
"""The size of the longest packet of a ``ReceivedRun`` (``run_targets``)."""


FOLD_CACHE_SIZE = 65_536
"""Topics whose folded subscriber list is kept (cleared when full, like the matcher's cache)."""

Fold = tuple  # (key, granted QoS, retain as published, identifiers, entry, any no-local)


def fold_subscriptions(subscribers: Iterable[tuple[str, SubscriptionEntry]],
                       publisher_id: str | None) -> list[Fold]:
    """One delivery per client from its matching subscriptions [MQTT-3.3.4-2/3/4].

    Highest QoS, retain-as-published if any says so, every subscription
    identifier. Subscriptions with No Local are left out for ``publisher_id``.
    """
    folded: dict[str, list[Any]] = {}
    for key, entry in subscribers:
        if entry.no_local and key == publisher_id:
            continue
        fold = folded.get(key)
        identifiers = (entry.identifier,) if entry.identifier else ()
        if fold is None:
            folded[key] = [key, entry.qos, entry.retain_as_published, identifiers, entry,
                           entry.no_local]
        else:
            fold[1] = max(fold[1], entry.qos)
            fold[2] = fold[2] or entry.retain_as_published
            fold[3] = fold[3] + identifiers
            fold[5] = fold[5] or entry.no_local
    return [tuple(fold) for fold in folded.values()]


class Delivery:
    """Outbound message handling, mixed into ``Broker``."""

    # provided by Broker
    fabric: Any
    fabric_groups_matching: Callable[[str], Any] | None
    sessions: dict[str, Session]
    connections: dict[str, MQTTConnection]
    _folds: dict[str, tuple[Any, list[Fold]]]   # topic -> (MatchResult, its folds)

    def folds_of(self, topic: str, match: Any) -> list[Fold]:
        """The folded subscriptions of ``match`` (cached per topic until subscriptions change)."""
        cached = self._folds.get(topic)
        if cached is not None and cached[0] is match:
            return cached[1]
        folds = fold_subscriptions(match.subscribers, None)
        if len(self._folds) >= FOLD_CACHE_SIZE:
            self._folds.clear()
        self._folds[topic] = (match, folds)
        return folds

    def route_run(self, run: list[Publish], publisher_id: str | None, now: float, source_version: int,
                  shared_groups: bool = True) -> None:
        """Route messages of one QoS on one topic from one publisher (no DUP, not retained, no properties).

        Each subscriber that takes them as they came (the publisher's wire form and
        QoS, no subscription identifier, outbound alias or size limit in the way,
        and at QoS 1 room in its send window) gets the received bytes: at QoS 0 the
        whole run joined once and shared, at QoS 1 each message with its packet id
        put in, all in one write. If any subscriber needs more, or a shared group
        matches (here or on another worker), every message goes through ``route``.
        ``shared_groups`` is False for a run another worker received (``route``).
        """
        first = run[0]
        topic = first.topic
        match = self.matcher.match(topic)
        qos = first.qos
        targets = None if first.raw is None else self.run_targets(
            topic, qos, len(run), longest_raw, run, match, publisher_id, source_version, shared_groups)
        if targets is None:
            for message in run:
                self.route(message, publisher_id, now, source_version, shared_groups)
            return
        if not targets:
            return
        if not qos:
            self.write_run(targets, first.raw if len(run) == 1 else b"".join([message.raw for message in run]),
                           len(run))
            return
        # QoS 1: one in-flight record per message and subscriber. The record keeps the received
        # message itself (its packet id is the publisher's; ours is the record's). Small packets:
        # the run's received bytes joined once, copied per subscriber, our packet ids written in.
        id_offset = 3 if source_version == MQTT_5 else 2   # the packet id (and v5's empty properties)
        if len(run) == 1 and type(first.raw) is bytes:
            # a lone message (sparse traffic): its position without the run's list, map and loop
            # (callgrind, profile_hotpath.py L3 --buffered: 95,023 -> 89,674 instructions a message)
            self.write_qos1_run(targets, first.raw, [len(first.raw) - len(first.payload) - id_offset],
                                run, new_outbound, now)
            return
        raws = [message.raw for message in run]
        # no view of a large packet among them: one loop for the positions, the rest in C
        # (callgrind, profile_hotpath.py S3: -1.9% per message against three passes)
        if memoryview not in map(type, raws):
            positions = []   # where each message's packet id sits in the joined run
            position = -id_offset
            for raw, message in zip(raws, run):
                position += len(raw)   # this message's end, less id_offset
                positions.append(position - len(message.payload))
            self.write_qos1_run(targets, b"".join(raws), positions, run, new_outbound, now)
            return
        for conn in targets:
            session = conn.session
            inflight = session.inflight
            packet_id = session._last_packet_id
            for message in run:
                packet_id = packet_id % 65535 + 1   # allocate_packet_id, inlined: run_targets
                while packet_id in inflight:        # checked that the window has room
                    packet_id = packet_id % 65535 + 1
                inflight[packet_id] = Outbound(message, now, packet_id, False, True)
                raw = message.raw
                offset = len(raw) - len(message.payload) - id_offset
                # the head rewritten, the rest (the payload) as it came: no copy
                conn.write(bytes(raw[:offset]) + packet_id.to_bytes(2, "big"))
                conn.write(raw[offset + 2:])
            session._last_packet_id = packet_id
        self.messages_sent += len(run) * len(targets)

    def write_qos1_run(self, targets: list[MQTTConnection], data: bytes, positions: list[int],
                       sources: Sequence[Any], record: Callable[..., Outbound], now: float) -> None:
        """Write a QoS 1 run, its packets joined in ``data``, to each of ``targets`` with packet ids
        of the subscriber's own written in at ``positions`` (one per message), in one write.

        Each message gets an in-flight record ``record(source, now, packet id, False, True)``,
        ``source`` its item of ``sources``: the message itself (``new_outbound``, an ``Outbound``),
        or where to read it from (``RunOutbound``). ``run_targets`` has checked that the windows
        have room.
        """
        for conn in targets:
            session = conn.session
            inflight = session.inflight
            packet_id = session._last_packet_id
            copy = bytearray(data)
            for source, offset in zip(sources, positions):
                packet_id = packet_id % 65535 + 1   # allocate_packet_id, inlined
                while packet_id in inflight:
                    packet_id = packet_id % 65535 + 1
                inflight[packet_id] = record(source, now, packet_id, False, True)
                copy[offset] = packet_id >> 8
                copy[offset + 1] = packet_id & 0xFF
            conn.write(copy)
            session._last_packet_id = packet_id
        self.messages_sent += len(positions) * len(targets)

    def route_received_run(self, run: ReceivedRun, now: float) -> None:
        """Route a run another worker received and sent on as one bus item (``kushi.cluster.wire``).

        When every subscriber here takes it as received (``run_targets``), the bytes
        that crossed the bus are written to each, at QoS 0 as they are, at QoS 1 with
        the subscriber's packet ids written in (``write_qos1_run``; packets below
        LARGE_PUBLISH bytes): no message object is made, the in-flight records read
        the run only if a message is asked for (``RunOutbound``). Otherwise its
        messages are read and go through ``route_run``. Shared groups are left out,
        as in ``route``.
        """
        qos = run.qos
        if not qos or run.longest < LARGE_PUBLISH:
            topic = run.topic
            match = self.matcher.match(topic)
            targets = self.run_targets(topic, qos, run.count, received_longest, run, match, None,
                                       run.version, False)
            if targets is not None:
                if not qos:
                    self.write_run(targets, run.data, run.count)
                elif targets:
                    self.write_qos1_run(targets, run.data, run.packet_id_positions(),
                                        [(run, index) for index in range(run.count)], RunOutbound, now)
                return
        self.route_run(run.messages(), None, now, run.version, shared_groups=False)

    def write_run(self, targets: list[MQTTConnection], data: bytes, count: int) -> None:
        """Write ``data``, the ``count`` QoS 0 messages of a run, to each of ``targets``."""
        for conn in targets:
            conn.write(data)
        self.messages_sent += count * len(targets)

    def run_targets(self, topic: str, qos: int, count: int, longest: Callable[[Any], int], run: Any,
                    match: Any, publisher_id: str | None, source_version: int,
                    shared_groups: bool) -> list[MQTTConnection] | None:
        """The connections that take a run as received (see ``route_run``); None if any cannot.

        ``count`` messages of ``qos`` on ``topic``; ``longest(run)``: the size of its longest
        packet, asked only if a connection has a limit (a function and its argument, not a
        closure: making one cost ~700 instructions a run, callgrind).

        None as well if the run may not go as received at all: a shared group matches (here
        or, with ``shared_groups``, on another worker), or a hook chooses subscribers or sees
        the packets sent (asked here, not in a method of its own: a call less a run).
        """
        hooks = self.hooks
        has = hooks.has
        if ((match.shared and shared_groups) or has.on_select_subscribers
                or (shared_groups and self.fabric.__class__ is not LocalFabric
                    and (self.remote_shared_groups(topic, ()) if self.fabric_groups_matching is None
                         else self.fabric_groups_matching(topic)))
                or has.on_packet_encode or has.on_packet_sent or qos and has.on_qos_publish):
            return None
        acl = has.on_acl_check
        connections = self.connections
        v5 = source_version == MQTT_5
        size = 0   # of the longest packet, once a connection has a limit
        targets = []
        cached = self._folds.get(topic)   # folds_of's cache hit, written out (a call less a message)
        folds = cached[1] if cached is not None and cached[0] is match else self.folds_of(topic, match)
        for key, granted, _, identifiers, entry, has_no_local in folds:
            if entry.callback is not None:
                return None
            conn = connections.get(key)
            if conn is None:
                if qos:
                    return None   # queued for a client away: the general path
                continue          # QoS 0 is not queued for it
            if (identifiers or conn.topic_alias_out_maximum or granted < qos
                    or (has_no_local and key == publisher_id) or (conn.protocol_version == MQTT_5) != v5):
                return None
            if qos:
                session = conn.session
                if session.queue or len(session.inflight) + count > session.send_quota_limit:
                    return None
            limit = conn.maximum_packet_size
            if limit:
                if not size:
                    size = longest(run)
                if size > limit:
                    return None
            if acl and not hooks.on_acl_check(conn, topic, False):
                continue
            targets.append(conn)
        return targets

    def route(self, message: Publish, publisher_id: str | None, now: float,
              source_version: int | None = None, shared_groups: bool = True) -> None:
        """Deliver ``message`` to every local subscription matching its topic.

        Each matching shared group gets it once, across all workers [MQTT-4.8.2]:
        the fabric picks the worker, that worker the member (``deliver_to_member``).
        ``shared_groups`` is False for a message another worker received: that
        worker chose the groups' members already.
        """
        topic = message.topic
        match = self.matcher.match(topic)
        if shared_groups and self.fabric.__class__ is not LocalFabric:
            self.share_with_other_workers(message, match.shared)
        folds = self.folds_of(topic, match)
        if not folds and not (shared_groups and match.shared):
            return
        hooks = self.hooks
        if hooks.has.on_select_subscribers:
            selected = hooks.on_select_subscribers({fold[0]: fold[4] for fold in folds}, message)
            folds = [fold for fold in folds if fold[0] in selected]
        may_read = self.may_read if hooks.has.on_acl_check else None
        forms = WireForms(message, source_version)
        sessions = self.sessions
        qos = message.qos
        retain = message.retain
        for key, granted, as_published, identifiers, entry, has_no_local in folds:
            if has_no_local and key == publisher_id:  # [MQTT-3.8.3-3]
                mine = [(k, e) for k, e in match.subscribers if k == key]
                refold = fold_subscriptions(mine, key)
                if not refold:
                    continue
                key, granted, as_published, identifiers, entry, _ = refold[0]
            if entry.callback is not None:
                self.call_inline(entry, message)
                continue
            session = sessions.get(key)
            if session is not None and (may_read is None or may_read(session, message)):
                self.deliver(session, message, granted if granted < qos else qos,
                             retain and as_published, identifiers, now, forms)
        if not shared_groups:
            return
        pick_shared = getattr(self.fabric, "pick_shared", None)
        for group, filter, members in match.shared:
            node = pick_shared(group, filter, True) if pick_shared is not None else None
            if node is None:
                self.deliver_to_member(group, filter, members, message, now, forms)
            else:
                self.fabric.forward_shared(node, group, filter, message)

    def share_with_other_workers(self, message: Publish, local_groups: Iterable[tuple]) -> None:
        """Send ``message`` on for the shared groups whose members are all on other workers.

        The fabric knows which workers have members of which group; it picks the
        worker whose turn it is, and that worker picks one of its members.
        """
        pick_shared = getattr(self.fabric, "pick_shared", None)
        if pick_shared is None:
            return
        for group, filter in self.remote_shared_groups(message.topic, local_groups):
            node = pick_shared(group, filter, False)
            if node is not None:
                self.fabric.forward_shared(node, group, filter, message)

    def remote_shared_groups(self, topic: str, local_groups: Iterable[tuple]) -> list[tuple[str, str]]:
        """(group, filter) of the shared groups matching ``topic`` with no member on this worker.

        The fabric's ``shared_groups_matching(topic)`` answers if it has one; else
        they are read from its table of the other workers' interest, where
        "$share/g/f" of node n is the filter f under the key "n\\0g".
        """
        groups_matching = self.fabric_groups_matching
        if groups_matching is not None:
            groups = groups_matching(topic)
        else:
            interest = getattr(self.fabric, "interest", None)
            groups = shared_groups_in(interest, topic) if interest is not None else ()
        if not groups:
            return []
        local = {(group, filter) for group, filter, *_ in local_groups}
        return sorted(group for group in groups if group not in local)

    def deliver_to_member(self, group: str, filter: str, members: Any, message: Publish,
                          now: float, forms: WireForms | None) -> bool:
        """Give ``message`` to one member of a shared group, connected ones first; True if one took it."""
        member = (self.matcher.pick(group, filter, members, self.is_available)
                  or self.matcher.pick(group, filter, members))
        if member is None:
            return False
        key, entry = member
        if entry.callback is not None:
            self.call_inline(entry, message)
            return True
        session = self.sessions.get(key)
        if session is None or (self.hooks.has.on_acl_check and not self.may_read(session, message)):
            return False
        self.deliver(session, message, min(message.qos, entry.qos),
                     message.retain and entry.retain_as_published,
                     (entry.identifier,) if entry.identifier else (), now, forms, (group, filter))
        return True

    def deliver_shared(self, group: str, filter: str, message: Publish) -> bool:
        """A message another worker chose this one for: one local member of the group gets it.

        False if the group has no member here (any more).
        """
        for local_group, local_filter, members in self.matcher.match(message.topic).shared:
            if local_group == group and local_filter == filter:
                return self.deliver_to_member(group, filter, members, message, monotonic(), None)
        return False

    def may_read(self, session: Session, message: Publish) -> bool:
        """The ACL hooks' verdict on this client receiving this topic (checked per delivery)."""
        return self.hooks.on_acl_check(session.client, message.topic, False)

    def is_available(self, key: str) -> bool:
        """Is this shared-group member connected (or the inline client)?"""
        return key in self.connections or key.startswith("\x00")

    def deliver(self, session: Session, message: Publish, qos: int, retain: bool,
                identifiers: tuple[int, ...], now: float, forms: WireForms | None,
                shared: tuple[str, str] | None = None) -> None:
        """Give one client its copy: written now (QoS 0), in flight, or queued.

        ``shared``: the (group, filter) that chose this client, kept on a QoS 1/2 copy so
        that the end of its session can pass it on (``kushi.worker.shared_pass_on``)."""
        if forms is None:
            forms = WireForms(message, None)
        conn = self.connections.get(session.client_id)
        if qos == 0:
            if conn is None:
                return  # QoS 0 is not queued for an absent client
            alias = conn.outbound_alias(message.topic) if conn.topic_alias_out_maximum else None
            hooks = self.hooks
            if hooks.has.on_packet_encode or hooks.has.on_packet_sent:
                packet = with_alias(forms.publish_for(0, retain, identifiers), alias)
                if hooks.has.on_packet_encode:
                    packet = hooks.on_packet_encode(conn, packet)
                self.put_publish(conn, message.topic, alias, packet, encode(packet, conn.protocol_version))
            else:
                data = forms.qos0_bytes(conn.protocol_version, retain, identifiers, alias)
                self.put_publish(conn, message.topic, alias, message, data)
            return
        item = Outbound(forms.publish_for(qos, retain, identifiers), now, forms=forms, shared=shared)
        if conn is not None and not session.queue and session.has_send_quota():
            self.send_inflight(session, conn, item, now)
            return
        dropped = session.enqueue(item)
        if dropped is not None:
            self.count_dropped(conn or self.server_info, dropped.message)

    def send_inflight(self, session: Session, conn: MQTTConnection, item: Outbound, now: float) -> None:
        """Send a QoS 1/2 message with a fresh packet id, unless it has expired [MQTT-3.3.2-5]."""
        remaining = remaining_expiry(item.message, item.received_at, now)
        if remaining is not None and remaining <= 0:
            self.count_dropped(conn, item.message)
            return
        if not session.start_inflight(item):
            if self.hooks.has.on_packet_id_exhausted:
                self.hooks.on_packet_id_exhausted(conn, item.message)
            self.count_dropped(conn, item.message)
            return
        self.write_publish(session, conn, item, remaining, False)

    def write_publish(self, session: Session, conn: MQTTConnection, item: Outbound,
                      remaining: int | None, dup: bool) -> None:
        """Encode an in-flight message for ``conn`` and queue the bytes."""
        message = item.message
        properties = message.properties
        hooks = self.hooks
        encode_hook = hooks.has.on_packet_encode
        packet = message
        alias = conn.outbound_alias(message.topic) if conn.topic_alias_out_maximum else None
        if (not dup and not encode_hook and item.forms is not None
                and (remaining is None or remaining == properties.message_expiry_interval)):
            data = item.forms.with_packet_id(message, conn.protocol_version, item.packet_id, alias)
        else:
            if remaining is not None and remaining != properties.message_expiry_interval:
                properties = replace(properties, message_expiry_interval=max(remaining, 1))  # [MQTT-3.3.2-6]
            packet = with_alias(replace(message, packet_id=item.packet_id, dup=dup,
                                        properties=properties), alias)
            if encode_hook:
                packet = hooks.on_packet_encode(conn, packet)
            data = encode(packet, conn.protocol_version)
        if not self.put_publish(conn, message.topic, alias, packet, data):
            session.inflight.pop(item.packet_id, None)  # as if delivered [MQTT-3.1.2-25]
            return
        item.sent = True
        if hooks.has.on_qos_publish:
            if packet is message:
                packet = replace(message, packet_id=item.packet_id)
            hooks.on_qos_publish(conn, packet, item.received_at, int(dup))

    def put_publish(self, conn: MQTTConnection, topic: str, alias: Alias | None,
                    packet: Publish, data: bytes | memoryview) -> bool:
        """Write an encoded PUBLISH, unless it is larger than the client accepts: then it is
        dropped for this client only [MQTT-3.1.2-24/25]. True if written."""
        if conn.maximum_packet_size and len(data) > conn.maximum_packet_size:
            conn.alias_not_sent(topic, alias)
            self.count_dropped(conn, packet)
            return False
        conn.write(data)
        self.messages_sent += 1
        if self.hooks.has.on_packet_sent:
            self.hooks.on_packet_sent(conn, packet, data)
        return True

    def send_ack(self, conn: MQTTConnection, kind: type, packet_id: int, reason_code: int) -> None:
        """Send PUBACK/PUBREC/PUBREL/PUBCOMP; as ready-made bytes unless a hook watches packets."""
        hooks = self.hooks
        if hooks.has.on_packet_encode or hooks.has.on_packet_sent:
            conn.send(kind(packet_id, reason_code))
        else:
            conn.write(ack_bytes(kind, packet_id, reason_code))

    def drain(self, session: Session, conn: MQTTConnection, now: float) -> None:
        """Move queued messages in flight while the client's receive maximum allows."""
        queue = session.queue
        while queue and session.has_send_quota():
            self.send_inflight(session, conn, queue.popleft(), now)

    def resume(self, session: Session, conn: MQTTConnection, now: float) -> None:
        """A session resumed: resend what was in flight, DUP set [MQTT-4.4.0-1], then the queue."""
        for item in list(session.inflight.values()):
            if item.released:
                self.send_ack(conn, Pubrel, item.packet_id, 0)
            else:
                remaining = remaining_expiry(item.message, item.received_at, now)
                self.write_publish(session, conn, item, remaining, item.sent)
        self.drain(session, conn, now)

    def count_dropped(self, client: Any, message: Publish) -> None:
        """A message was dropped for one client (queue full, too large, expired)."""
        self.messages_dropped += 1
        if self.hooks.has.on_publish_dropped:
            self.hooks.on_publish_dropped(client, message)

    def call_inline(self, entry: SubscriptionEntry, message: Publish) -> None:
        """Hand a message to an inline-client callback (sync, or a coroutine run as a task)."""
        try:
            result = entry.callback(message.topic, bytes(message.payload), message)
            if asyncio.iscoroutine(result):
                self.spawn(result)
        except Exception:
            log.exception("inline subscription callback for %r failed", entry.filter)


def shared_groups_in(interest: Any, topic: str) -> set[tuple[str, str]]:
    """(group, filter) of the "node\\0group" keys of a cluster interest trie matching ``topic``."""
    groups = set()
    for key, _ in interest.match(topic):
        _, separator, group = key.partition("\x00")
        if separator:
            groups.update((group, filter) for filter in interest.filters_of(key)
                          if topic_matches(filter, topic))
    return groups


ACK_FIRST_BYTE = {Puback: 0x40, Pubrec: 0x50, Pubrel: 0x62, Pubcomp: 0x70}
ACK_HEAD = {kind: bytes((first_byte, 2)) for kind, first_byte in ACK_FIRST_BYTE.items()}


def ack_bytes(kind: type, packet_id: int, reason_code: int) -> bytes:
    """PUBACK/PUBREC/PUBREL/PUBCOMP without properties, encoded directly (the hot path)."""
    if not reason_code:
        return ACK_HEAD[kind] + packet_id.to_bytes(2, "big")
    return bytes((ACK_FIRST_BYTE[kind], 3, packet_id >> 8, packet_id & 0xFF, reason_code))
