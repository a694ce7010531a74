"""AsyncFilters: coroutine message-path filters, awaited without touching the sync hot path.

The broker's packet and delivery code is synchronous: it calls ``on_acl_check``,
``on_publish`` and the other message-path filters in the middle of its work and
cannot await. When a coroutine is registered for one of them, the ``HookManager``
becomes *awaiting* and ``install`` puts this object in front of the broker, by
replacing four methods on the broker instance (a broker without coroutine filters
is never touched, so it pays nothing, not even a flag test). From then on every
message-path filter, plain or coroutine, is resolved here, ahead, in the order
the hooks were added, and the broker's synchronous code reads the answers:

* ``handle_packets`` (a read of a connected client): the packets go into the
  connection's queue, and one task per connection takes them **one at a time, in
  order**: it computes the packet's filters ahead (``on_packet_read``; for a
  PUBLISH the write ACL and ``on_publish``; for a SUBSCRIBE ``on_subscribe`` and
  the ACL of each filter; for an UNSUBSCRIBE ``on_unsubscribe``), awaiting the
  coroutines, then hands the packet to the broker's own ``handle_packet`` inside
  ``hooks.answering(...)``, where those events return what was computed. So acks
  go out in order and every rule of ``handle_packet`` applies unchanged. While
  packets wait, the connection's reading is paused (``hold_input``): a client
  cannot make the broker buffer more than one read of its packets. A SUBACK that
  waits for the cluster's barrier keeps the rest behind it (``broker.held``), as
  without coroutines.
* ``route`` (a message for the local subscribers, from a local publisher, the
  inline client, another worker or a will): the message goes into the FIFO of its
  source (``source_of``: its publisher, the inline client, or, for a message from
  another worker, whose publisher is not known here, its topic), and one task per
  busy FIFO takes them **in order**. The subscribers are those matched when the
  message was routed (as the synchronous broker would); the task awaits
  ``on_select_subscribers`` over them and the read ACL of each selected one
  (concurrently), and of the members of matching shared groups, then calls the
  broker's own ``route`` with the answers. Messages on one topic waiting together
  share their ACL answers (``_run_at_head``), as ``Delivery.route_run`` shares
  them for a run. So a publisher's messages reach each
  subscriber in the order sent, on every topic (ARCHITECTURE.md, invariant 1, asks
  it per topic), while a slow ACL for one publisher does not hold the others
  back. A subscriber with no answer (subscribed while the message waited) does
  not get it: nothing is delivered that an ACL did not allow. At
  ``DELIVERY_BACKLOG`` waiting messages, the connections' pipelines stop taking
  packets until the backlog shrinks.
* ``deliver_shared`` (another worker chose this one for a shared group): queued
  with the messages of its topic from other workers; the members' read ACL is
  awaited first.
* ``publish_will``: the will is taken from the session at once (as before),
  ``on_will`` and the will's write ACL are awaited in a task, then the broker's
  own ``publish_will`` publishes it.

``settled()`` is done once what is queued at the call has been routed: a session
hand-over between workers waits for it (kushi.cluster.handover).

When none of ``on_acl_check`` and ``on_select_subscribers`` is provided, ``route``
and ``deliver_shared`` go straight to the broker (nothing to await at delivery),
unless messages of the same source are still queued.

What is not awaited: ``on_packet_encode`` (refused as a coroutine, docs/hooks.md).
The bus is not slowed down by the delivery backlog (it cannot be paused); the
publishers' own pipelines are, and the inline client may wait for ``room()``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass, replace
from time import monotonic
from typing import TYPE_CHECKING, Any

from ..errors import KushiError
from ..protocol.packets import MQTT_5, PacketType, Publish, Will
from ..protocol.topics import parse_shared, validate_topic_filter, validate_topic_name
from .connection import State

if TYPE_CHECKING:
    from ..hooks.manager import HookManager
    from .broker import Broker
    from .connection import MQTTConnection
    from .session import Session

log = logging.getLogger("kushi.async_filters")

DELIVERY_BACKLOG = 1000
"""Messages waiting for delivery-time filters above which the connections stop taking packets."""

SHARED_RECHECKS = 3
"""How often the members of a shared group are looked at again after awaiting their ACL."""


def install(broker: Broker) -> None:
    """Put ``AsyncFilters`` in front of ``broker`` once its hooks are awaiting (now or later)."""
    broker.hooks.when_awaiting(lambda: AsyncFilters(broker))


@dataclass
class _WillOf:
    """What the broker's ``publish_will`` reads of a session, for a will taken from it already."""

    client_id: str
    will: Will | None
    will_due_at: float | None = None


