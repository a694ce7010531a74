"""Connecting: how the broker answers a CONNECT (a base class of ``Broker``).

The checks every CONNECT passes, the connect-time hooks (awaited in a task
only when a hook provides them, so a plain broker answers at once), enhanced
authentication with AUTH exchanges (MQTT 5 section 4.12) and re-authentication,
then ``_accept``: takeover of a live client id [MQTT-3.1.4-3], clean start and
session present [MQTT-3.2.2-*], the CONNACK properties, and the resending of
what was in flight [MQTT-4.4.0-1].
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import uuid
from dataclasses import replace
from time import monotonic
from typing import TYPE_CHECKING, Any, Awaitable

from ..errors import (
    BadAuthenticationMethod, BadUsernameOrPassword, ClientIdentifierNotValid, ConnectRefused,
    KushiError, ProtocolError, QuotaExceeded, SessionTakenOver, UnsupportedProtocolVersion,
)
from ..protocol.codec import encode
from ..protocol.packets import MQTT_3_1, MQTT_5, Auth, Connack, Connect
from ..protocol.properties import NO_PROPERTIES, Properties
from ..protocol.topics import validate_topic_name
from .connection import CONNECTED, CONNECTING
from .session import NEVER, new_session

if TYPE_CHECKING:
    from .connection import MQTTConnection

log = logging.getLogger("kushi.connect")

CONTINUE_AUTHENTICATION = 0x18
CONNACK_CACHE_SIZE = 64
"""Encoded CONNACKs kept (not those with an assigned client id: they never repeat)."""


def _judge_connect_hook(is_authenticate: bool, answer: Any) -> None:
    """Raise if a connect-time hook's answer refuses the client (as ``HookManager`` decides:
    ``on_connect`` refuses with a reason code >= 0x80, ``on_connect_authenticate`` with anything
    but True)."""
    if is_authenticate:
        if answer is not True:
            raise BadUsernameOrPassword("authentication failed")
    elif answer is not None and answer >= 0x80:
        raise ConnectRefused("refused by a hook", reason_code=answer)


class Connecting:
    """CONNECT and AUTH handling, mixed into ``Broker``."""

    _connack_cache: dict[tuple, bytes]   # provided by Broker

    def begin_connect(self, conn: MQTTConnection, packet: Connect, now: float) -> None:
        """Answer a CONNECT: at once when no hook must be awaited, else in a task.

        The connect-time hooks are called here one by one; only when one returns
        something to await (a coroutine hook: the cluster's session claim when the
        CONNECT must wait for it) does the rest go on in a task. A CONNECT whose hooks
        are plain functions, or none (``kushi serve`` without authentication), costs
        no task, future or extra loop turn.
        """
        if packet.properties.authentication_method is not None:
            self.spawn(self._connect_with_hooks(conn, packet))  # AUTH exchanges: always awaited
            return
        self._check_connect(conn, packet)
        has = self.hooks.has
        if not has.on_connect and not has.on_connect_authenticate:
            self._accept(conn, packet, now, None)  # no hook to ask
            return
        try:
            waiting = self._run_connect_hooks(conn, packet, 0)
        except KushiError:
            raise
        except Exception as error:  # a hook failed: refuse rather than crash the worker
            self._hook_failed(conn, packet, error)
            return
        if waiting is None:
            self._accept(conn, packet, now, None)
        else:
            self.spawn(self._connect_awaiting(conn, packet, *waiting))

    def _run_connect_hooks(self, conn: MQTTConnection, packet: Connect,
                           position: int) -> tuple[int, Awaitable[Any]] | None:
        """Call the ``on_connect`` then ``on_connect_authenticate`` providers from ``position``.

        Raises on a refusal; returns None once all have let the client in, or
        (position, what to await) at the first provider that answered with an awaitable.
        """
        hooks = self.hooks
        providers = hooks.connect_providers
        for position in range(position, len(providers)):
            answer = providers[position](conn, packet)
            if answer is True:
                continue   # lets the client in, from either kind of hook: the usual answer
            # inspect.isawaitable's ABC instance check cost ~2% of a storm's CPU (py-spy):
            # not for None, the other plain answer
            if answer is not None and inspect.isawaitable(answer):
                return position, answer
            _judge_connect_hook(position >= hooks.connect_authenticate_from, answer)
        return None

    async def _connect_awaiting(self, conn: MQTTConnection, packet: Connect,
                                position: int, answer: Awaitable[Any]) -> None:
        """The rest of ``begin_connect`` once a hook answered with an awaitable."""
        try:
            waiting: tuple[int, Awaitable[Any]] | None = (position, answer)
            while waiting is not None:
                position, answer = waiting
                is_authenticate = position >= self.hooks.connect_authenticate_from
                _judge_connect_hook(is_authenticate, await answer)
                waiting = self._run_connect_hooks(conn, packet, position + 1)
            self._accept_awaited(conn, packet, None)
        except BaseException as error:
            self._connect_failed(conn, packet, error)

    async def _connect_with_hooks(self, conn: MQTTConnection, packet: Connect) -> None:
        """A CONNECT with enhanced authentication: hooks and AUTH exchanges, in a task."""
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
            self._accept_awaited(conn, packet, method)
        except BaseException as error:
            self._connect_failed(conn, packet, error)

    def _accept_awaited(self, conn: MQTTConnection, packet: Connect, method: str | None) -> None:
        """Accept after awaiting, unless the connection went away meanwhile; read on."""
        if conn.state is not CONNECTING:
            return
        self._accept(conn, packet, monotonic(), method)
        conn.release_input()

    def _connect_failed(self, conn: MQTTConnection, packet: Connect, error: BaseException) -> None:
        """A CONNECT answered in a task ended in ``error``: refuse it, or close."""
        if isinstance(error, KushiError):
            conn.fail(error)
        elif isinstance(error, (asyncio.CancelledError, TimeoutError)):
            conn.abort()  # server closing, or no AUTH answer in time
        elif isinstance(error, Exception):
            self._hook_failed(conn, packet, error)
        else:
            raise error

    @staticmethod
    def _hook_failed(conn: MQTTConnection, packet: Connect, error: Exception) -> None:
        """A hook raised: refuse the CONNECT rather than crash the worker."""
        log.error("CONNECT of %r failed", packet.client_id, exc_info=error)
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
            if will.properties.response_topic is not None:
                validate_topic_name(will.properties.response_topic)  # [MQTT-3.3.2-14]
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
        if hooks.has.on_session_establish:
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
        if session_present:
            self.detached.discard(client_id)
            session.attach()
            session.protocol_version = version
        else:  # made for this CONNECT: attached, of its version, never in ``detached``
            session = new_session(client_id, version, options.max_queued_messages)
            self.sessions[client_id] = session
        properties = packet.properties
        keep_alive = packet.keep_alive
        if version == MQTT_5:
            requested_expiry = properties.session_expiry_interval or 0
            conn.topic_alias_out_maximum = properties.topic_alias_maximum or 0
            if options.server_keep_alive is not None:
                keep_alive = options.server_keep_alive
        else:
            requested_expiry = 0 if packet.clean_start else NEVER
        # the smaller of two, written out: the builtin min() cost ~500 instructions a call
        # (callgrind), twice per CONNECT
        granted_expiry = options.maximum_session_expiry
        session.expiry_interval = requested_expiry if requested_expiry < granted_expiry else granted_expiry
        conn.requested_session_expiry = requested_expiry
        session.will = packet.will
        session.will_delay = (packet.will.properties.will_delay_interval or 0) if packet.will else 0
        send_quota = properties.receive_maximum or 65535
        inflight_limit = options.maximum_inflight
        session.send_quota_limit = send_quota if send_quota < inflight_limit else inflight_limit
        conn.keep_alive = keep_alive
        conn.session = session
        session.client = conn
        conn.state = CONNECTED
        if keep_alive and 1.5 * keep_alive < options.connect_timeout:
            # filed by its connect timeout; a keep alive that may run out sooner is filed sooner
            self.deadlines.file(conn, conn.timer_deadline())
        self.connections[client_id] = conn
        self._send_connack(conn, packet, session_present, requested_expiry, authentication_method)
        if hooks.has.on_session_established:
            hooks.on_session_established(conn, packet)
        if session_present:
            self.resume(session, conn, now)

    def _send_connack(self, conn: MQTTConnection, packet: Connect, session_present: bool,
                      requested_expiry: int, authentication_method: str | None) -> None:
        """Send the CONNACK of an accepted CONNECT; the common ones are encoded once per broker
        (connection storms)."""
        version = conn.protocol_version
        # 3.1 and 3.1.1 CONNACKs carry no properties: (version, session present) tells them
        # apart, and no record is made unless one must be encoded; v5 ones are keyed by the
        # record (frozen: hashable), properties and all, since they follow options that a
        # reload may change
        if version == MQTT_5:
            connack: Connack | None = Connack(session_present, 0, self._connack_properties(
                conn, packet, requested_expiry, conn.session.expiry_interval, authentication_method))
            key: tuple = (version, connack)
        else:
            connack = None   # made only if it must be encoded
            key = (version, session_present)
        hooks = self.hooks
        through_hooks = hooks.has.on_packet_encode or hooks.has.on_packet_sent
        data = None if through_hooks else self._connack_cache.get(key)
        if data is None:
            if connack is None:
                connack = Connack(session_present, 0, NO_PROPERTIES)
            if through_hooks:
                conn.send(connack)
                return
            data = encode(connack, version)
            if (connack.properties.assigned_client_identifier is None   # unique: never again
                    and len(self._connack_cache) < CONNACK_CACHE_SIZE):
                self._connack_cache[key] = data
        conn.write_at_once(data)   # no flush to schedule for it (connection storms)

    def _connack_properties(self, conn: MQTTConnection, packet: Connect, requested_expiry: int,
                            granted_expiry: int, authentication_method: str | None) -> Properties:
        """The properties of a v5 CONNACK [MQTT-3.2.2-*]."""
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
