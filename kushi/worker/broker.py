"""Broker: the MQTT semantics of one worker process.

The broker holds the sessions (by client id), the live connections, the
subscriptions (a ``TopicMatcher``) and the retained messages, and answers each
packet a connection hands it:

* CONNECT: checks, hooks and enhanced authentication, takeover of a live
  client id [MQTT-3.1.4-3], clean start and session present [MQTT-3.2.2-*],
  CONNACK properties, resending what was in flight [MQTT-4.4.0-1].
* PUBLISH in: topic alias, QoS 1/2 acknowledgement, exactly-once QoS 2
  [MQTT-4.3.3-*], ACL and publish hooks, retained messages, then routing
  (``kushi.worker.delivery``).
* SUBSCRIBE / UNSUBSCRIBE: per-filter reason codes, subscription options,
  retained messages on subscribe (retain handling 0/1/2).
* The end of a connection: wills (with delay), session expiry.

A periodic ``tick(now)`` (once a second) drives every timer: connect timeout,
keep alive, will delay, session expiry, retained message expiry.
Other workers are reached only through ``self.fabric`` (``kushi.worker.fabric``).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import replace
from time import monotonic
from typing import Any, Callable

from ..errors import (
    BadAuthenticationMethod, BadUsernameOrPassword, ClientIdentifierNotValid,
    ConnectRefused, KushiError, ProtocolError, QuotaExceeded, ReceiveMaximumExceeded,
    SessionTakenOver, UnsupportedProtocolVersion,
)
from ..hooks.base import PublishDropped, PublishRejected
from ..hooks.manager import HookManager
from ..protocol.packets import (
    MQTT_3_1, MQTT_5, Auth, Connack, Connect, Disconnect, PacketType, Pingresp, Puback, Pubcomp,
    Publish, Pubrec, Pubrel, Suback, Subscribe, Subscription, Unsuback, Unsubscribe,
)
from ..protocol.properties import NO_PROPERTIES, Properties
from ..protocol.topics import parse_shared, validate_topic_filter
from ..router.matcher import TopicMatcher
from ..router.retained import RetainedStore
from .connection import MQTTConnection, State
from .delivery import Delivery
from .fabric import Fabric, LocalFabric
from .options import Options
from .session import NEVER, Session, SubscriptionEntry

log = logging.getLogger("kushi.broker")

PINGRESP = b"\xd0\x00"
NO_SUBSCRIPTION_EXISTED = 0x11
CONTINUE_AUTHENTICATION = 0x18
DISCONNECT_WITH_WILL = 0x04


class ServerInfo:
    """The ClientInfo of messages the server itself publishes (inline client)."""

    client_id = ""
    username = None
    remote_address = None
    protocol_version = MQTT_5
    listener = "inline"
    clean_start = True
    connected = True


class Broker(Delivery):
    """The state and the MQTT semantics of one worker (see the module docstring)."""

    def __init__(self, options: Options, hooks: HookManager | None = None,
                 fabric: Fabric | None = None,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.options = options
        self.hooks = hooks if hooks is not None else HookManager()
        self.fabric: Fabric = fabric if fabric is not None else LocalFabric()
        self.loop = loop or asyncio.get_event_loop()
        self.matcher = TopicMatcher()
        self.retained_store = RetainedStore()
        self.sessions: dict[str, Session] = {}
        self.connections: dict[str, MQTTConnection] = {}      # connected clients by client id
        self.open_connections: set[MQTTConnection] = set()     # every open network connection
        self.detached: set[str] = set()                        # sessions without a connection
        self.interest: dict[str, int] = {}                     # filter -> local subscriptions
        self._folds: dict[str, Any] = {}                       # route's per-topic cache
        self.server_info = ServerInfo()
        self._tasks: set[asyncio.Task[Any]] = set()
        # statistics, plain integers
        self.bytes_received = 0
        self.bytes_sent = 0
        self.connections_accepted = 0
        self.messages_received = 0
        self.messages_sent = 0
        self.messages_dropped = 0
        self.slow_consumers_disconnected = 0

    # ---- connection lifecycle --------------------------------------------------------
    def connection_opened(self, conn: MQTTConnection) -> None:
        self.open_connections.add(conn)
        self.connections_accepted += 1

    def begin_connect(self, conn: MQTTConnection, packet: Connect, now: float) -> None:
        """Answer a CONNECT: at once when no hook must be awaited, else in a task."""
        hooks = self.hooks
        if (packet.properties.authentication_method is None
                and not hooks.provides("on_connect")
                and not hooks.provides("on_connect_authenticate")):
            self._check_connect(conn, packet)
            self._accept(conn, packet, now, None)
            return
        self.spawn(self._connect_with_hooks(conn, packet))

    async def _connect_with_hooks(self, conn: MQTTConnection, packet: Connect) -> None:
        hooks = self.hooks
        try:
            self._check_connect(conn, packet)
            if hooks.provides("on_connect"):
                code = await hooks.on_connect(conn, packet)
                if code:
                    raise ConnectRefused("refused by a hook", reason_code=code)
            method = packet.properties.authentication_method
            if method is not None:
                await self._authenticate(conn, packet, method)
            if hooks.provides("on_connect_authenticate"):
                if not await hooks.on_connect_authenticate(conn, packet):
                    raise BadUsernameOrPassword("authentication failed")
            if conn.state is not State.CONNECTING:
                return
            self._accept(conn, packet, monotonic(), method)
            conn.release_input()
        except KushiError as error:
            conn.fail(error)
        except (asyncio.CancelledError, TimeoutError):  # server closing, or no AUTH answer in time
            conn.abort()
        except Exception as error:  # a hook failed: refuse rather than crash the worker
            log.exception("CONNECT of %r failed", packet.client_id)
            conn.fail(KushiError(str(error)))

    async def _authenticate(self, conn: MQTTConnection, packet: Connect, method: str) -> None:
        """Enhanced authentication (MQTT 5 section 4.12): AUTH exchanges until a hook decides."""
        if not self.hooks.provides("on_auth_packet"):
            raise BadAuthenticationMethod(f"authentication method {method!r} not supported")
        conn.authentication_method = method
        auth = Auth(0, Properties(authentication_method=method,
                                  authentication_data=packet.properties.authentication_data))
        while True:
            result = await self.hooks.on_auth_packet(conn, auth)
            if not isinstance(result, Auth):
                if result:
                    raise ConnectRefused("enhanced authentication failed", reason_code=result)
                return
            conn.send(replace(result, reason_code=CONTINUE_AUTHENTICATION,
                              properties=replace(result.properties, authentication_method=method)))
            waiter: asyncio.Future[Auth] = self.loop.create_future()
            conn.auth_waiter = waiter
            conn.release_input()
            auth = await asyncio.wait_for(waiter, self.options.connect_timeout)
            if (auth.reason_code != CONTINUE_AUTHENTICATION
                    or auth.properties.authentication_method != method):
                raise ProtocolError("bad AUTH during authentication")  # [MQTT-4.12.0-3]

    def _check_connect(self, conn: MQTTConnection, packet: Connect) -> None:
        """The checks every CONNECT passes before hooks see it; sets the ClientInfo fields."""
        options = self.options
        version = packet.protocol_version
        conn.protocol_version = version
        conn.username = packet.username
        conn.clean_start = packet.clean_start
        conn.connect_packet = packet
        if version == MQTT_5:  # needed for a refusing CONNACK or an AUTH already
            conn.maximum_packet_size = packet.properties.maximum_packet_size or 0
            conn.problem_information = packet.properties.request_problem_information != 0
        if version < options.minimum_protocol_version:
            raise UnsupportedProtocolVersion(f"protocol level {version} not served")
        client_id = packet.client_id
        if not client_id:
            if (not options.allow_empty_client_id or version == MQTT_3_1
                    or (version < MQTT_5 and not packet.clean_start)):
                raise ClientIdentifierNotValid("empty client id")  # 3.1.1 [MQTT-3.1.3-8]
            client_id = self._new_client_id()
        conn.client_id = client_id
        if options.max_clients and len(self.connections) >= options.max_clients \
                and client_id not in self.connections:
            raise QuotaExceeded("too many clients")
        will = packet.will
        if will is not None:
            if will.qos > options.maximum_qos:
                raise ConnectRefused("will QoS not supported", reason_code=0x9B)  # [MQTT-3.2.2-12]
            if will.retain and not options.retain_available:
                raise ConnectRefused("retain not supported", reason_code=0x9A)  # [MQTT-3.2.2-13]

    def _new_client_id(self) -> str:
        """A client id unique among current sessions [MQTT-3.2.2-16]."""
        while True:
            client_id = f"kushi-{uuid.uuid4().hex}"
            if client_id not in self.sessions:
                return client_id

    def _accept(self, conn: MQTTConnection, packet: Connect, now: float,
                authentication_method: str | None) -> None:
        """The CONNECT is accepted: take the session over or start one, send CONNACK."""
        options = self.options
        hooks = self.hooks
        client_id = conn.client_id
        version = packet.protocol_version
        if hooks.provides("on_session_establish"):
            hooks.on_session_establish(conn, packet)
        previous = self.connections.get(client_id)
        if previous is not None:
            previous.fail(SessionTakenOver("another connection took this client id"))  # detaches it
        session = self.sessions.get(client_id)
        if session is not None and session.disconnected_at is not None:
            self._run_session_timers(session, now)  # what the next tick would have done
            session = self.sessions.get(client_id)
        if session is not None:
            session.will = None   # a new connection within the will delay: no will [MQTT-3.1.3-9]
            session.will_due_at = None
            if packet.clean_start:
                self.end_session(session, now)  # [MQTT-3.1.2-4]
                session = None
        session_present = session is not None
        if session is None:
            session = Session(client_id, version, options.max_queued_messages)
            self.sessions[client_id] = session
        self.detached.discard(client_id)
        session.attach()
        session.protocol_version = version
        properties = packet.properties
        if version == MQTT_5:
            requested_expiry = properties.session_expiry_interval or 0
        else:
            requested_expiry = 0 if packet.clean_start else NEVER
        session.expiry_interval = min(requested_expiry, options.maximum_session_expiry)
        conn.requested_session_expiry = requested_expiry
        session.will = packet.will
        session.will_delay = (packet.will.properties.will_delay_interval or 0) if packet.will else 0
        session.send_quota_limit = min(properties.receive_maximum or 65535, options.maximum_inflight)
        conn.topic_alias_out_maximum = properties.topic_alias_maximum or 0 if version == MQTT_5 else 0
        conn.keep_alive = packet.keep_alive
        if version == MQTT_5 and options.server_keep_alive is not None:
            conn.keep_alive = options.server_keep_alive
        conn.session = session
        session.client = conn
        conn.state = State.CONNECTED
        self.connections[client_id] = conn
        conn.send(Connack(session_present, 0, self._connack_properties(
            conn, packet, requested_expiry, session.expiry_interval, authentication_method)))
        if hooks.provides("on_session_established"):
            hooks.on_session_established(conn, packet)
        if session_present:
            self.resume(session, conn, now)

    def _connack_properties(self, conn: MQTTConnection, packet: Connect, requested_expiry: int,
                            granted_expiry: int, authentication_method: str | None) -> Properties:
        if packet.protocol_version != MQTT_5:
            return NO_PROPERTIES
        options = self.options
        return Properties(
            session_expiry_interval=granted_expiry if granted_expiry != requested_expiry else None,
            receive_maximum=options.receive_maximum,
            maximum_qos=options.maximum_qos if options.maximum_qos < 2 else None,
            retain_available=int(options.retain_available),
            maximum_packet_size=options.maximum_packet_size,
            assigned_client_identifier=conn.client_id if not packet.client_id else None,
            topic_alias_maximum=options.topic_alias_maximum or None,
            wildcard_subscription_available=int(options.wildcard_subscriptions_available),
            subscription_identifier_available=int(options.subscription_identifiers_available),
            shared_subscription_available=int(options.shared_subscriptions_available),
            server_keep_alive=options.server_keep_alive,
            authentication_method=authentication_method,
        )

    def connection_lost(self, conn: MQTTConnection, error: BaseException | None, now: float) -> None:
        """A connection ended (or was taken over): will, session detach or end."""
        self.open_connections.discard(conn)
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
        if self.hooks.provides("on_disconnect"):
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
        """The session is over: a delayed will goes out now; subscriptions are removed."""
        client_id = session.client_id
        if session.will_due_at is not None:
            self.publish_will(session, session.client or self.server_info, now)
        for filter in self.matcher.remove_key(client_id):
            self._interest_down(filter)
        session.subscriptions.clear()
        self.detached.discard(client_id)
        if self.sessions.get(client_id) is session:
            del self.sessions[client_id]

    def tick(self, now: float) -> None:
        """Run every timer that is due (called about once a second)."""
        for conn in list(self.open_connections):
            conn.check_timers(now)
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

    # ---- packets of a connected client ------------------------------------------------
    def handle_packet(self, conn: MQTTConnection, packet: Any, now: float) -> None:
        """Dispatch one packet of a connected client."""
        hooks = self.hooks
        if hooks.provides("on_packet_read"):
            packet = hooks.on_packet_read(conn, packet)
        kind = packet.type
        if kind is PacketType.PUBLISH:
            self.handle_publish(conn, packet, now)
        elif kind is PacketType.PUBACK or kind is PacketType.PUBCOMP:
            self.handle_completion(conn, packet.packet_id, packet, now)
        elif kind is PacketType.PUBREC:
            self.handle_pubrec(conn, packet, now)
        elif kind is PacketType.PUBREL:
            self.handle_pubrel(conn, packet)
        elif kind is PacketType.PINGREQ:
            if hooks.provides("on_packet_encode") or hooks.provides("on_packet_sent"):
                conn.send(Pingresp())
            else:
                conn.write(PINGRESP)
        elif kind is PacketType.SUBSCRIBE:
            self.handle_subscribe(conn, packet, now)
        elif kind is PacketType.UNSUBSCRIBE:
            self.handle_unsubscribe(conn, packet)
        elif kind is PacketType.DISCONNECT:
            self.handle_disconnect(conn, packet)
        elif kind is PacketType.AUTH:
            self.handle_reauthentication(conn, packet)
        elif kind is PacketType.CONNECT:
            raise ProtocolError("second CONNECT")  # [MQTT-3.1.0-2]
        else:
            raise ProtocolError(f"{kind.name} is not sent by clients")
        if hooks.provides("on_packet_processed"):
            hooks.on_packet_processed(conn, packet, None)

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
        qos = packet.qos
        if qos > options.maximum_qos:
            raise ProtocolError("QoS not supported", reason_code=0x9B)  # [MQTT-3.2.2-11]
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
        if hooks.provides("on_acl_check") and not hooks.on_acl_check(conn, packet.topic, True):
            reason_code = 0x87
            packet = None
        elif hooks.provides("on_publish"):
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
            if hooks.provides("on_published"):
                hooks.on_published(conn, packet)
        if not v5:
            reason_code = 0
        if qos == 1:
            self.send_ack(conn, Puback, packet_id, reason_code)
        elif qos == 2:
            if reason_code < 0x80:
                session.inbound_qos2.add(packet_id)
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
        if self.hooks.provides("on_qos_complete"):
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

    def handle_reauthentication(self, conn: MQTTConnection, packet: Auth) -> None:
        """An AUTH after CONNACK: re-authentication, only with the method used at CONNECT."""
        method = conn.authentication_method
        if method is None or packet.properties.authentication_method != method:
            raise ProtocolError("AUTH without enhanced authentication")  # [MQTT-4.12.0-7]
        self.spawn(self._reauthenticate(conn, packet, method))

    async def _reauthenticate(self, conn: MQTTConnection, packet: Auth, method: str) -> None:
        result = await self.hooks.on_auth_packet(conn, packet)
        if isinstance(result, Auth):
            conn.send(replace(result, properties=replace(result.properties,
                                                         authentication_method=method)))
        elif result:
            conn.fail(KushiError("re-authentication failed", reason_code=result))
        else:
            conn.send(Auth(0, Properties(authentication_method=method)))

    # ---- subscriptions ------------------------------------------------------------------
    def handle_subscribe(self, conn: MQTTConnection, packet: Subscribe, now: float) -> None:
        """SUBSCRIBE: one reason code per filter [MQTT-3.8.4-6], then retained messages."""
        hooks = self.hooks
        if hooks.provides("on_subscribe"):
            packet = hooks.on_subscribe(conn, packet)
        identifiers = packet.properties.subscription_identifiers
        identifier = identifiers[0] if identifiers else None
        reason_codes = []
        retained: list[tuple[SubscriptionEntry, list[Publish]]] = []
        for subscription in packet.subscriptions:
            reason_codes.append(self._subscribe_one(conn, subscription, identifier, retained, now))
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
                       identifier: int | None, retained: list, now: float) -> int:
        """Subscribe to one filter; return its SUBACK reason code (granted QoS or failure)."""
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
            messages = self.retained_store.match(topic_filter, now)
            if messages:
                retained.append((entry, messages))
        return granted

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
    def deliver_remote(self, message: Publish) -> None:
        """A message from another worker: deliver to local subscribers only, never forward."""
        self.route(message, None, monotonic())

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

    # ---- inline client ----------------------------------------------------------------
    def inline_subscribe(self, filter: str, subscription_id: int,
                         callback: Callable[..., Any], now: float) -> None:
        """Subscribe the server's own client; matching retained messages are handed over at once."""
        validate_topic_filter(filter)
        entry = SubscriptionEntry(inline_key(subscription_id), filter, 2, identifier=subscription_id,
                                  callback=callback)
        self.add_subscription(None, entry)
        group, topic_filter = parse_shared(filter)
        if group is None:
            for message in self.retained_store.match(topic_filter, now):
                self.call_inline(entry, message)

    def inline_unsubscribe(self, filter: str, subscription_id: int) -> bool:
        return self.remove_subscription(None, inline_key(subscription_id), filter)

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


def inline_key(subscription_id: int) -> str:
    """The subscriber key of an inline-client subscription (U+0000 is never in a client id)."""
    return f"\x00inline:{subscription_id}"
