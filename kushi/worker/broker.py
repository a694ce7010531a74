"""Broker: the MQTT semantics of one worker process.

The broker holds the sessions (by client id), the live connections, the
subscriptions (a ``TopicMatcher``) and the retained messages, and answers each
packet a connection hands it. It is assembled from one module per concern:

* ``connect.py`` (``Connecting``): CONNECT, enhanced authentication, takeover,
  clean start and session present, CONNACK.
* ``subscriptions.py`` (``Subscriptions``): SUBSCRIBE / UNSUBSCRIBE, retained
  messages on subscribe, the inline client's subscriptions.
* ``delivery.py`` (``Delivery``): routing a message to its subscribers, QoS 1/2
  in flight and queued, resending on session resume.
* here: PUBLISH in (topic alias, QoS 1/2 acknowledgement, exactly-once QoS 2
  [MQTT-4.3.3-*], ACL and publish hooks, retained messages), the other client
  packets, the end of a connection (wills with delay, session expiry), the
  cluster sink, statistics.

A periodic ``tick(now)`` (once a second) drives every timer: connect timeout,
keep alive, will delay, session expiry, retained message expiry.
Other workers are reached only through ``self.fabric`` (``kushi.worker.fabric``).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from struct import pack
from time import monotonic
from typing import TYPE_CHECKING, Any

from ..errors import ProtocolError, ReceiveMaximumExceeded, SessionTakenOver
from ..hooks.base import PublishDropped, PublishRejected
from ..hooks.manager import HookManager
from ..protocol.packets import (
    MQTT_5, Disconnect, PacketType, Pingresp, Puback, PubackBuilder, Pubcomp, Publish, Pubrec,
    Pubrel,
)
from ..protocol.properties import NO_PROPERTIES
from ..protocol.reader import PubackRun, scratch_buffer
from ..protocol.topics import validate_topic_name
from ..router.matcher import TopicMatcher
from ..router.retained import RetainedStore
from .async_filters import install as install_async_filters
from .connect import Connecting
from .connection import CONNECTED, MQTTConnection
from .deadlines import DeadlineBuckets
from .delivery import Delivery
from .fabric import Fabric, LocalFabric
from .options import Options
from .session import Session
from .shared_pass_on import pass_on_shared
from .subscriptions import Subscriptions

if TYPE_CHECKING:
    from ..cluster.wire import ReceivedRun

log = logging.getLogger("kushi.broker")

PINGRESP = b"\xd0\x00"
PUBACK_WORD = 0x4002_0000   # a PUBACK with reason 0: these two bytes, then the packet id
DISCONNECT_WITH_WILL = 0x04
# packet types as module constants, read once here: on Python 3.11 ``PacketType.PUBLISH``
# goes through EnumType.__getattr__ (~200 ns, timeit), and ``dispatch_packet`` compares
# up to ten per packet (see kushi/worker/connection.py for the states)
(PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBSCRIBE, UNSUBSCRIBE, PINGREQ, DISCONNECT, AUTH,
 CONNECT) = (PacketType.PUBLISH, PacketType.PUBACK, PacketType.PUBREC, PacketType.PUBREL,
             PacketType.PUBCOMP, PacketType.SUBSCRIBE, PacketType.UNSUBSCRIBE, PacketType.PINGREQ,
             PacketType.DISCONNECT, PacketType.AUTH, PacketType.CONNECT)


class ServerInfo:
    """The ClientInfo of messages the server itself publishes (inline client)."""

    client_id = "inline"
    username = None
    remote_address = None
    protocol_version = MQTT_5
    listener = "inline"
    clean_start = True
    connected = True


class Broker(Connecting, Subscriptions, Delivery):
    """The state and the MQTT semantics of one worker (see the module docstring)."""

    # Every attribute __init__ sets is a slot. Without slots, CPython (3.11-3.13) keeps an
    # instance's attributes as values beside keys its class shares, 30 keys at most (fewer once
    # instances exist); one attribute past that turns them into a plain dict, and every
    # ``self.options``, ``self.connections``, ``self.hooks`` of the message and connect paths
    # gets dearer, with nothing failing: a Broker at 30 attributes cost a connect 1.8k
    # instructions more than at 28 (callgrind, profile_connect.py cluster --connect-only
    # --as-worker). A slot is read the same way however many there are. The instance keeps a
    # __dict__ (the mixins have none of their own slots), for what replaces a method for a
    # while: the async filters' pipeline, a hand-over's ``deliver``.
    # tests/worker/test_broker_attributes.py holds every attribute to a slot.
    __slots__ = (
        "options", "hooks", "fabric", "fabric_forward_run", "fabric_groups_matching", "loop",
        "matcher", "retained_store", "sessions", "connections", "open_connections", "deadlines",
        "detached", "interest", "_folds", "_connack_cache", "read_scratch", "server_info",
        "_tasks", "to_flush", "async_filters", "held", "suback_wait_timeouts",
        "bytes_received", "bytes_sent", "connections_accepted", "messages_received",
        "messages_sent", "messages_dropped", "slow_consumers_disconnected",
    )

    def __init__(self, options: Options, hooks: HookManager | None = None,
                 fabric: Fabric | None = None,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.options = options
        self.hooks = hooks if hooks is not None else HookManager()
        self.fabric: Fabric = fabric if fabric is not None else LocalFabric()
        # a cluster fabric's optional methods for the message path, looked up once, not for
        # every message (None if it has none): ``publish_run`` and ``run_targets`` call them
        # (callgrind, profile_hotpath.py SP --buffered --bus: 47,041 -> 45,004 instructions a
        # message, with ``run_targets`` calling shared_groups_matching itself)
        self.fabric_forward_run = getattr(self.fabric, "forward_run", None)
        self.fabric_groups_matching = getattr(self.fabric, "shared_groups_matching", None)
        self.loop = loop or asyncio.get_event_loop()
        self.matcher = TopicMatcher()
        self.retained_store = RetainedStore()
        self.sessions: dict[str, Session] = {}
        self.connections: dict[str, MQTTConnection] = {}      # connected clients by client id
        self.open_connections: set[MQTTConnection] = set()     # every open network connection
        # open connections by when their connect timeout or keep alive may run out (the tick)
        self.deadlines: DeadlineBuckets[MQTTConnection] = DeadlineBuckets()
        self.detached: set[str] = set()                        # sessions without a connection
        self.interest: dict[str, int] = {}                     # filter -> local subscriptions
        self._folds: dict[str, Any] = {}                       # route's per-topic cache
        self._connack_cache: dict[tuple, bytes] = {}           # encoded CONNACKs
        self.read_scratch = scratch_buffer()   # where the connections' reads land between packets
        self.server_info = ServerInfo()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.to_flush: list[MQTTConnection] = []             # written to in this loop iteration
        self.async_filters: Any = None   # set by kushi.worker.async_filters when it steps in
        self.held: dict[MQTTConnection, list[Any]] = {}      # packets waiting behind a SUBACK
        self.suback_wait_timeouts = 0                        # SUBACKs sent without the cluster's barrier
        # statistics, plain integers
        self.bytes_received = 0
        self.bytes_sent = 0
        self.connections_accepted = 0
        self.messages_received = 0
        self.messages_sent = 0
        self.messages_dropped = 0
        self.slow_consumers_disconnected = 0
        # coroutine message-path filters: the async pipelines take over a few methods of this
        # instance (kushi.worker.async_filters); without any, nothing here changes
        install_async_filters(self)

    # ---- connection lifecycle --------------------------------------------------------
    def connection_opened(self, conn: MQTTConnection) -> None:
        self.open_connections.add(conn)
        self.connections_accepted += 1
        # its connect timeout (conn.timer_deadline(), written out: one call less per connection)
        self.deadlines.file(conn, conn.opened_at + self.options.connect_timeout)

    def connection_lost(self, conn: MQTTConnection, error: BaseException | None, now: float) -> None:
        """A connection ended (or was taken over): will, session detach or end."""
        self.open_connections.discard(conn)
        self.deadlines.remove(conn)
        session = conn.session
        client_id = conn.client_id
        if session is None or self.connections.get(client_id) is not conn:
            return
        del self.connections[client_id]
        session.detach(now)
        if session.will is not None:
            if session.will_delay == 0 or session.expiry_interval == 0:
                self.publish_will(session, conn, now)
            else:
                session.will_due_at = now + min(session.will_delay, session.expiry_interval)
        ends = session.expiry_interval == 0
        if self.hooks.has.on_disconnect:
            self.hooks.on_disconnect(conn, error, ends)
        if ends:
            self.end_session(session, now)
        else:
            self.detached.add(client_id)

    def publish_will(self, session: Session, client: Any, now: float) -> None:
        """Publish the session's will [MQTT-3.1.2-8] and forget it [MQTT-3.1.2-10]."""
        will = session.will
        session.will = None
        session.will_due_at = None
        if will is None:
            return
        hooks = self.hooks
        if hooks.provides("on_will"):
            will = hooks.on_will(client, will)
        if hooks.provides("on_acl_check") and not hooks.on_acl_check(client, will.topic, True):
            return  # the client may not publish there, not even its will
        properties = will.properties
        if properties.will_delay_interval is not None:
            properties = replace(properties, will_delay_interval=None)
        message = Publish(will.topic, will.payload, will.qos, will.retain, properties=properties)
        self.publish(message, session.client_id, now)
        if hooks.provides("on_will_sent"):
            hooks.on_will_sent(client, message)

    def end_session(self, session: Session, now: float) -> None:
        """The session is over: a delayed will goes out now; subscriptions are removed;
        what shared groups gave it and the client did not get goes to other members
        (``shared_pass_on``), the rest of its messages are dropped."""
        client_id = session.client_id
        if session.will_due_at is not None:
            self.publish_will(session, session.client or self.server_info, now)
        if session.subscriptions:
            for filter in self.matcher.remove_key(client_id):
                self._interest_down(filter)
            session.subscriptions.clear()
        self.drop_session_messages(session, now)
        self.detached.discard(client_id)
        if self.sessions.get(client_id) is session:
            del self.sessions[client_id]

    def drop_session_messages(self, session: Session, now: float) -> None:
        """The messages of an ended session: what shared groups gave it and the client did not
        get goes to other members (``shared_pass_on``); the in-flight rest is dropped
        (``on_qos_dropped``). Call it once the session's subscriptions are gone."""
        if session.inflight or session.queue:
            pass_on_shared(self, session, now)
        if session.inflight and self.hooks.provides("on_qos_dropped"):
            for item in session.inflight.values():
                self.hooks.on_qos_dropped(session.client or self.server_info, item.message)

    def tick(self, now: float) -> None:
        """Run every timer that is due (called about once a second)."""
        deadlines = self.deadlines
        for conn in deadlines.take_due(now):   # only connections filed up to now, not all
            deadline = conn.check_timers(now)
            if deadline is not None:            # a packet moved keep alive on: file it there
                deadlines.file(conn, deadline)
        for client_id in list(self.detached):
            session = self.sessions.get(client_id)
            if session is None:
                self.detached.discard(client_id)
            else:
                self._run_session_timers(session, now)
        hooks = self.hooks
        for topic in self.retained_store.expire(now):
            if hooks.provides("on_retained_expired"):
                hooks.on_retained_expired(topic)

    def _run_session_timers(self, session: Session, now: float) -> None:
        """A detached session: publish its will when due, end it when expired."""
        if session.will_due_at is not None and now >= session.will_due_at:
            self.publish_will(session, session.client or self.server_info, now)
        if session.is_expired(now):
            self.end_session(session, now)
            if self.hooks.provides("on_client_expired"):
                self.hooks.on_client_expired(session.client_id)

    # ---- writing -------------------------------------------------------------------------
    def flush_all(self) -> None:
        """Flush every connection written to in this loop iteration (``to_flush``): the one
        callback ``MQTTConnection.write`` schedules for them all."""
        to_flush = self.to_flush
        self.to_flush = []
        for conn in to_flush:
            conn.flush()

    # ---- packets of a connected client ------------------------------------------------
    def handle_packets(self, conn: MQTTConnection, packets: list[Any], now: float) -> None:
        """Dispatch the packets of one read, in order, while the connection stays connected.

        The hot path (ARCHITECTURE.md): consecutive QoS 0 or QoS 1 PUBLISH packets
        on one topic that no hook needs to see one by one (no DUP, not retained, no
        properties) are published as one run (``publish_run``): matched once,
        counted once, checked by the ACL once, forwarded as the received bytes
        (``Delivery.route_run``), and acknowledged in one write. A ``PubackRun``
        (the reader's consecutive PUBACKs) frees its send slots in one pass.
        """
        # must every packet go through handle_packet (a hook or a setting sees each one)? (asked
        # here, not in a method of its own: a call is ~400 instructions, once a read)
        has = self.hooks.has
        if (has.on_packet_read or has.on_packet_processed or has.on_publish or has.on_published
                or self.options.maximum_message_expiry):
            for packet in packets:
                if conn.state is not CONNECTED:
                    return
                self.handle_packet(conn, packet, now)
                if self.held and conn in self.held:   # the rest waits behind a SUBACK
                    self.hold_rest(conn, packets, packet)
                    return
            return
        run: Any = None   # the run under way: None, not an empty list, until one starts
        topic = None      # (a list less a read, for the one PUBLISH of sparse traffic)
        qos = 0
        for packet in packets:
            kind = type(packet)
            if (kind is Publish and packet.qos < 2 and not packet.retain and not packet.dup
                    and packet.properties is NO_PROPERTIES):
                if packet.topic == topic and packet.qos == qos:
                    run.append(packet)
                    continue
                if run:
                    self.publish_run(conn, run, now)
                run = [packet]
                topic = packet.topic
                qos = packet.qos
                continue
            if run:
                self.publish_run(conn, run, now)
                run = None
                topic = None
            if conn.state is not CONNECTED:
                return
            if kind is PubackRun:
                self.acknowledge_run(conn, packet.packet_ids, now)
            elif kind is Puback:     # no hook reads packets: straight to the handler
                self.handle_completion(conn, packet.packet_id, packet, now)
            elif kind is Publish:
                self.handle_publish(conn, packet, now)
            else:
                self.handle_packet(conn, packet, now)
                if self.held and conn in self.held:   # the rest waits behind a SUBACK
                    self.hold_rest(conn, packets, packet)
                    return
        if run and conn.state is CONNECTED:
            self.publish_run(conn, run, now)

    def acknowledge_run(self, conn: MQTTConnection, packet_ids: list[int], now: float) -> None:
        """PUBACKs with reason 0 for ``packet_ids``: their send slots are free, the queue moves on."""
        if self.hooks.has.on_qos_complete:
            for packet_id in packet_ids:
                self.handle_completion(conn, packet_id, PubackBuilder(packet_id), now)
            return
        session = conn.session
        pop = session.inflight.pop
        for packet_id in packet_ids:
            pop(packet_id, None)
        if session.queue:
            self.drain(session, conn, now)

    def publish_run(self, conn: MQTTConnection, run: list[Publish], now: float) -> None:
        """QoS 0 or QoS 1 messages on one topic from ``conn``: no DUP, not retained, no properties.

        What ``handle_publish`` and ``publish`` do for each, done once for the run:
        the ACL decides on (client, topic), the same for every message of the run.
        Anything out of the ordinary (a refusal, $SYS, a QoS above the maximum) goes
        through ``handle_publish`` message by message, which answers it.
        """
        hooks = self.hooks
        first = run[0]
        qos = first.qos
        topic = first.topic
        if qos > self.options.maximum_qos or topic.startswith("$SYS") or (
                hooks.has.on_acl_check and not hooks.on_acl_check(conn, topic, True)):
            for message in run:
                self.handle_publish(conn, message, now)
            return
        self.messages_received += len(run)
        self.route_run(run, conn.client_id, now, conn.protocol_version)
        fabric = self.fabric
        if type(fabric) is not LocalFabric:
            forward_run = self.fabric_forward_run
            if forward_run is not None:   # the cluster's: one bus item of the bytes received
                forward_run(run, conn.protocol_version)
            else:
                for message in run:
                    fabric.forward(message)
        if qos:
            if hooks.has.on_packet_encode or hooks.has.on_packet_sent:
                for message in run:
                    self.send_ack(conn, Puback, message.packet_id, 0)
            elif len(run) == 1:
                # a lone message (sparse traffic): a constant format, no list (callgrind:
                # ~1,350 instructions against ~5,600 for the run's form below)
                conn.write(pack(">I", PUBACK_WORD | first.packet_id))
            else:
                # each PUBACK is the 32-bit word 0x4002 <packet id>: one pack for the run
                conn.write(pack(f">{len(run)}I", *[PUBACK_WORD | message.packet_id for message in run]))

    def handle_packet(self, conn: MQTTConnection, packet: Any, now: float) -> None:
        """Handle one packet of a connected client, between on_packet_read and on_packet_processed.

        on_packet_processed gets the error that ended the packet's handling, if any; the error
        then goes on to the connection, which reports it and closes. A ``PubackRun`` is
        handled as the PUBACKs it stands for, one by one.
        """
        if type(packet) is PubackRun:
            for packet_id in packet.packet_ids:
                if conn.state is not CONNECTED:
                    return
                self.handle_packet(conn, PubackBuilder(packet_id), now)
            return
        hooks = self.hooks
        if hooks.has.on_packet_read:
            packet = hooks.on_packet_read(conn, packet)
        if not hooks.has.on_packet_processed:
            self.dispatch_packet(conn, packet, now)
            return
        try:
            self.dispatch_packet(conn, packet, now)
        except Exception as error:
            hooks.on_packet_processed(conn, packet, error)
            raise
        hooks.on_packet_processed(conn, packet, None)

    def dispatch_packet(self, conn: MQTTConnection, packet: Any, now: float) -> None:
        """Send one packet of a connected client to the handler of its type."""
        hooks = self.hooks
        kind = packet.type
        if kind is PUBLISH:
            self.handle_publish(conn, packet, now)
        elif kind is PUBACK or kind is PUBCOMP:
            self.handle_completion(conn, packet.packet_id, packet, now)
        elif kind is PUBREC:
            self.handle_pubrec(conn, packet, now)
        elif kind is PUBREL:
            self.handle_pubrel(conn, packet)
        elif kind is PINGREQ:
            if hooks.has.on_packet_encode or hooks.has.on_packet_sent:
                conn.send(Pingresp())
            else:
                conn.write(PINGRESP)
        elif kind is SUBSCRIBE:
            self.handle_subscribe(conn, packet, now)
        elif kind is UNSUBSCRIBE:
            self.handle_unsubscribe(conn, packet)
        elif kind is DISCONNECT:
            self.handle_disconnect(conn, packet)
        elif kind is AUTH:
            self.handle_reauthentication(conn, packet)
        elif kind is CONNECT:
            raise ProtocolError("second CONNECT")  # [MQTT-3.1.0-2]
        else:
            raise ProtocolError(f"{kind.name} is not sent by clients")

    def handle_publish(self, conn: MQTTConnection, packet: Publish, now: float) -> None:
        """An inbound PUBLISH: acknowledge per QoS, check, route [MQTT-3.3.4-1]."""
        self.messages_received += 1
        options = self.options
        v5 = conn.protocol_version == MQTT_5
        if v5:
            properties = packet.properties
            if properties.topic_alias is not None or not packet.topic:
                packet = conn.resolve_topic_alias(packet)
            if properties.subscription_identifiers:
                raise ProtocolError("PUBLISH from a client with a subscription identifier")
            if properties.response_topic is not None:
                validate_topic_name(properties.response_topic)  # no wildcards [MQTT-3.3.2-14]
        qos = packet.qos
        if qos > options.maximum_qos:
            if v5:
                raise ProtocolError("QoS not supported", reason_code=0x9B)  # [MQTT-3.2.2-11]
            # a 3.1/3.1.1 client was never told our maximum: finish its flow, route at ours
            packet = replace(packet, qos=options.maximum_qos, raw=None)
        if packet.retain and not options.retain_available:
            raise ProtocolError("retain not supported", reason_code=0x9A)  # [MQTT-3.2.2-14]
        session = conn.session
        packet_id = packet.packet_id
        if qos == 2:
            if packet_id in session.inbound_qos2:
                conn.send(Pubrec(packet_id))  # a repeat: acknowledge, never deliver twice [MQTT-4.3.3-10]
                return
            if len(session.inbound_qos2) >= options.receive_maximum:
                raise ReceiveMaximumExceeded("too many QoS 2 messages awaiting PUBREL")
        reason_code = 0
        hooks = self.hooks
        if packet.topic.startswith("$SYS"):
            reason_code = 0x87  # only the server publishes there: clients cannot fake its state
            packet = None
        elif hooks.has.on_acl_check and not hooks.on_acl_check(conn, packet.topic, True):
            reason_code = 0x87
            packet = None
        elif hooks.has.on_publish:
            try:
                changed = hooks.on_publish(conn, packet)
                if changed is not packet:
                    packet = replace(changed, raw=None)  # the received bytes no longer fit
            except PublishRejected as rejected:
                reason_code = rejected.reason_code
                packet = None
            except PublishDropped:
                packet = None
        if packet is not None:
            self.publish(packet, conn.client_id, now, conn.protocol_version)
            if hooks.has.on_published:
                hooks.on_published(conn, packet)
        if not v5:
            reason_code = 0
        if qos == 1:
            self.send_ack(conn, Puback, packet_id, reason_code)
        elif qos == 2:
            if reason_code < 0x80:
                session.add_inbound_qos2(packet_id)
            self.send_ack(conn, Pubrec, packet_id, reason_code)

    def handle_pubrel(self, conn: MQTTConnection, packet: Pubrel) -> None:
        """PUBREL: the QoS 2 message is released; answer PUBCOMP [MQTT-4.3.3-11]."""
        packet_id = packet.packet_id
        inbound = conn.session.inbound_qos2
        if packet_id in inbound:
            inbound.discard(packet_id)
            self.send_ack(conn, Pubcomp, packet_id, 0)
        else:
            conn.send(Pubcomp(packet_id, 0x92 if conn.protocol_version == MQTT_5 else 0))

    def handle_pubrec(self, conn: MQTTConnection, packet: Pubrec, now: float) -> None:
        """PUBREC for a message we sent: PUBREL next, or the end of it if the client refused."""
        if packet.reason_code >= 0x80:  # [MQTT-4.4.0-2]
            self.handle_completion(conn, packet.packet_id, packet, now)
            return
        item = conn.session.release(packet.packet_id)
        if item is None:
            conn.send(Pubrel(packet.packet_id, 0x92 if conn.protocol_version == MQTT_5 else 0))
        else:
            self.send_ack(conn, Pubrel, packet.packet_id, 0)  # [MQTT-4.3.3-4]

    def handle_completion(self, conn: MQTTConnection, packet_id: int, packet: Any, now: float) -> None:
        """PUBACK, PUBCOMP or a failing PUBREC: a send slot is free again [MQTT-4.9.0-*]."""
        session = conn.session
        if session.acknowledge(packet_id) is None:
            return
        if self.hooks.has.on_qos_complete:
            self.hooks.on_qos_complete(conn, packet)
        if session.queue:
            self.drain(session, conn, now)

    def handle_disconnect(self, conn: MQTTConnection, packet: Disconnect) -> None:
        """A client DISCONNECT: the will is dropped unless reason 0x04 [MQTT-3.14.4-3]."""
        session = conn.session
        if conn.protocol_version == MQTT_5:
            expiry = packet.properties.session_expiry_interval
            if expiry is not None:
                if conn.requested_session_expiry == 0 and expiry != 0:
                    raise ProtocolError("session expiry changed from 0 on DISCONNECT")
                session.expiry_interval = min(expiry, self.options.maximum_session_expiry)
            if packet.reason_code != DISCONNECT_WITH_WILL:
                session.will = None
        else:
            session.will = None
        conn.close()

    # ---- messages in ------------------------------------------------------------------
    def publish(self, message: Publish, publisher_id: str | None, now: float,
                source_version: int | None = None) -> None:
        """A message the broker has taken ownership of: retain it, route it, tell the others."""
        cap = self.options.maximum_message_expiry
        if cap:
            interval = message.properties.message_expiry_interval
            if interval is None or interval > cap:
                message = replace(message, properties=replace(
                    message.properties, message_expiry_interval=cap), raw=None)
        if message.retain:
            self.store_retained(message, now, publisher_id)
            self.fabric.retained_changed(message)
        self.route(message, publisher_id, now, source_version)
        if self.fabric.__class__ is not LocalFabric:  # alone, there is nobody to forward to
            self.fabric.forward(message)

    def store_retained(self, message: Publish, now: float, publisher_id: str | None = None) -> int:
        """Set, replace or (empty payload) clear the retained message of a topic [MQTT-3.3.1-5/6/7]."""
        stored = replace(message, dup=False, packet_id=None, raw=None)
        result = self.retained_store.set(message.topic, stored, now)
        hooks = self.hooks
        if result and hooks.provides("on_retain_message"):
            client = self.connections.get(publisher_id or "", self.server_info)
            hooks.on_retain_message(client, stored, result)
        return result

    # ---- the cluster sink -------------------------------------------------------------
    def deliver_remote(self, message: Publish, source_version: int | None = None) -> None:
        """A message from another worker: deliver to local subscribers only, never forward.

        Shared groups are left out: the worker that received the message chose their
        members (``deliver_shared`` brings it here if a local member was chosen).
        ``source_version``: the protocol version ``message.raw`` is encoded in, if it has raw
        bytes; subscribers of that version then get those bytes without re-encoding.
        """
        self.route(message, None, monotonic(), source_version, shared_groups=False)

    def deliver_remote_run(self, run: ReceivedRun, source_version: int) -> None:
        """Messages another worker took as a run (``publish_run``) and sent as one item of the
        bytes its client sent (``source_version``: their protocol version): delivered to local
        subscribers only, as ``route_run`` delivers a local run (``route_received_run``).
        Through ``route`` one by one while coroutine filters are in front of it
        (kushi.worker.async_filters)."""
        if getattr(self, "async_filters", None) is not None:
            for message in run.messages():
                self.deliver_remote(message, source_version)
            return
        self.route_received_run(run, monotonic())

    def apply_retained(self, message: Publish) -> None:
        """A retained change made on another worker: store it, do not announce it again."""
        self.store_retained(message, monotonic())

    def import_session(self, session: Session) -> None:
        """A session handed over by another worker: keep it here, detached, with its subscriptions.

        A local session of the same client id wins (nobody else should have held one).
        """
        client_id = session.client_id
        if client_id in self.sessions:
            return
        self.sessions[client_id] = session
        self.detached.add(client_id)
        for entry in list(session.subscriptions.values()):
            self.add_subscription(session, entry)

    def export_session(self, client_id: str, now: float) -> Session | None:
        """Give a session up to another worker: close its connection here (v5: 0x8E) without
        publishing the will or ending the session; the will moves with the session."""
        conn = self.connections.pop(client_id, None)
        session = self.sessions.pop(client_id, None)
        if conn is not None:
            conn.fail(SessionTakenOver("the session moved to another worker"))
        if session is None:
            return None
        if session.disconnected_at is None:
            session.detach(now)
        self.detached.discard(client_id)
        for filter in self.matcher.remove_key(client_id):
            self._interest_down(filter)
        return session

    def spawn(self, coroutine: Any) -> None:
        """Run a coroutine as a task of the broker, kept referenced until it is done."""
        task = self.loop.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("broker task failed", exc_info=task.exception())

    def cancel_tasks(self) -> None:
        """Cancel the broker's own tasks (connects awaiting hooks, re-authentications)."""
        for task in list(self._tasks):
            task.cancel()

    # ---- statistics --------------------------------------------------------------------
    def stats(self) -> dict[str, int]:
        return {
            "clients_connected": len(self.connections),
            "connections_open": len(self.open_connections),
            "connections": self.connections_accepted,
            "sessions": len(self.sessions),
            "subscriptions": len(self.matcher),
            "retained": len(self.retained_store),
            "messages_received": self.messages_received,
            "messages_sent": self.messages_sent,
            "messages_dropped": self.messages_dropped,
            "bytes_received": self.bytes_received,
            "bytes_sent": self.bytes_sent,
            "slow_consumers_disconnected": self.slow_consumers_disconnected,
        }
