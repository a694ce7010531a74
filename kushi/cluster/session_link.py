"""SessionLink: a worker's side of sessions that move between workers.

Used by ``kushi.cluster.session_hook`` (on the CONNECT path) and
``kushi.cluster.handover`` (forwarding during a hand-over):

- ``claim``: before a CONNACK, ask the session directory (the supervisor) to
  record this worker as the holder of the client id, with the connection's
  will; if another worker held the session, ask it over request/reply to
  give it up (``takeover``) and return it. ``claim_without_waiting``: the
  same for a clean start without a will, whose CONNACK need not wait for it.
- ``forward_to_client`` / ``deliver_early``: messages the previous holder
  forwards for the moved client ("pub-for"), kept until the session is here.
- ``handover_done``: tell the previous holder the client's new place is known
  everywhere, so it may stop forwarding; ``forwarding_ended``: the previous
  holder's answer once it has.
- *Windows* (exactly once at QoS 2 across a hand-over): from the takeover
  until the previous holder has stopped forwarding and every node has
  answered a barrier after that, a message can reach the arrived session
  twice, forwarded and directly. A window remembers the ids
  (``kushi.cluster.wire.MessageId``) of the messages the session got in that
  time, from either path, and each later copy is dropped: the forwarded
  path here; the direct path where the broker hands the message to the
  session (``first_delivery``, see ``kushi.cluster.handover``), or, for a
  message published on this worker, when it goes on the bus (``arrived``).
  The window and its
  ids are forgotten when it closes (at the latest ``WINDOW_AT_MOST`` after).
- ``session_ended`` / ``will_cleared``: keep the directory up to date.

The *sink* (set by ``BusFabric.attach``) may have ``export_session(client_id,
new_node) -> Session | None`` (close the client's connection here with 0x8E,
give the session up, forward its messages to ``new_node`` for a while) and
``deliver_to_session(client_id, qos, retain, identifiers, message) -> bool``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack

from ..protocol.packets import Publish
from ..protocol.topics import parse_shared, topic_matches
from ..router.bus import Bus, BusError
from .session_transfer import session_from_wire, session_to_wire, will_to_wire
from .wire import MessageId, decode_message, encode_message

log = logging.getLogger("kushi.cluster")

CLAIM = "claim"              # request to the directory: this node holds these client ids' sessions now
TAKEOVER = "takeover"        # request to the previous holder: hand the session over
RELEASE = "release"          # to the directory: the session ended here
WILL_CLEARED = "will-"       # to the directory: that will must not be sent any more
PUBLISH_FOR = "pub-for"      # a message for one moved client, forwarded by its previous holder
HANDOVER_DONE = "moved"      # to the previous holder: the client's new place is known everywhere
FORWARDING_ENDED = "fwd-end" # to the new holder: no more "pub-for" for that client from here
EARLY_LIMIT = 10_000         # forwarded messages kept for a session that has not arrived yet
WINDOW_AT_MOST = 45.0        # seconds a window lives if forwarding_ended never comes (> FORWARD_AT_MOST)
TAKEOVER_TIMEOUT = 5.0       # seconds a CONNECT waits for the previous holder to give the session up
CLAIM_GATHER = 0.005         # seconds claims no CONNECT waits for, and releases, gather before they go
DIRECTORY = "sup"            # the node keeping the session directory (the supervisor)
ADOPT = "adopt"              # request to the directory: may this node restore these stored sessions?


@dataclass
class TakenOver:
    """A session brought here from ``node`` by a takeover."""

    session: Any
    node: str


Forwarded = tuple   # (message id, QoS, retain, subscription identifiers, message)


@dataclass
class _Window:
    """A session arriving here: the messages it got while copies may come on two paths."""

    session: Any = None          # set once the session is installed here
    delivered: set[MessageId] = field(default_factory=set)
    early: list[Forwarded] = field(default_factory=list)   # forwarded before the session was here
    timer: asyncio.TimerHandle | None = None

    def gets(self, topic: str) -> bool:
        """Does a plain subscription of the session match ``topic`` (so routing gives it the message)?"""
        for filter in self.session.subscriptions:
            if topic_matches(filter, topic) and parse_shared(filter)[0] is None:
                return True
        return False


@dataclass
class HandOverStats:
    duplicates_dropped: int = 0  # copies of a message the arrived session had already
    stale_dropped: int = 0       # forwarded messages for a client with no hand-over here


class SessionLink:
    """Claims, takeovers and hand-over forwarding for the node of ``bus``."""

    def __init__(self, bus: Bus, directory: str = DIRECTORY) -> None:
        self.bus = bus
        self.directory = directory
        self.sink: Any = None
        self.on_handover_done: Callable[[str], Awaitable[None]] | None = None
        # set by the worker's HandOver: called when the first window opens (True), the last closes
        self.on_windows: Callable[[bool], None] | None = None
        self.on_arriving: Callable[[str], None] | None = None   # a session is being brought here
        self.barrier: Callable[[], Awaitable[None]] | None = None   # the fabric's
        self.routed: Callable[[], Awaitable[None]] | None = None    # the HandOver's
        self.windows: dict[str, _Window] = {}    # client id -> its hand-over window here
        self.stats = HandOverStats()
        self._claims: dict[str, int] = {}       # client id -> generation of our claim
        # claims waiting to go, sent as one request (connection storms): each claim's wire
        # form (``_queue_claim``), and beside it what its answer is for (a future, or the
        # on_taken of a claim without waiting); two lists, no record per claim
        self._claim_wire: list[Any] = []
        self._claim_then: list[Any] = []
        self._claim_tasks: set[asyncio.Task[None]] = set()
        self._claims_in_flight = False
        self._claims_awaited = False                    # a queued claim has a CONNECT waiting
        self._claim_timer: asyncio.TimerHandle | None = None   # the gathered claims' send
        self._claim_number = 0                          # numbers our claims, in order
        self._unanswered: dict[str, int] = {}           # client id -> its latest claim not answered yet
        self._release_when_answered: set[int] = set()   # claims whose session ended before the answer
        self._releases: list[Any] = []   # sessions ended, gathered: [client id, generation, ...]
        self._wills_kept: set[str] = set()   # client ids whose will the directory keeps for us
        bus.serve(TAKEOVER, self._serve_takeover)
        bus.on(PUBLISH_FOR, self._on_publish_for)
        bus.on(HANDOVER_DONE, self._on_handover_done)
        bus.on(FORWARDING_ENDED, self._on_forwarding_ended)

    async def claim(self, client_id: str, clean_start: bool, will: Any = None,
                            session_expiry: int = 0) -> TakenOver | None:
        """Before a CONNACK: make this node the holder of ``client_id``'s session.

        The directory records the connection's ``will`` (a Will, or None) in the
        same step, so every client that gets a CONNACK has its will kept where
        a crash of this worker cannot take it.

        Returns the session taken over from the worker that held it (a
        ``kushi.worker.session.Session``; its connection there got 0x8E), or
        None when no other worker held one. The directory decides races: of
        two concurrent claims the later wins, and takes over from the earlier.
        Once the session is installed and its interest known everywhere, call
        ``handover_done`` so the previous holder stops forwarding.
        """
        held_will = None
        if will is not None:
            held_will = (will_to_wire(will), will.properties.will_delay_interval or 0, session_expiry)
            self._wills_kept.add(client_id)
        else:
            self._wills_kept.discard(client_id)   # the directory drops an earlier connection's
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue_claim(client_id, (client_id, clean_start, held_will), answer)
        self._claims_awaited = True
        self._schedule_claims()
        previous = await answer
        if not self._held_elsewhere(previous):
            return None   # nobody else held it, or its holder has left the bus with it
        return await self._take_over(client_id, clean_start, previous)

    def claim_without_waiting(self, client_id: str,
                              on_taken: Callable[[TakenOver], None]) -> None:
        """A clean start without a will: claim ``client_id``, and let the CONNACK go at once.

        Nothing in such a CONNACK depends on the directory's answer (session
        present is 0 whatever another worker held, and there is no will to keep
        safe first), so the client does not wait a round trip for it: in a
        connection storm the claims go in batches while the CONNACKs go out
        (benchmarks/PROFILE.md, S5).

        The claim is recorded only if no other worker holds the client id
        (a client id alone, for ``SessionDirectory.claim_all``): the usual case, a new
        client. If one does, nothing is recorded, and if the connection here is
        still there when that answer comes, an ordinary claim follows: the
        session there is taken over (its connection gets 0x8E), a moment after
        this CONNACK rather than before it, and handed to ``on_taken``, which
        ends it. A connection already gone by then claims nothing: it must not
        take over a newer connection that reached the directory first.
        """
        self._wills_kept.discard(client_id)
        # a client id alone is the wire form of a clean start without a will, only if free
        self._queue_claim(client_id, client_id, on_taken)
        if self._claim_timer is None and not self._claims_in_flight:
            self._claim_timer = asyncio.get_running_loop().call_later(CLAIM_GATHER, self._send_claims)

    async def _claim_after_connack(self, client_id: str,
                                   on_taken: Callable[[TakenOver], None]) -> None:
        """The client id was held elsewhere when a clean start claimed it without waiting."""
        taken = await self.claim(client_id, clean_start=True)
        if taken is not None:
            on_taken(taken)

    def _held_elsewhere(self, previous: str | None) -> bool:
        """Did the directory name another worker, still on the bus, as the previous holder?"""
        return previous is not None and previous != self.bus.name and previous in self.bus.peers

    async def _take_over(self, client_id: str, clean_start: bool, previous: str) -> TakenOver | None:
        """Ask ``previous`` to hand ``client_id``'s session over; None if it had none."""
        if self.on_arriving is not None:
            self.on_arriving(client_id)
        self._close_window(client_id)
        window = self.windows[client_id] = _Window()   # forwarded messages may come from now on
        if len(self.windows) == 1 and self.on_windows is not None:
            self.on_windows(True)
        try:
            body = await self.bus.request(previous, TAKEOVER, client_id.encode(),
                                          timeout=TAKEOVER_TIMEOUT)
        except BusError as exc:
            log.warning("no takeover of %r from %s: %s", client_id, previous, exc)
            body = b""
        session = session_from_wire(body, time.monotonic()) if body else None
        if session is None or clean_start or self.windows.get(client_id) is not window:
            # no session arrives: a clean start's new one never gets what the old one was sent
            self._close_window(client_id, window)
            return None if session is None else TakenOver(session, previous)
        window.session = session   # the caller installs it before anything else can run
        window.timer = asyncio.get_running_loop().call_later(WINDOW_AT_MOST, self._close_window,
                                                             client_id, window)
        return TakenOver(session, previous)

    # ---- claims on the wire: batched, answered in order ------------------------
    def _queue_claim(self, client_id: str, claim: Any, then: Any) -> None:
        """Queue ``claim``, the wire form of ``client_id``'s claim, for the directory: (client
        id, clean start, will), whose ``then`` is the future that gets the previous holder
        (``claim``), or the client id alone, whose ``then`` is the on_taken of
        ``claim_without_waiting``.

        Claims go in order, batched like Nagle's algorithm: with no claim request
        in flight, the claims of this loop iteration go at once as one request;
        while one is in flight, the next ones wait for its answer and then go
        together. A lone CONNECT waits for nothing more; a storm of them costs one
        round trip per batch, not one per client (benchmarks/PROFILE.md, S5).
        Claims no CONNECT waits for (``claim_without_waiting``) gather for up to
        ``CLAIM_GATHER`` first: each request costs both ends far more than a claim
        in it does. The claims of a batch are numbered in order, so the batch keeps
        only the first number.
        """
        self._claim_number += 1
        self._unanswered[client_id] = self._claim_number
        self._claim_wire.append(claim)
        self._claim_then.append(then)

    def _schedule_claims(self) -> None:
        """Send the queued claims when their time comes (none go while a request is in flight)."""
        if self._claims_in_flight or not self._claim_wire:
            return
        loop = asyncio.get_running_loop()
        if self._claims_awaited:
            if self._claim_timer is not None:
                self._claim_timer.cancel()
                self._claim_timer = None
            self._claims_in_flight = True
            loop.call_soon(self._send_claims)
        elif self._claim_timer is None:
            self._claim_timer = loop.call_later(CLAIM_GATHER, self._send_claims)

    def _send_claims(self) -> None:
        """One request for the queued claims, answered to ``_claims_answered`` (no task: a
        storm sends a few hundred a second)."""
        self._claim_timer = None
        self._claims_in_flight = True
        awaited, self._claims_awaited = self._claims_awaited, False
        wire, self._claim_wire = self._claim_wire, []
        then, self._claim_then = self._claim_then, []
        on_answer = functools.partial(self._claims_answered, wire, then, awaited,
                                      self._claim_number - len(wire) + 1)
        try:
            self.bus.ask(self.directory, CLAIM, msgpack.packb(wire), on_answer)
        except Exception as exc:   # the bus closing
            on_answer(None, exc)

    def _claims_answered(self, wire: list[Any], then: list[Any], awaited: bool, first_number: int,
                         reply: bytes | None, error: BaseException | None) -> None:
        """The directory's answer to one batch of claims (numbered from ``first_number``), or
        the request's failure (``error``: every claim of the batch fails)."""
        try:
            if error is None:
                try:
                    first_generation, not_free = msgpack.unpackb(reply)
                except Exception as exc:
                    error = exc
            if error is None:
                self._answered(wire, then, awaited, first_number, first_generation, not_free, None)
            else:
                self._answered(wire, then, awaited, first_number, None, [], error)
        finally:
            self._claims_in_flight = False
            self._schedule_claims()   # what came meanwhile: the next batch

    def _answered(self, wire: list[Any], then: list[Any], awaited: bool, number: int,
                  generation: int | None, not_free: list[Any], error: BaseException | None) -> None:
        """The directory answered the batch ``wire`` (``SessionDirectory.claim_all``: the claims
        recorded took the generations from ``generation`` on; ``not_free``: [index, holder, ...]
        of those whose client id another worker held), or failed (``generation`` None);
        ``awaited``: some claim of the batch has a CONNECT waiting (not a client id alone).

        Each claim still the latest of its client id here records its generation. A session
        that ended here before the answer came is released now, with the generation to name.
        A waiting claim gets the holder; a claim without waiting whose client id was held
        elsewhere (not recorded), and whose connection is still here, claims again, waiting.
        No call per claim, and a storm's ordinary batch takes the short loop first: a
        connection storm has thousands answered a second.
        """
        unanswered = self._unanswered
        claims = self._claims
        ended = self._release_when_answered
        if generation is not None and not awaited and not not_free and not ended:
            # a storm's batch: client ids alone, every one recorded, no session ended meanwhile
            for client_id in wire:
                if unanswered.get(client_id) == number:
                    del unanswered[client_id]
                    claims[client_id] = generation
                generation += 1
                number += 1
            return
        holders = dict(zip(not_free[0::2], not_free[1::2])) if not_free else None
        for index, claim in enumerate(wire):
            waiting = claim.__class__ is not str
            client_id = claim[0] if waiting else claim
            holder = holders.get(index) if holders is not None else None
            recorded = 0
            if generation is not None and (waiting or holder is None):
                recorded = generation   # this claim's generation; the next recorded one has the next
                generation += 1
            if unanswered.get(client_id) == number:
                del unanswered[client_id]
                if recorded:
                    claims[client_id] = recorded
            still_here = True
            if ended and number in ended:
                ended.discard(number)
                if recorded:
                    self._release(client_id, recorded)
                still_here = False
            number += 1
            if waiting:
                answer = then[index]
                if answer.done():
                    pass
                elif error is not None:
                    answer.set_exception(BusError(f"claim failed: {error!r}"))
                else:
                    answer.set_result(holder)
            elif error is not None:
                log.warning("claim of %r not recorded: %r", client_id, error)
            elif not recorded and still_here:
                # held elsewhere, so not recorded; the connection here is still the client's
                self._spawn(self._claim_after_connack(client_id, then[index]))

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._claim_tasks.add(task)
        task.add_done_callback(self._claim_tasks.discard)

    async def adopt(self, client_ids: list[str]) -> set[str]:
        """Storage: which of these stored sessions this node may restore (no live node holds
        them); the directory claims them for this node (``SessionDirectory.adopt``)."""
        reply = await self.bus.request(self.directory, ADOPT, msgpack.packb(client_ids))
        granted = msgpack.unpackb(reply)
        for client_id, generation in granted:
            self._claims[client_id] = generation
        return {client_id for client_id, _ in granted}

    def _serve_takeover(self, sender: str, payload: bytes) -> bytes:
        """Another worker took ``client_id`` over: give the session up (empty answer: none here)."""
        client_id = payload.decode()
        self._claims.pop(client_id, None)
        self._wills_kept.discard(client_id)   # the new holder's claim replaced it there
        self._close_window(client_id)   # it moves on: what comes for it here is forwarded
        export = getattr(self.sink, "export_session", None)
        session = export(client_id, sender) if export is not None else None
        if session is None:
            return b""
        return session_to_wire(session, time.monotonic())

    def forward_to_client(self, node: str, client_id: str, qos: int, retain: bool,
                          identifiers: tuple[int, ...], message_id: MessageId, message: Publish) -> None:
        """Send ``message`` (bus id ``message_id``) to ``client_id``'s session, which moved to ``node``."""
        origin, sequence = message_id
        self.bus.send(node, PUBLISH_FOR, msgpack.packb(
            (client_id, qos, retain, identifiers, origin, sequence, encode_message(message))))

    def _on_publish_for(self, sender: str, payload: bytes) -> None:
        client_id, qos, retain, identifiers, origin, sequence, body = msgpack.unpackb(payload)
        window = self.windows.get(client_id)
        if window is None:   # the client moved on, or started clean: not for any session here
            self.stats.stale_dropped += 1
            return
        item = ((origin, sequence), qos, retain, tuple(identifiers), decode_message(body))
        if window.session is not None:
            self._deliver_forwarded(client_id, window, item)
        elif len(window.early) < EARLY_LIMIT:
            window.early.append(item)   # it beat the takeover reply: delivered once the session is here

    def _deliver_forwarded(self, client_id: str, window: _Window, item: Forwarded) -> None:
        message_id, qos, retain, identifiers, message = item
        if message_id in window.delivered:
            self.stats.duplicates_dropped += 1
            return
        window.delivered.add(message_id)
        deliver = getattr(self.sink, "deliver_to_session", None)
        if deliver is not None:
            deliver(client_id, qos, retain, identifiers, message)

    def deliver_early(self, client_id: str) -> None:
        """Deliver what was forwarded for ``client_id`` before its session was installed here."""
        window = self.windows.get(client_id)
        if window is None or window.session is None:
            return
        early, window.early = window.early, []
        for item in early:
            self._deliver_forwarded(client_id, window, item)

    def arrived(self, message_id: MessageId, topic: str) -> None:
        """A message published here was routed to the local subscribers (before ``forward``
        numbered it, so the delivery could not tell): the sessions in a window it reached
        have it now."""
        for window in self.windows.values():
            if window.session is not None and window.gets(topic):
                window.delivered.add(message_id)

    def first_delivery(self, session: Any, message_id: MessageId) -> bool:
        """``session`` is being given the message ``message_id`` routed here from another
        node: False if it had it already (forwarded) and must be skipped."""
        window = self.windows.get(session.client_id)
        if window is None or window.session is not session:
            return True
        if message_id in window.delivered:
            self.stats.duplicates_dropped += 1
            return False
        window.delivered.add(message_id)
        return True

    def handover_done(self, previous: str, client_id: str) -> None:
        """Tell ``previous`` that ``client_id``'s interest here is known everywhere."""
        self.bus.send(previous, HANDOVER_DONE, client_id.encode())

    def _on_handover_done(self, sender: str, payload: bytes) -> None:
        if self.on_handover_done is not None:
            asyncio.get_running_loop().create_task(self.on_handover_done(payload.decode()))

    def forwarding_ended(self, node: str, client_id: str) -> None:
        """Tell ``node`` (the new holder) that no more messages for ``client_id`` come from here."""
        self.bus.send(node, FORWARDING_ENDED, client_id.encode())

    def _on_forwarding_ended(self, sender: str, payload: bytes) -> None:
        """The last forwarded copy is here; a direct copy of a message forwarded earlier was sent
        before its sender answered the forwarder's barrier, so it is here once every node has
        answered one of ours: then the window closes."""
        client_id = payload.decode()
        window = self.windows.get(client_id)
        if window is None or self.barrier is None:
            return
        asyncio.get_running_loop().create_task(self._close_after_barrier(client_id, window))

    async def _close_after_barrier(self, client_id: str, window: _Window) -> None:
        assert self.barrier is not None
        await self.barrier()
        if self.routed is not None:   # arrived is not yet routed, with coroutine filters
            await self.routed()
        self._close_window(client_id, window)

    def _close_window(self, client_id: str, window: _Window | None = None) -> None:
        """Forget ``client_id``'s window (only ``window``, if given: a newer one stays)."""
        current = self.windows.get(client_id)
        if current is None or (window is not None and current is not window):
            return
        del self.windows[client_id]
        if current.timer is not None:
            current.timer.cancel()
        if not self.windows and self.on_windows is not None:
            self.on_windows(False)

    def session_ended(self, client_id: str) -> None:
        """The session of ``client_id`` ended here (clean start, expiry): tell the directory."""
        unanswered = self._unanswered.pop(client_id, None)
        if unanswered is not None:
            # the claim has not been answered: a release sent now could reach the directory
            # before the claim (another socket) and leave it naming this node for good
            self._release_when_answered.add(unanswered)
            self._claims.pop(client_id, None)
            return
        self._release(client_id, self._claims.pop(client_id, None))

    def _release(self, client_id: str, generation: int | None) -> None:
        """Tell the directory, with the other releases of the next ``CLAIM_GATHER`` (one bus item)."""
        if not self._releases:
            asyncio.get_running_loop().call_later(CLAIM_GATHER, self._send_releases)
        self._releases += (client_id, generation)

    def _send_releases(self) -> None:
        releases, self._releases = self._releases, []
        self.bus.send(self.directory, RELEASE, msgpack.packb(releases))

    def will_cleared(self, client_id: str) -> None:
        """The will of ``client_id`` was sent, or must not be: the directory forgets its copy
        (if it keeps one: only a claim that carried a will left one there)."""
        if client_id in self._wills_kept:
            self._wills_kept.discard(client_id)
            self.bus.send(self.directory, WILL_CLEARED, client_id.encode())