class AsyncFilters:
    """The ordered async pipelines of one broker (see the module docstring)."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.hooks: HookManager = broker.hooks
        # the broker's own methods, called with the answers prepared
        self._handle_packet = broker.handle_packet
        self._route = broker.route
        self._deliver_shared = broker.deliver_shared
        self._publish_will = broker.publish_will
        self._inbound: dict[MQTTConnection, deque[Any]] = {}
        self._sources: dict[tuple[str, ...], deque[tuple[Any, ...]]] = {}
        self.backlog = 0
        self._room = asyncio.Event()
        self._room.set()
        self._leaving: dict[int, list[asyncio.Future[None]]] = {}   # id(queued item) -> settled()
        self._wills: set[asyncio.Future[None]] = set()              # each done once its will is routed
        broker.handle_packets = self.handle_packets      # type: ignore[method-assign]
        broker.route = self.route                        # type: ignore[method-assign]
        broker.deliver_shared = self.deliver_shared      # type: ignore[method-assign]
        broker.publish_will = self.publish_will          # type: ignore[method-assign]
        broker.async_filters = self

    async def room(self) -> None:
        """Wait while ``DELIVERY_BACKLOG`` messages wait for their delivery-time filters (the
        inline client's ``publish`` awaits it, as a connection's pipeline does)."""
        if self.backlog >= DELIVERY_BACKLOG:
            await self._room.wait()

    def settled(self) -> asyncio.Future[None]:
        """A future done once every message queued here before the call has been routed, and
        every will being resolved then has gone out; messages queued later do not delay it.

        A session hand-over between workers waits for it (kushi.cluster.handover): its bus
        barrier proves that the messages arrived here, this that they went where they go.
        """
        waits = [self._leaves(queue[-1]) for queue in self._sources.values() if queue]
        waits += self._wills
        if waits:
            return asyncio.gather(*waits)
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    def _leaves(self, item: tuple[Any, ...]) -> asyncio.Future[None]:
        """A future done when ``item`` has left its queue (handled, or dropped at close)."""
        future = asyncio.get_running_loop().create_future()
        self._leaving.setdefault(id(item), []).append(future)
        return future

    def _left(self, item: tuple[Any, ...]) -> None:
        for future in self._leaving.pop(id(item), ()):
            if not future.done():
                future.set_result(None)

    # ---- a connection's packets ---------------------------------------------------------
    def handle_packets(self, conn: MQTTConnection, packets: list[Any], now: float) -> None:
        """Queue a read's packets for the connection's task; stop reading while they wait."""
        queue = self._inbound.get(conn)
        if queue is None:
            queue = self._inbound[conn] = deque()
            self.broker.spawn(self._take_packets(conn, queue))
        queue.extend(packets)
        try:  # a bad packet behind good ones fails the connection after them, in its turn
            while more := conn.reader.read_packets():
                queue.extend(more)
        except KushiError as error:
            queue.append(error)
        conn.hold_input()

    async def _take_packets(self, conn: MQTTConnection, queue: deque[Any]) -> None:
        held = self.broker.held
        try:
            while queue and conn.state is State.CONNECTED:
                packet = queue.popleft()
                if isinstance(packet, KushiError):
                    conn.fail(packet)
                    break
                answers = await self._resolve_packet(conn, packet)
                if conn.state is not State.CONNECTED:
                    break
                now = monotonic()
                conn.last_received = now   # keep alive: it was our hooks, not the client, that waited
                with self.hooks.answering(answers):
                    self._handle_packet(conn, packet, now)
                if conn in held:
                    # its SUBACK waits for the cluster (Subscriptions._hold_until): the rest waits
                    # behind it, reading stays paused, and the broker feeds the rest back here
                    held[conn].extend(queue)
                    queue.clear()
                    return
                await self.room()
        except KushiError as error:
            conn.fail(error)
        except Exception:  # as data_received: this connection ends, the worker goes on
            log.exception("internal error on the connection of %r", conn.client_id)
            conn.fail(KushiError("internal error", reason_code=0x83))
        finally:
            del self._inbound[conn]
        if conn.state is State.CONNECTED:
            conn.release_input()

    async def _resolve_packet(self, conn: MQTTConnection, packet: Any) -> dict[Any, Any]:
        """The answers of the filters ``handle_packet`` will call for ``packet``, in its order."""
        answers: dict[Any, Any] = {}
        hooks = self.hooks
        if hooks.provides("on_packet_read"):
            packet = await self._chain(answers, "on_packet_read", conn, packet)
        kind = getattr(packet, "type", None)
        if kind is PacketType.PUBLISH:
            await self._resolve_publish(answers, conn, packet)
        elif kind is PacketType.SUBSCRIBE:
            if hooks.provides("on_subscribe"):
                packet = await self._chain(answers, "on_subscribe", conn, packet)
            if packet is not None and hooks.provides("on_acl_check"):
                identifiers = packet.properties.subscription_identifiers
                for subscription in packet.subscriptions:
                    if (self._subscription_reaches_acl(conn, subscription, bool(identifiers))
                            and await self._acl(answers, conn, subscription.filter, False,
                                                inbound=True) is None):
                        break
        elif kind is PacketType.UNSUBSCRIBE and hooks.provides("on_unsubscribe"):
            await self._chain(answers, "on_unsubscribe", conn, packet)
        return answers

    async def _chain(self, answers: dict[Any, Any], event: str, client: Any, value: Any) -> Any:
        """Resolve one chained filter into ``answers``; None if it raised (raised again in turn)."""
        try:
            result = await self.hooks.resolve_chain(event, client, value)
        except Exception as error:
            answers[event] = (value, error)
            return None
        answers[event] = (value, result)
        return result

    async def _acl(self, answers: dict[Any, Any], client: Any, topic: str, write: bool,
                   inbound: bool = False) -> bool | None:
        """Resolve one ACL check into ``answers``: True or False.

        If a hook raises: for a client's own packet (``inbound``) the error is the answer,
        raised again where the broker asks, as a plain hook's would be (the connection
        ends), and None is returned so that nothing after it is resolved; for a delivery
        or a will, there is no packet to fail: it is logged and refused.
        """
        key = self.hooks.acl_key(client, topic, write)
        try:
            allowed = await self.hooks.resolve_acl(client, topic, write)
        except Exception as error:
            if inbound:
                answers[key] = error
                return None
            log.exception("on_acl_check failed for %r on %r: refused",
                          getattr(client, "client_id", None), topic)
            allowed = False
        answers[key] = allowed
        return allowed

    async def _resolve_publish(self, answers: dict[Any, Any], conn: MQTTConnection,
                               packet: Publish | None) -> None:
        """The write ACL, then ``on_publish`` if it allowed, of the PUBLISH as the broker's
        ``handle_publish`` will see them: not for one it refuses or answers before its hooks."""
        packet = self._publish_reaching_hooks(conn, packet) if packet is not None else None
        if packet is None:
            return
        hooks = self.hooks
        if hooks.provides("on_acl_check") and not await self._acl(answers, conn, packet.topic, True,
                                                                  inbound=True):
            return
        if hooks.provides("on_publish"):
            await self._chain(answers, "on_publish", conn, packet)

    def _publish_reaching_hooks(self, conn: MQTTConnection, packet: Publish) -> Publish | None:
        """``packet`` as ``Broker.handle_publish`` passes it to the ACL and ``on_publish``; None
        if it never gets there (it raises, answers a QoS 2 repeat, or refuses $SYS).

        Keep in step with ``handle_publish``: a check added there before the hooks belongs here.
        """
        options = self.broker.options
        try:
            if conn.protocol_version == MQTT_5:
                properties = packet.properties
                if properties.topic_alias is not None or not packet.topic:
                    packet = conn.resolve_topic_alias(packet)   # the same mapping, set twice
                if properties.subscription_identifiers:
                    return None
                if properties.response_topic is not None:
                    validate_topic_name(properties.response_topic)
        except KushiError:
            return None
        if packet.qos > options.maximum_qos:
            if conn.protocol_version == MQTT_5:
                return None
            packet = replace(packet, qos=options.maximum_qos, raw=None)
        if packet.retain and not options.retain_available:
            return None
        if packet.qos == 2:
            inbound = conn.session.inbound_qos2
            if packet.packet_id in inbound or len(inbound) >= options.receive_maximum:
                return None
        if packet.topic.startswith("$SYS"):
            return None
        return packet

    def _subscription_reaches_acl(self, conn: MQTTConnection, subscription: Any,
                                  has_identifier: bool) -> bool:
        """Does ``Subscriptions._subscribe_one`` ask the ACL about this filter (it is valid and
        no option refuses it)? Keep in step with it."""
        options = self.broker.options
        try:
            validate_topic_filter(subscription.filter)
            group, topic_filter = parse_shared(subscription.filter)
        except KushiError:
            return False
        if group is not None and (subscription.no_local or not options.shared_subscriptions_available):
            return False
        if not options.wildcard_subscriptions_available and ("+" in topic_filter or "#" in topic_filter):
            return False
        return not (has_identifier and not options.subscription_identifiers_available)

    # ---- messages to the local subscribers ------------------------------------------------
    @staticmethod
    def source_of(message: Publish, publisher_id: str | None, shared_groups: bool) -> tuple[str, ...]:
        """The FIFO a message waits in: its publisher's (a client, a will) or the inline
        client's, so each one's messages keep the order it sent them in, on every topic; a
        message from another worker (no publisher known) waits in its topic's FIFO."""
        if publisher_id is not None:
            return ("client", publisher_id)
        return ("inline",) if shared_groups else ("topic", message.topic)

    def _awaits_delivery(self, source: tuple[str, ...]) -> bool:
        """Must a message from ``source`` wait (a delivery-time filter, or earlier ones waiting)?"""
        hooks = self.hooks
        return (source in self._sources or hooks.provides("on_acl_check")
                or hooks.provides("on_select_subscribers"))

    def route(self, message: Publish, publisher_id: str | None, now: float,
              source_version: int | None = None, shared_groups: bool = True) -> None:
        """``Delivery.route``, after the delivery-time filters of the message are known."""
        source = self.source_of(message, publisher_id, shared_groups)
        if not self._awaits_delivery(source):
            self._route(message, publisher_id, now, source_version, shared_groups)
            return
        match = self.broker.matcher.match(message.topic)   # who is subscribed now gets it
        self._enqueue(source, (self._resolve_route, message, publisher_id, now, source_version,
                               shared_groups, match))

    def deliver_shared(self, group: str, filter: str, message: Publish) -> bool:
        """``Delivery.deliver_shared``, after the members' read ACL is known; False at once if the
        group has no member here."""
        source = self.source_of(message, None, False)
        if not self._awaits_delivery(source):
            return self._deliver_shared(group, filter, message)
        matching = self.broker.matcher.match(message.topic).shared
        if not any(g == group and f == filter for g, f, _ in matching):
            return False
        self._enqueue(source, (self._resolve_shared, group, filter, message))
        return True

    def _enqueue(self, source: tuple[str, ...], item: tuple[Any, ...]) -> None:
        queue = self._sources.get(source)
        if queue is None:
            queue = self._sources[source] = deque()
            self.broker.spawn(self._take_messages(source, queue))
        queue.append(item)
        self.backlog += 1
        if self.backlog >= DELIVERY_BACKLOG:
            self._room.clear()

    async def _take_messages(self, source: tuple[str, ...], queue: deque[tuple[Any, ...]]) -> None:
        try:
            while queue:
                head = queue[0]
                run = [head]
                try:
                    if head[0] == self._resolve_route:
                        run = self._run_at_head(queue)
                        await self._resolve_route(run)
                    else:
                        await head[0](*head[1:])
                except asyncio.CancelledError:
                    raise
                except Exception:  # one message failed; the source's next ones still go
                    log.exception("delivery of a message from %s failed", source)
                for _ in run:
                    item = queue.popleft()
                    if self._leaving:
                        self._left(item)
                self.backlog -= len(run)
                if self.backlog < DELIVERY_BACKLOG:
                    self._room.set()
        finally:
            self.backlog -= len(queue)
            del self._sources[source]
            for item in queue:   # dropped (the server closes): nobody waits for them any more
                self._left(item)
            if self.backlog < DELIVERY_BACKLOG:
                self._room.set()

    def _run_at_head(self, queue: deque[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """The route item at the head of ``queue`` and those right behind it on the same topic
        with the same subscribers: their read ACL answers are the same (the ACL judges a
        client and a topic), so they are asked once, as ``Delivery.route_run`` does for a run.
        One item when ``on_select_subscribers`` is provided: it judges each message."""
        head = queue[0]
        run = [head]
        if self.hooks.provides("on_select_subscribers"):
            return run
        _, message, _, _, _, shared_groups, match = head
        for index in range(1, len(queue)):
            item = queue[index]
            if (item[0] != head[0] or item[6] is not match or item[5] != shared_groups
                    or item[1].topic != message.topic):
                break
            run.append(item)
        return run

    async def _resolve_route(self, run: list[tuple[Any, ...]]) -> None:
        """Route the messages of ``run`` (route items of one topic) once their delivery-time
        filters are known."""
        broker = self.broker
        hooks = self.hooks
        answers: dict[Any, Any] = {}
        _, message, _, _, _, shared_groups, match = run[0]
        folds = broker.folds_of(message.topic, match)
        keys = [fold[0] for fold in folds if fold[4].callback is None]
        if hooks.provides("on_select_subscribers"):   # a run of one, then
            selected = await hooks.resolve_select({fold[0]: fold[4] for fold in folds}, message)
            answers["on_select_subscribers"] = selected
            keys = [key for key in keys if key in selected]
        if hooks.provides("on_acl_check"):
            await self._read_acl(answers, message, keys, shared_groups)
        with hooks.answering(answers):
            for _, message, publisher_id, now, source_version, shared_groups, _ in run:
                try:
                    self._route(message, publisher_id, now, source_version, shared_groups)
                except Exception:  # this message failed; the run's next ones still go
                    log.exception("delivery of a message on %r failed", message.topic)

    async def _resolve_shared(self, group: str, filter: str, message: Publish) -> None:
        answers: dict[Any, Any] = {}
        if self.hooks.provides("on_acl_check"):
            await self._read_acl(answers, message, [], True, only=(group, filter))
        with self.hooks.answering(answers):
            if not self._deliver_shared(group, filter, message):
                log.warning("a message for shared group %s/%s found no member here", group, filter)

    async def _read_acl(self, answers: dict[Any, Any], message: Publish, keys: list[str],
                        shared_groups: bool, only: tuple[str, str] | None = None) -> None:
        """Await the read ACL of the sessions of ``keys`` and of the members of the matching
        shared groups (looked at again after the wait, for members that joined meanwhile)."""
        topic = message.topic
        sessions = self.broker.sessions
        asked: set[str] = set()
        for _ in range(SHARED_RECHECKS + 1):
            wanted = list(keys) if not asked else []
            if shared_groups:
                for group, filter, members in self.broker.matcher.match(topic).shared:
                    if only is None or (group, filter) == only:
                        wanted.extend(key for key, _ in members)
            clients = {}
            for key in wanted:
                session = sessions.get(key)
                if key not in asked and session is not None:
                    clients[key] = session.client
            if not clients:
                return
            asked.update(clients)
            checks = [self._acl(answers, client, topic, False) for client in clients.values()]
            if len(checks) == 1:
                await checks[0]
            else:
                await asyncio.gather(*checks)

    # ---- wills -----------------------------------------------------------------------------
    def publish_will(self, session: Session, client: Any, now: float) -> None:
        """``Broker.publish_will``: the will leaves the session now, goes out once its filters
        (``on_will``, the write ACL) are known."""
        will = session.will
        session.will = None
        session.will_due_at = None
        if will is None:
            return
        routed = asyncio.get_running_loop().create_future()   # for settled()
        self._wills.add(routed)
        self.broker.spawn(self._resolve_will(_WillOf(session.client_id, will), client, now, routed))

    async def _resolve_will(self, taken: _WillOf, client: Any, now: float,
                            routed: asyncio.Future[None]) -> None:
        hooks = self.hooks
        answers: dict[Any, Any] = {}
        will = taken.will
        queued = None
        try:
            if hooks.provides("on_will"):
                will = await self._chain(answers, "on_will", client, will)
                if will is None:
                    log.error("on_will failed for %r: the will is not published", taken.client_id,
                              exc_info=answers["on_will"][1])
                    return
            if hooks.provides("on_acl_check"):
                await self._acl(answers, client, will.topic, True)
            source = ("client", taken.client_id)
            before = self._sources.get(source)
            last = before[-1] if before else None
            with hooks.answering(answers):
                self._publish_will(taken, client, now)
            after = self._sources.get(source)
            if after and after[-1] is not last:
                queued = after[-1]   # the will's message, waiting for its subscribers' ACL
        finally:
            self._wills.discard(routed)
            if queued is None:
                routed.set_result(None)
            else:
                self._leaves(queued).add_done_callback(lambda _: routed.set_result(None))
