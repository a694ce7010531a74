"""The Hook base class: every event of the broker, each a no-op by default.

A hook subclasses ``Hook`` and overrides the events it wants; overriding *is*
the declaration of what it provides. ``HookManager`` (``kushi.hooks.manager``)
looks once, when a hook is added, at which events each hook overrides, so an
event that no hook provides costs the broker one attribute test and nothing
more on the hot path.

Two kinds of events:

* **Filters** return a value the broker uses: they may change a packet (return
  a new one, e.g. ``dataclasses.replace(packet, payload=...)``), refuse it, or
  drop it. The value returned by one hook is passed to the next, in the order
  the hooks were added, plain functions and coroutines alike. Every filter may
  be a coroutine except ``on_packet_encode``:

  - the connect-time filters (``on_connect``, ``on_connect_authenticate``,
    ``on_auth_packet``) are awaited before the broker answers the CONNECT;
  - the message-path filters (``on_packet_read``, ``on_acl_check``,
    ``on_publish``, ``on_subscribe``, ``on_unsubscribe``,
    ``on_select_subscribers``, ``on_will``): once one of them is a coroutine,
    the broker runs them all through ordered async pipelines
    (``kushi.worker.async_filters``): a connection's packets wait, in order and
    with reading paused, until their filters are done; a message waits, behind
    its publisher's earlier ones, until its subscribers' read ACL is known
    (and ``on_select_subscribers`` has chosen them). With no coroutine among
    them the broker calls them inline, as if the pipelines did not exist;
  - ``on_packet_encode`` runs inside every write to a client and must be a
    plain function (docs/hooks.md says why).
* **Notifications** return nothing; a coroutine notification is scheduled as
  a task on the worker's loop.

``client`` is a read-only ``ClientInfo`` view of the connection.
With several workers, hooks are created in the supervisor before the fork and
``init`` runs in each worker: open databases and sockets in ``init``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, Sequence

from ..protocol.packets import (
    Auth, Connect, Packet, Publish, Subscribe, Unsubscribe, Will,
)

if TYPE_CHECKING:
    from .records import StoredClient, StoredMessage, StoredSubscription


class ClientInfo(Protocol):
    """What a hook may read about a connection."""

    client_id: str
    username: str | None
    remote_address: tuple[str, int] | str | None
    protocol_version: int
    listener: str
    clean_start: bool

    @property
    def connected(self) -> bool: ...


class PublishRejected(Exception):
    """Raised by ``on_publish`` to refuse a message with a v5 reason code.

    A QoS 1/2 publisher gets the reason code in PUBACK/PUBREC (v5); a v3
    publisher's message is acknowledged and dropped, as the spec has no way to
    say no.
    """

    def __init__(self, reason_code: int = 0x87, message: str = "") -> None:
        super().__init__(message or f"publish rejected (0x{reason_code:02X})")
        self.reason_code = reason_code


class PublishDropped(Exception):
    """Raised by ``on_publish`` to drop a message silently (acknowledged, not delivered)."""


class Hook:
    """Base class of every hook. Override the events you want; the rest cost nothing."""

    #: a name for logs and for ``Server.hooks``
    id: str = "hook"

    # ---- lifecycle -------------------------------------------------------
    def init(self, config: Any) -> None:
        """Called once in the process that runs the hook (each worker), before serving."""

    def stop(self) -> None:
        """Called when the server stops."""

    def on_started(self, server: Any) -> None:
        """The server has started and its listeners are open."""

    def on_stopped(self, server: Any) -> None:
        """The server has stopped."""

    def on_sys_info_tick(self, info: dict[str, Any]) -> None:
        """Called on each $SYS interval with the broker statistics."""

    # ---- connect and authenticate ----------------------------------------
    def on_connect(self, client: ClientInfo, packet: Connect) -> int | None:
        """A CONNECT arrived. Return a reason code >= 0x80 to refuse it (the
        client gets a CONNACK with that code); None or 0 accepts. May be a coroutine."""
        return None

    def on_connect_authenticate(self, client: ClientInfo, packet: Connect) -> bool:
        """Return True to let the client in. With no hook providing this event the
        server's default applies (allow all, unless configured otherwise). May be a coroutine."""
        return True

    def on_auth_packet(self, client: ClientInfo, packet: Auth) -> Auth | int:
        """Enhanced authentication (v5 AUTH, or a CONNECT with an authentication
        method). Return the AUTH to send back (reason 0x18 continue), or a reason
        code: 0x00 success, >= 0x80 failure. May be a coroutine."""
        return 0x8C

    def on_acl_check(self, client: ClientInfo, topic: str, write: bool) -> bool:
        """May this client publish to (write=True) or receive from (write=False) ``topic``?
        For a subscription, ``topic`` is the filter and write is False. May be a coroutine."""
        return True

    def on_session_establish(self, client: ClientInfo, packet: Connect) -> None:
        """The CONNECT was accepted; the session is about to be created or resumed."""

    def on_session_established(self, client: ClientInfo, packet: Connect) -> None:
        """CONNACK was sent; the session is live."""

    def on_disconnect(self, client: ClientInfo, error: BaseException | None, expire: bool) -> None:
        """The connection closed; ``expire`` is True when the session ends with it."""

    # ---- packets ---------------------------------------------------------
    def on_packet_read(self, client: ClientInfo, packet: Packet) -> Packet:
        """A packet of a connected client was decoded (after CONNACK; CONNECT and the
        connect-time AUTH exchange go to the connect events); return it, possibly changed."""
        return packet

    def on_packet_encode(self, client: ClientInfo, packet: Packet) -> Packet:
        """A packet is about to be encoded for this client; return it, possibly changed.
        Must be a plain function: it runs inside every write to the client."""
        return packet

    def on_packet_sent(self, client: ClientInfo, packet: Packet, data: bytes) -> None:
        """A packet was written to the client's transport."""

    def on_packet_processed(self, client: ClientInfo, packet: Packet, error: BaseException | None) -> None:
        """The broker has finished with an inbound packet of a connected client; ``error`` is
        the exception that ended its handling (the connection then closes), or None."""

    # ---- subscriptions ---------------------------------------------------
    def on_subscribe(self, client: ClientInfo, packet: Subscribe) -> Subscribe:
        """A SUBSCRIBE arrived; return it, possibly changed."""
        return packet

    def on_subscribed(self, client: ClientInfo, packet: Subscribe, reason_codes: Sequence[int]) -> None:
        """SUBACK was sent with these reason codes."""

    def on_select_subscribers(self, subscribers: dict[str, Any], packet: Publish) -> dict[str, Any]:
        """The subscribers (client id -> subscription) chosen for a message; return them, possibly changed."""
        return subscribers

    def on_unsubscribe(self, client: ClientInfo, packet: Unsubscribe) -> Unsubscribe:
        """An UNSUBSCRIBE arrived; return it, possibly changed."""
        return packet

    def on_unsubscribed(self, client: ClientInfo, packet: Unsubscribe) -> None:
        """UNSUBACK was sent."""

    # ---- messages --------------------------------------------------------
    def on_publish(self, client: ClientInfo, packet: Publish) -> Publish:
        """A PUBLISH arrived (after the ACL check). Return it, possibly changed;
        raise ``PublishRejected(reason)`` to refuse it or ``PublishDropped`` to drop it."""
        return packet

    def on_published(self, client: ClientInfo, packet: Publish) -> None:
        """A message was routed to its subscribers."""

    def on_publish_dropped(self, client: ClientInfo, packet: Publish) -> None:
        """A message for this client was dropped (queue full, too large, expired)."""

    def on_retain_message(self, client: ClientInfo, packet: Publish, result: int) -> None:
        """A retained message was stored (result 1), or cleared (result -1)."""

    def on_retain_published(self, client: ClientInfo, packet: Publish) -> None:
        """A retained message was sent to a new subscriber."""

    def on_qos_publish(self, client: ClientInfo, packet: Publish, sent: float, resends: int) -> None:
        """A QoS 1/2 message was sent to the client and is now in flight."""

    def on_qos_complete(self, client: ClientInfo, packet: Packet) -> None:
        """A QoS 1/2 flow to the client completed (PUBACK or PUBCOMP)."""

    def on_qos_dropped(self, client: ClientInfo, packet: Publish) -> None:
        """An in-flight QoS 1/2 message was dropped (expired, session ended)."""

    def on_packet_id_exhausted(self, client: ClientInfo, packet: Publish) -> None:
        """No free packet identifier was left for a message to this client."""

    def on_will(self, client: ClientInfo, will: Will) -> Will:
        """A will is about to be published; return it, possibly changed."""
        return will

    def on_will_sent(self, client: ClientInfo, packet: Publish) -> None:
        """A will was published."""

    def on_client_expired(self, client_id: str) -> None:
        """A session expired and was removed."""

    def on_retained_expired(self, topic: str) -> None:
        """A retained message expired and was removed."""

    # ---- storage loaders (used at start to restore state; may be coroutines) ----
    def stored_clients(self) -> list[StoredClient]:
        """Persistent sessions to restore at start: ``kushi.hooks.records.StoredClient``."""
        return []

    def stored_subscriptions(self) -> list[StoredSubscription]:
        """Their subscriptions: ``StoredSubscription`` records."""
        return []

    def stored_inflight(self) -> list[StoredMessage]:
        """Their queued and in-flight messages, in order: ``StoredMessage`` records."""
        return []

    def stored_retained(self) -> list[Publish]:
        """Retained messages: ``kushi.Publish`` records (retain set, remaining expiry)."""
        return []


FILTER_EVENTS = frozenset({
    "on_connect", "on_connect_authenticate", "on_auth_packet", "on_acl_check",
    "on_packet_read", "on_packet_encode", "on_subscribe", "on_select_subscribers",
    "on_unsubscribe", "on_publish", "on_will",
})
MESSAGE_PATH_FILTER_EVENTS = frozenset({
    "on_acl_check", "on_packet_read", "on_subscribe", "on_select_subscribers",
    "on_unsubscribe", "on_publish", "on_will",
})
"""Filters that may be coroutines; one coroutine among them switches on the async pipelines."""
ASYNC_FILTER_EVENTS = frozenset({"on_connect", "on_connect_authenticate", "on_auth_packet"}
                                | MESSAGE_PATH_FILTER_EVENTS)
"""The filters that may be coroutines: all but ``on_packet_encode``."""
EVENTS = frozenset(
    name for name in vars(Hook) if name.startswith("on_") or name.startswith("stored_")
)
