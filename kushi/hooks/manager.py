"""HookManager: runs the hooks of one broker, in the order they were added.

The broker owns one ``HookManager``. When a hook is added, the manager looks
once at which events the hook's class overrides (see ``kushi.hooks.base``) and
keeps, per event, the list of callables that provide it. The broker calls an
event only when some hook provides it, so an event nobody provides costs
nothing more: the message path reads ``hooks.has.EVENT`` (a flag set when a
hook for it is added), the rest asks ``provides(event)``.

The kinds of events and how they run:

* **Filters** chain: the value one hook returns is passed to the next. A hook
  that returns ``None`` leaves the value unchanged (an easy mistake in a
  plain function; it should not crash the message path). An exception raised
  by a filter propagates to the broker, which decides (e.g. ``PublishRejected``).
* **Connect-time filters** (``on_connect``, ``on_connect_authenticate``,
  ``on_auth_packet``) are ``async def`` here: they await hooks that are
  coroutines and call the others directly.
* **Message-path filters** (``MESSAGE_PATH_FILTER_EVENTS``) are called by the
  broker in the middle of its synchronous work. As long as they are all plain
  functions, the manager's method of each runs the chain there and then. The
  first coroutine registered for one of them switches the manager to
  *awaiting* (``awaiting``; ``when_awaiting`` tells the broker, which then
  routes packets and messages through ``kushi.worker.async_filters``). From
  then on the pipelines compute every message-path filter ahead, with
  ``resolve_chain``/``resolve_acl``/``resolve_select`` (plain hooks called,
  coroutines awaited, in the order added), and hand the results to the
  broker's unchanged synchronous code with ``answering(answers)``: inside it,
  the manager's methods of those events (replaced on the instance, so a manager
  that never awaits pays nothing) return the prepared answers. A read ACL that
  was not prepared (a subscription made while the message waited) refuses.
  ``on_packet_encode`` runs inside every write and stays a plain function.
* **Notifications** return nothing. A plain hook is called directly; a
  coroutine hook is scheduled as a task on the running loop (the manager keeps
  a reference to each task until it ends, so none is garbage-collected midway).
  An exception in a notification is logged and never reaches the broker.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any, Callable, Sequence

from ..errors import ConfigurationError, KushiError
from ..protocol.packets import (
    Auth, Connect, Packet, Publish, Subscribe, Unsubscribe, Will,
)
from .base import (
    ASYNC_FILTER_EVENTS, EVENTS, FILTER_EVENTS, MESSAGE_PATH_FILTER_EVENTS, ClientInfo, Hook,
)

log = logging.getLogger("kushi.hooks")

#: Events that must be plain functions: a coroutine is refused for them (``on_packet_encode``).
SYNC_ONLY_EVENTS = frozenset(FILTER_EVENTS - ASYNC_FILTER_EVENTS)

#: The filters the pipelines prepare as ``(value given, value returned or exception)``.
CHAINED_EVENTS = ("on_packet_read", "on_publish", "on_subscribe", "on_unsubscribe", "on_will")

#: What ``on_auth_packet`` answers when no hook knows the authentication method.
BAD_AUTHENTICATION_METHOD = 0x8C


def _name_of(provider: Callable[..., Any]) -> str:
    """A readable name for a hook callable, for errors and logs."""
    owner = getattr(provider, "__self__", None)
    if owner is not None:
        return f"{getattr(owner, 'id', type(owner).__name__)}.{provider.__name__}"
    return getattr(provider, "__qualname__", repr(provider))


async def _result_of(value: Any) -> Any:
    """The value a hook returned, awaited first if the hook was a coroutine."""
    if inspect.isawaitable(value):
        return await value
    return value


class ProvidedEvents:
    """One flag per event, True once a hook provides it: ``hooks.has.on_acl_check``.

    The message path asks about ~10 events per message (ACL, packet hooks, QoS
    hooks); as ``provides()`` calls they were 7% of the instructions per message
    of one PUBLISH per read (callgrind, ``benchmarks/profile_hotpath.py SP``), an
    attribute read costs a fraction of that. Events are only ever added, never
    removed, so a flag never goes back to False.
    """

    __slots__ = tuple(sorted(EVENTS))

    def __init__(self) -> None:
        for event in EVENTS:
            setattr(self, event, False)


class HookManager:
    """The hooks of one broker, and one method per event that runs them in order."""

    def __init__(self) -> None:
        self._hooks: list[tuple[Hook, object | None]] = []
        self._providers: dict[str, list[Callable[..., Any]]] = {event: [] for event in EVENTS}
        self._provided: set[str] = set()
        #: the connect-time providers as the broker calls them, kept up to date by ``_register``
        #: (one tuple read per CONNECT instead of two ``providers()`` calls and a list built):
        #: the ``on_connect`` ones, then the ``on_connect_authenticate`` ones from
        #: ``connect_authenticate_from`` on
        self.connect_providers: tuple[Callable[..., Any], ...] = ()
        self.connect_authenticate_from = 0
        #: ``has.EVENT``: does a hook provide EVENT (``provides``, as an attribute for the hot path)
        self.has = ProvidedEvents()
        self._tasks: set[asyncio.Task[Any]] = set()
        #: True once a message-path filter is a coroutine (see the module docstring)
        self.awaiting = False
        self._awaiting_listeners: list[Callable[[], None]] = []
        self._answers: dict[Any, Any] = {}

    # ---- registering --------------------------------------------------------
    @property
    def hooks(self) -> list[Hook]:
        """The hooks added, in order."""
        return [hook for hook, _ in self._hooks]

    def add(self, hook: Hook, config: object | None = None) -> None:
        """Add a hook; it provides every event its class overrides.

        Nothing of the hook is called here: ``config`` is kept for ``init_all()``.
        Raises ``ConfigurationError`` if ``on_packet_encode`` or a storage loader is a coroutine.
        """
        overridden = [
            event for event in sorted(EVENTS)
            if getattr(type(hook), event, None) not in (None, getattr(Hook, event))
        ]
        for event in overridden:  # check all first, so a refused hook is not half-added
            self._refuse_coroutine(event, getattr(hook, event))
        self._hooks.append((hook, config))
        for event in overridden:
            self._register(event, getattr(hook, event))

    def on(self, event: str, function: Callable[..., Any]) -> None:
        """Register a plain function (or coroutine function) for one event.

        It takes the same arguments as the ``Hook`` method of that name, minus
        ``self``, and runs after the hooks and functions added before it.
        """
        if event not in EVENTS:
            raise ConfigurationError(f"unknown hook event {event!r}")
        self._refuse_coroutine(event, function)
        self._register(event, function)

    def provides(self, event: str) -> bool:
        """True if at least one hook provides ``event``; the broker asks this before calling
        (``has.EVENT`` answers the same on the message path)."""
        return event in self._provided

    def providers(self, event: str) -> list[Callable[..., Any]]:
        """The functions registered for ``event``, in order (the broker runs the connect-time
        hooks one by one itself, so that a CONNECT whose hooks are plain functions needs no task)."""
        return self._providers[event]

    def _register(self, event: str, function: Callable[..., Any]) -> None:
        self._providers[event].append(function)
        self._provided.add(event)
        if event in ("on_connect", "on_connect_authenticate"):
            on_connect = self._providers["on_connect"]
            self.connect_providers = (*on_connect, *self._providers["on_connect_authenticate"])
            self.connect_authenticate_from = len(on_connect)
        setattr(self.has, event, True)
        if (not self.awaiting and event in MESSAGE_PATH_FILTER_EVENTS
                and inspect.iscoroutinefunction(function)):
            self._start_awaiting()

    @staticmethod
    def _refuse_coroutine(event: str, function: Callable[..., Any]) -> None:
        if event in SYNC_ONLY_EVENTS and inspect.iscoroutinefunction(function):
            why = ("it runs inside every write to a client (acknowledgements, deliveries, the "
                   "DISCONNECT of a failing connection), where the broker cannot wait; "
                   "see docs/hooks.md")
            raise ConfigurationError(
                f"{_name_of(function)} is a coroutine, but {event} must be a plain function: {why}"
            )

    # ---- awaiting: the message-path filters computed ahead by the pipelines -----------
    def when_awaiting(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` when the manager is awaiting: now if it is, else once it becomes so.

        The broker installs its async pipelines this way, also for a coroutine hook
        registered after the server started.
        """
        if self.awaiting:
            callback()
        else:
            self._awaiting_listeners.append(callback)

    def _start_awaiting(self) -> None:
        """Answer the message-path filters from prepared answers from now on (see ``answering``)."""
        self.awaiting = True
        self.on_acl_check = self._answered_acl_check  # type: ignore[method-assign]
        self.on_select_subscribers = self._answered_selection  # type: ignore[method-assign]
        for event in CHAINED_EVENTS:
            setattr(self, event, self._answered_chain(event))
        listeners, self._awaiting_listeners = self._awaiting_listeners, []
        for callback in listeners:
            callback()

    def answering(self, answers: dict[Any, Any]) -> _Answering:
        """``with hooks.answering(answers):`` the answered events return ``answers`` within.

        Keys: ``acl_key(client, topic, write)`` -> bool (or the exception a hook raised, raised
        again); an event of ``CHAINED_EVENTS`` ->
        ``(value given, value returned or the exception raised)``; ``"on_select_subscribers"``
        -> the selected subscribers. Nested uses see the answers of the outer ones too.
        """
        return _Answering(self, answers)

    @staticmethod
    def acl_key(client: Any, topic: str, write: bool) -> tuple[str | None, str, bool]:
        """The key of an ACL answer: by client id, so a client that reconnected while its
        message waited keeps its answer."""
        return getattr(client, "client_id", None), topic, write

    def _answered_acl_check(self, client: ClientInfo, topic: str, write: bool) -> bool:
        answer = self._answers.get(self.acl_key(client, topic, write))
        if answer is True:
            return True
        if isinstance(answer, BaseException):
            raise answer
        return False

    def _answered_selection(self, subscribers: dict[str, Any], packet: Publish) -> dict[str, Any]:
        selected = self._answers.get("on_select_subscribers")
        if selected is None:
            log.error("on_select_subscribers for %r was not resolved ahead: nobody selected",
                      packet.topic)
            return {}
        return selected

    def _answered_chain(self, event: str) -> Callable[[ClientInfo, Any], Any]:
        def answered(client: ClientInfo, value: Any) -> Any:
            answer = self._answers.get(event)
            if answer is None:
                raise KushiError(f"{event} was not resolved ahead (a bug)", reason_code=0x83)
            given, result = answer
            if isinstance(result, BaseException):
                raise result
            return value if result is given else result  # unchanged: the broker's own object
        answered.__name__ = event
        return answered

    async def resolve_chain(self, event: str, client: ClientInfo, value: Any) -> Any:
        """Run a chained filter the way the pipelines do: plain hooks called, coroutines awaited."""
        for provider in self._providers[event]:
            result = await _result_of(provider(client, value))
            if result is not None:
                value = result
        return value

    async def resolve_acl(self, client: ClientInfo, topic: str, write: bool) -> bool:
        """``on_acl_check`` with coroutines awaited: True only if every provider allows."""
        for provider in self._providers["on_acl_check"]:
            if await _result_of(provider(client, topic, write)) is not True:
                return False
        return True

    async def resolve_select(self, subscribers: dict[str, Any], packet: Publish) -> dict[str, Any]:
        """``on_select_subscribers`` with coroutines awaited."""
        for provider in self._providers["on_select_subscribers"]:
            result = await _result_of(provider(subscribers, packet))
            if result is not None:
                subscribers = result
        return subscribers

    # ---- lifecycle ----------------------------------------------------------
    def init_all(self) -> None:
        """Run each hook's ``init(config)`` with the config it was added with, in order.

        With several workers this runs in each worker process (hooks are
        created in the supervisor before the fork), so a hook opens its
        database connections and sockets in ``init``, never in ``__init__``.
        An exception propagates: a hook that cannot start stops the server.
        """
        for hook, config in self._hooks:
            hook.init(config)

    def stop_all(self) -> None:
        """Run each hook's ``stop()``; a failing hook is logged and the others still stop."""
        for hook, _ in self._hooks:
            try:
                hook.stop()
            except Exception:
                log.exception("hook %s failed to stop", getattr(hook, "id", hook))

    def reload_all(self) -> bool:
        """Call ``reload()`` on every hook that has one (e.g. on SIGHUP).

        Returns False if any hook kept its old rules because its file could not be read.
        """
        reloaded = True
        for hook, _ in self._hooks:
            reload = getattr(hook, "reload", None)
            if callable(reload) and reload() is False:
                reloaded = False
        return reloaded

    # ---- how filters and notifications run ----------------------------------
    def _chain(self, event: str, client: ClientInfo, value: Any) -> Any:
        """Pass ``value`` through every provider of a filter event, in order."""
        for provider in self._providers[event]:
            result = provider(client, value)
            if result is not None:
                value = result
        return value

    def _notify(self, event: str, *args: Any) -> None:
        """Call every provider of a notification; errors are logged, coroutines scheduled."""
        for provider in self._providers[event]:
            try:
                result = provider(*args)
                if inspect.iscoroutine(result):
                    self._schedule(result, event)
            except Exception:
                log.exception("hook %s failed in %s", _name_of(provider), event)

    def _schedule(self, coroutine: Any, event: str) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            coroutine.close()
            log.error("coroutine hook for %s called with no running event loop; skipped", event)
            return
        task = loop.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("hook task %s failed", task.get_coro(), exc_info=task.exception())

    async def wait_tasks(self) -> None:
        """Wait for the notification tasks still running (used when the server stops)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _collect(self, event: str) -> list[Any]:
        """Concatenate what every provider of a storage loader returns (awaited if a coroutine:
        the loaders run while the server starts, before it serves, so they may do I/O)."""
        collected: list[Any] = []
        for provider in self._providers[event]:
            result = provider()
            if inspect.isawaitable(result):
                result = await result
            collected.extend(result or ())
        return collected

    # ---- lifecycle notifications --------------------------------------------
    def on_started(self, server: Any) -> None:
        self._notify("on_started", server)

    def on_stopped(self, server: Any) -> None:
        self._notify("on_stopped", server)

    def on_sys_info_tick(self, info: dict[str, Any]) -> None:
        self._notify("on_sys_info_tick", info)

    # ---- connect and authenticate (awaited) ---------------------------------
    async def on_connect(self, client: ClientInfo, packet: Connect) -> int | None:
        """The first hook returning a reason code >= 0x80 refuses the CONNECT; None accepts."""
        for provider in self._providers["on_connect"]:
            reason_code = await _result_of(provider(client, packet))
            if reason_code is not None and reason_code >= 0x80:
                return reason_code
        return None

    async def on_connect_authenticate(self, client: ClientInfo, packet: Connect) -> bool:
        """True if every provider lets the client in (True when no hook provides the event)."""
        for provider in self._providers["on_connect_authenticate"]:
            if await _result_of(provider(client, packet)) is not True:
                return False
        return True

    async def on_auth_packet(self, client: ClientInfo, packet: Auth) -> Auth | int:
        """Enhanced authentication: the first hook that knows the method answers.

        A hook that does not know the authentication method returns 0x8C (the
        ``Hook`` default); the next one is asked. With no hook answering, 0x8C.
        """
        for provider in self._providers["on_auth_packet"]:
            answer = await _result_of(provider(client, packet))
            if answer != BAD_AUTHENTICATION_METHOD:
                return answer
        return BAD_AUTHENTICATION_METHOD

    def on_acl_check(self, client: ClientInfo, topic: str, write: bool) -> bool:
        """True only if every provider allows; the first refusal stops the check."""
        for provider in self._providers["on_acl_check"]:
            if provider(client, topic, write) is not True:
                return False
        return True

    def on_session_establish(self, client: ClientInfo, packet: Connect) -> None:
        self._notify("on_session_establish", client, packet)

    def on_session_established(self, client: ClientInfo, packet: Connect) -> None:
        self._notify("on_session_established", client, packet)

    def on_disconnect(self, client: ClientInfo, error: BaseException | None, expire: bool) -> None:
        self._notify("on_disconnect", client, error, expire)

    # ---- packets ------------------------------------------------------------
    def on_packet_read(self, client: ClientInfo, packet: Packet) -> Packet:
        return self._chain("on_packet_read", client, packet)

    def on_packet_encode(self, client: ClientInfo, packet: Packet) -> Packet:
        return self._chain("on_packet_encode", client, packet)

    def on_packet_sent(self, client: ClientInfo, packet: Packet, data: bytes) -> None:
        self._notify("on_packet_sent", client, packet, data)

    def on_packet_processed(self, client: ClientInfo, packet: Packet, error: BaseException | None) -> None:
        self._notify("on_packet_processed", client, packet, error)

    # ---- subscriptions ------------------------------------------------------
    def on_subscribe(self, client: ClientInfo, packet: Subscribe) -> Subscribe:
        return self._chain("on_subscribe", client, packet)

    def on_subscribed(self, client: ClientInfo, packet: Subscribe, reason_codes: Sequence[int]) -> None:
        self._notify("on_subscribed", client, packet, reason_codes)

    def on_select_subscribers(self, subscribers: dict[str, Any], packet: Publish) -> dict[str, Any]:
        for provider in self._providers["on_select_subscribers"]:
            result = provider(subscribers, packet)
            if result is not None:
                subscribers = result
        return subscribers

    def on_unsubscribe(self, client: ClientInfo, packet: Unsubscribe) -> Unsubscribe:
        return self._chain("on_unsubscribe", client, packet)

    def on_unsubscribed(self, client: ClientInfo, packet: Unsubscribe) -> None:
        self._notify("on_unsubscribed", client, packet)

    # ---- messages -----------------------------------------------------------
    def on_publish(self, client: ClientInfo, packet: Publish) -> Publish:
        """Chain the message through the hooks; ``PublishRejected``/``PublishDropped`` propagate."""
        return self._chain("on_publish", client, packet)

    def on_published(self, client: ClientInfo, packet: Publish) -> None:
        self._notify("on_published", client, packet)

    def on_publish_dropped(self, client: ClientInfo, packet: Publish) -> None:
        self._notify("on_publish_dropped", client, packet)

    def on_retain_message(self, client: ClientInfo, packet: Publish, result: int) -> None:
        self._notify("on_retain_message", client, packet, result)

    def on_retain_published(self, client: ClientInfo, packet: Publish) -> None:
        self._notify("on_retain_published", client, packet)

    def on_qos_publish(self, client: ClientInfo, packet: Publish, sent: float, resends: int) -> None:
        self._notify("on_qos_publish", client, packet, sent, resends)

    def on_qos_complete(self, client: ClientInfo, packet: Packet) -> None:
        self._notify("on_qos_complete", client, packet)

    def on_qos_dropped(self, client: ClientInfo, packet: Publish) -> None:
        self._notify("on_qos_dropped", client, packet)

    def on_packet_id_exhausted(self, client: ClientInfo, packet: Publish) -> None:
        self._notify("on_packet_id_exhausted", client, packet)

    def on_will(self, client: ClientInfo, will: Will) -> Will:
        return self._chain("on_will", client, will)

    def on_will_sent(self, client: ClientInfo, packet: Publish) -> None:
        self._notify("on_will_sent", client, packet)

    def on_client_expired(self, client_id: str) -> None:
        self._notify("on_client_expired", client_id)

    def on_retained_expired(self, topic: str) -> None:
        self._notify("on_retained_expired", topic)

    # ---- storage loaders ----------------------------------------------------
    async def stored_clients(self) -> list[Any]:
        return await self._collect("stored_clients")

    async def stored_subscriptions(self) -> list[Any]:
        return await self._collect("stored_subscriptions")

    async def stored_inflight(self) -> list[Any]:
        return await self._collect("stored_inflight")

    async def stored_retained(self) -> list[Any]:
        return await self._collect("stored_retained")


class _Answering:
    """The context of ``HookManager.answering``: prepared answers in force, then the previous ones."""

    __slots__ = ("manager", "answers", "previous")

    def __init__(self, manager: HookManager, answers: dict[Any, Any]) -> None:
        self.manager = manager
        self.answers = answers
        self.previous: dict[Any, Any] = {}

    def __enter__(self) -> None:
        self.previous = self.manager._answers
        self.manager._answers = {**self.previous, **self.answers} if self.previous else self.answers

    def __exit__(self, *exc_info: object) -> None:
        self.manager._answers = self.previous
