"""BusFabric: the cluster seam of a worker's broker, carried over the ZeroMQ bus.

The broker reports four things (see ``kushi.worker.fabric.Fabric``) and is
called back with two (the *sink*: ``deliver_remote``, ``apply_retained``):

- **Interest.** ``interest_added``/``interest_removed`` are gossiped to every
  node as ``int+``/``int-``. Each node keeps the interest of the others in a
  ``SubscriptionTrie`` (filter -> node names), so a publish is matched once,
  on the worker that received it, and sent once to each interested node.
  A node that leaves (its process died) has its entries dropped.
- **Messages.** ``forward`` encodes the PUBLISH once (MQTT 5 wire form, so every
  property survives; no pickling) and queues it for each interested node; the
  bus flushes once per loop iteration. The receiver decodes it and calls
  ``sink.deliver_remote``, which delivers to local subscribers only.
  Every message sent on carries an id: (origin node, the origin's sequence
  number), the same in every copy. A session moving between workers can be
  sent one message on two paths (``kushi.cluster.handover``); the id lets the
  new holder deliver it once (``message_id``, ``known_id``, ``kushi.cluster.handover``).
- **Runs.** ``forward_run`` sends the messages of one ``Broker.publish_run``
  (one QoS, one topic, one client, no properties) as ONE item of the bytes
  the client sent (``kushi.cluster.wire.run_to_wire``): no encoding, one
  match, and the receiver hands the whole run to ``sink.deliver_remote_run``
  as a ``ReceivedRun`` (topic, QoS, count, longest packet read off the item's
  header): the broker writes the received bytes to each subscriber that takes
  them so without making a message object (``Delivery.route_received_run``),
  as its own worker would. The messages of a run get consecutive sequence numbers.
- **Retained messages.** Every change is broadcast with an order (hybrid
  logical clock + node name). Each node keeps, per topic, the greatest order
  it has seen, including for clears (tombstones): a write ordered before the
  one known is ignored, so all nodes end with the same message whatever
  order the gossip arrives in.
- **Snapshot on join.** ``sync()`` asks every member for its interest and its
  retained table. The answer travels over the member's PUB (not the reply
  channel) so it is ordered with the member's later gossip: a change made
  after the snapshot can never be overtaken by the snapshot.

Retained messages are also kept here, encoded, with their order: that is
what a joining node is sent, and it lets the fabric decide last-writer-wins
without reaching into the broker's store.

``barrier()`` proves every node has handled what this node sent before, and
that this node has handled what every node sent before answering: a node
answers after flushing what it queued, broadcasts included, and one PUB/SUB
pair is FIFO. So once a new interest's barrier is done, every retained change
made by a node that did not know the interest yet (sent by gossip only, never
forwarded) is applied here: the broker looks the new subscription's retained
messages up then (``kushi.worker.subscriptions``). A change made by a node that
knew the interest was also forwarded, and routed live here; the broker sends no
retained copy of those topics (``watch_live_retained``, ``LiveRetainedTopics``),
so the subscription gets the message once.

``fabric.sessions`` (``kushi.cluster.session_link``) moves sessions between
workers; ``pick_shared``/``forward_shared`` spread shared groups over them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Protocol

import msgpack

from ..protocol.packets import MQTT_5, Publish
from ..protocol.topics import parse_shared, topic_matches
from ..router.bus import Bus, BusError
from ..router.bus_clock import HybridClock, Order
from ..router.trie import SubscriptionTrie
from ..worker.delivery import shared_groups_in
from ..worker.subscriptions import SUBACK_WAIT_AT_MOST
from .session_link import DIRECTORY, SessionLink
from .shared_groups import SharedGroups
from .wire import (
    MessageId, ReceivedRun, decode_message, encode_message, run_to_wire, split_sequence,
    with_sequence,
)

log = logging.getLogger("kushi.cluster")

PUBLISH = "pub"
PUBLISH_RUN = "pub-run"      # a run of messages as received (kushi.cluster.wire.run_to_wire)
INTEREST_ADDED = "int+"
INTEREST_REMOVED = "int-"
RETAINED = "ret"
SNAPSHOT = "snap"
BARRIER = "bar"
BARRIER_ACK = "bar-ack"
PUBLISH_SHARED = "pub-share" # a message for one member of a shared group on the recipient
TARGET_CACHE_SIZE = 10_000  # topics whose interested nodes are remembered (cleared on any change)
TOMBSTONE_LIMIT = 10_000     # clears remembered for ordering before the oldest are forgotten
ID_MEMORY = 16_384           # message ids kept by message identity (see BusFabric.message_id)


class Sink(Protocol):
    """What the fabric calls back on its own node (the broker, or the supervisor's inline client).

    For sessions that move between workers the sink may have more methods:
    see ``kushi.cluster.session_link``.
    """

    def deliver_remote(self, message: Publish) -> None: ...
    def apply_retained(self, message: Publish) -> None: ...


@dataclass
class FabricStats:
    forwarded: int = 0          # publishes sent to other nodes (one per recipient)
    delivered_remote: int = 0   # publishes received from other nodes
    retained_applied: int = 0   # remote retained changes that won and were applied
    retained_ignored: int = 0   # remote retained changes ordered before the one known


@dataclass
class _RetainedEntry:
    order: Order
    body: bytes          # the encoded PUBLISH; b"" for a clear (tombstone)
    stored_at: float     # time.monotonic() when stored, for the remaining expiry


class LiveRetainedTopics:
    """The topics of the retained messages routed live on this node while it is open.

    Opened by the broker for a new subscription whose retained messages wait for the
    barrier (``BusFabric.watch_live_retained``). A retained message routed live here
    meanwhile (published here, or forwarded by a node that knew the new interest)
    reached the subscription already: the broker sends no retained copy of its topic
    then, neither the same message again nor an older one whose gossip came later,
    so the subscriber's last word on the topic is the latest one.
    """

    def __init__(self, watching: list[LiveRetainedTopics]) -> None:
        self.topics: set[str] = set()
        self._watching = watching
        watching.append(self)

    def close(self) -> None:
        """Stop noting topics (the subscription's retained messages were looked up, or never will be)."""
        if self in self._watching:
            self._watching.remove(self)


class BusFabric:
    """The fabric of one node: implements the seam over ``bus`` for ``worker_id``."""

    def __init__(self, bus: Bus, worker_id: int, directory: str = DIRECTORY) -> None:
        self.worker_id = worker_id
        self.bus = bus
        self.sessions = SessionLink(bus, directory)
        self.node = bus.name
        self.stats = FabricStats()
        self.interest = SubscriptionTrie()      # remote interest: filter -> node names
        self._interest_keys: dict[str, set[str]] = {}   # node -> its keys in self.interest
        self._targets: dict[str, frozenset[str]] = {}   # topic -> interested nodes (a cache)
        self._groups: dict[str, frozenset[tuple[str, str]]] = {}   # topic -> shared groups (a cache)
        self._local_interest: set[str] = set()
        self._retained: dict[str, _RetainedEntry] = {}
        self._tombstones = 0
        self._clock = HybridClock(bus.name)
        self._sink: Sink | None = None
        self._snapshots: dict[str, asyncio.Future[None]] = {}
        self._barriers: dict[int, tuple[asyncio.Future[None], set[str]]] = {}
        self._next_barrier = 1
        self._watching: list[LiveRetainedTopics] = []   # open windows of new subscriptions
        self._announced: set[str] = set()   # local interest told since the last barrier (unproven)
        self._proving: dict[str, tuple[int, asyncio.Future[None]]] = {}   # local interest -> the
        # barrier that proves it: (its number, its future)
        self._sequence = 0                                # of the messages this node sent on
        self._ids: dict[int, tuple[Publish, MessageId]] = {}   # id(message) -> (message, its id)
        self._routing: tuple[Publish, MessageId] | None = None  # the remote message being delivered
        self.keep_ids = False   # set by the hand-over while forwarders or windows are here
        self._always_keep_ids = False   # the broker routes later than it is handed a message
        self.sessions.barrier = self.barrier
        bus.on(PUBLISH, self._on_publish)
        bus.on(PUBLISH_RUN, self._on_publish_run)
        bus.on(INTEREST_ADDED, self._on_interest_added)
        bus.on(INTEREST_REMOVED, self._on_interest_removed)
        bus.on(RETAINED, self._on_retained)
        bus.on(SNAPSHOT, self._on_snapshot)
        bus.serve(SNAPSHOT, self._serve_snapshot)
        bus.on(BARRIER, self._on_barrier)
        bus.on(PUBLISH_SHARED, self._on_publish_shared)
        self.shared = SharedGroups(self.node)
        bus.on(BARRIER_ACK, self._on_barrier_ack)
        bus.on_peer_left.append(self._on_peer_left)

    def attach(self, sink: Sink) -> None:
        """Give the fabric its broker; retained messages synced before are applied to it now."""
        self._sink = sink
        self.sessions.sink = sink
        now = time.monotonic()
        for entry in self._retained.values():
            message = self._as_of(entry, now) if entry.body else None
            if message is not None:
                sink.apply_retained(message)

    # ------------------------------------------------------------- the seam

    def interest_added(self, filter: str) -> None:
        """The first local subscriber to ``filter``: tell every node, now.

        Flushed at once rather than with the loop iteration: the broker sends
        the SUBACK right after this call, and the gossip should be on its way
        before the client can make another worker publish (rare, so cheap).
        The full guarantee is ``known_everywhere`` before the SUBACK.
        """
        if filter not in self._local_interest:
            self._local_interest.add(filter)
            self._announced.add(filter)
            self.bus.broadcast(INTEREST_ADDED, filter.encode())
            self.bus.flush()

    def interest_removed(self, filter: str) -> None:
        """The last local subscriber to ``filter`` left: tell every node."""
        if filter in self._local_interest:
            self._local_interest.discard(filter)
            self.bus.broadcast(INTEREST_REMOVED, filter.encode())

    def forward(self, message: Publish) -> None:
        """Send ``message`` once to each other node with a matching interest."""
        topic = message.topic
        known = self._ids.pop(id(message), None) if self._ids else None
        if known is not None and known[0] is message:
            sequence = known[1][1]
        else:
            self._sequence += 1
            sequence = self._sequence
        if self.keep_ids:
            self._remember_id(message, (self.node, sequence))
        if self.sessions.windows:   # a session arriving here: it got this message directly
            self.sessions.arrived((self.node, sequence), topic)
        targets = self._targets.get(topic)
        if targets is None:
            targets = self._targets_of(topic)
        if not targets:
            return
        body = with_sequence(sequence, encode_message(message))
        for node in targets:
            self.bus.send(node, PUBLISH, body)
        self.stats.forwarded += len(targets)

    def forward_run(self, run: list[Publish], version: int) -> None:
        """Send a run (see the module docstring) once to each other node with a matching interest.

        ``version``: the protocol version of the messages' received bytes (``raw``).
        """
        if self._ids or self.keep_ids or run[0].raw is None:   # ids to keep (a hand-over): one by one
            for message in run:
                self.forward(message)
            return
        topic = run[0].topic
        first = self._sequence + 1
        self._sequence += len(run)
        if self.sessions.windows:   # a session arriving here: it got these messages directly
            for offset in range(len(run)):
                self.sessions.arrived((self.node, first + offset), topic)
        targets = self._targets.get(topic)
        if targets is None:
            targets = self._targets_of(topic)
        if not targets:
            return
        payload = run_to_wire(first, version, run)
        for node in targets:
            self.bus.send(node, PUBLISH_RUN, payload)
        self.stats.forwarded += len(targets) * len(run)

    def shared_groups_matching(self, topic: str) -> frozenset[tuple[str, str]]:
        """(group, filter) of the other nodes' shared groups matching ``topic``.

        Asked by the broker for every message and run it routes; read from the
        interest trie once per topic and kept, like ``_targets``, until interest changes.
        """
        groups = self._groups.get(topic)
        if groups is None:
            groups = frozenset(shared_groups_in(self.interest, topic))
            if len(self._groups) >= TARGET_CACHE_SIZE:
                self._groups.clear()
            self._groups[topic] = groups
        return groups

    def _interest_changed(self) -> None:
        """Another node's interest changed: what was worked out from it per topic is forgotten."""
        self._targets.clear()
        self._groups.clear()

    def _targets_of(self, topic: str) -> frozenset[str]:
        """The other nodes interested in ``topic`` (kept in a cache cleared on any change)."""
        targets = frozenset(key.partition(_GROUP_SEPARATOR)[0] for key, _ in self.interest.match(topic))
        if len(self._targets) >= TARGET_CACHE_SIZE:
            self._targets.clear()
        self._targets[topic] = targets
        return targets

    def message_id(self, message: Publish) -> MessageId:
        """The bus id of ``message``, being routed here now (from a client or another node).

        A message received here is numbered when ``forward`` sends it on, which is
        usually after the local routing that may ask for its id first (a hand-over's
        forwarder): the number is then chosen here and kept by the message's identity,
        and ``forward`` uses the same one. Routing can also come later than ``forward``
        (coroutine filters route in a task), or after the remote message's delivery
        call: while ``keep_ids`` is set, ``forward`` and remote deliveries keep the ids
        (at most ``ID_MEMORY``) for this to find.
        """
        routing = self._routing
        if routing is not None and routing[0] is message:
            return routing[1]
        known = self._ids.get(id(message))
        if known is not None and known[0] is message:
            return known[1]
        self._sequence += 1
        message_id = (self.node, self._sequence)
        self._remember_id(message, message_id)
        return message_id

    def _remember_id(self, message: Publish, message_id: MessageId) -> None:
        ids = self._ids
        if len(ids) >= ID_MEMORY:   # the oldest half goes (a dict keeps insertion order)
            for key in list(ids)[:ID_MEMORY // 2]:
                del ids[key]
        ids[id(message)] = (message, message_id)

    def forget_ids(self) -> None:
        """The hand-over's forwarders and windows are gone: no id needs keeping (unless always)."""
        if not self._always_keep_ids:
            self.keep_ids = False
            self._ids.clear()

    def keep_ids_always(self) -> None:
        """The broker routes a message in a task, later than ``forward`` or the remote delivery
        call (coroutine filters): a hand-over starting meanwhile must still find its id."""
        self._always_keep_ids = self.keep_ids = True

    def retained_changed(self, message: Publish) -> None:
        """A retained set/clear made here: order it after everything seen, tell every node."""
        if self._watching:   # the broker routes it live here too
            self._routed_live(message.topic)
        order = self._clock.tick(_wall_ms())
        body = encode_message(message) if len(message.payload) else b""
        self._remember(message.topic, _RetainedEntry(order, body, time.monotonic()))
        self.bus.broadcast(RETAINED, msgpack.packb((message.topic, order, body)))

    def retained_matching(self, topic_filter: str, now: float) -> list[Publish]:
        """The retained messages this node knows whose topic matches ``topic_filter`` (not
        expired at ``now``): what a node without a broker of its own, the supervisor's inline
        client, hands a new subscription."""
        messages = []
        for topic, entry in self._retained.items():
            if entry.body and topic_matches(topic_filter, topic):
                message = self._as_of(entry, now)
                if message is not None:
                    messages.append(message)
        return messages

    def watch_live_retained(self) -> LiveRetainedTopics:
        """Note, until its ``close()``, the topics of the retained messages routed live here."""
        return LiveRetainedTopics(self._watching)

    async def live_retained_until(self, known: asyncio.Future[None], what: str) -> LiveRetainedTopics:
        """Wait for ``known`` (``known_everywhere``'s future, perhaps shared: never cancelled)
        at most SUBACK_WAIT_AT_MOST, as a SUBACK does (then log and go on), noting meanwhile the
        topics of the retained messages routed live here: the wait of an inline subscription
        (a worker's or the supervisor's) before its retained messages are looked up."""
        live = self.watch_live_retained()
        try:
            await asyncio.wait_for(asyncio.shield(known), SUBACK_WAIT_AT_MOST)
        except asyncio.TimeoutError:
            log.warning("retained messages for %s handed over after %.0f s without every worker's "
                        "answer", what, SUBACK_WAIT_AT_MOST)
        finally:
            live.close()
        return live

    def _routed_live(self, topic: str) -> None:
        for window in self._watching:
            window.topics.add(topic)

    def barrier(self) -> asyncio.Future[None]:
        """A future done when every node has handled everything this node sent before it,
        and this node everything they sent before they answered.

        PUB/SUB is FIFO per pair of nodes, so a node's answer to the barrier
        proves it processed our earlier gossip, and our handling of the answer
        that we processed its earlier gossip (``_on_barrier``). The broker awaits
        it before a SUBACK that added interest: once the client has its SUBACK, a
        publish on any worker is routed to it, as it would be with one process;
        and the retained messages it is sent then include those set anywhere
        before the interest was known there.
        """
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiting_for = set(self.bus.peers)
        announced, self._announced = self._announced, set()
        if not waiting_for:
            waiter.set_result(None)
            return waiter
        number = self._next_barrier
        self._next_barrier += 1
        if announced:
            for filter in announced:
                self._proving[filter] = (number, waiter)
            waiter.add_done_callback(self._proven)
        self._barriers[number] = (waiter, waiting_for)
        self.bus.broadcast(BARRIER, number.to_bytes(8, "big"))
        return waiter

    def known_everywhere(self, filters: Iterable[str]) -> asyncio.Future[None] | None:
        """A future done when every node knows this node's interest in ``filters``; None when
        they know it already (or it is no local interest).

        A filter told since the last barrier needs a new one (which proves the others
        too); one whose barrier is under way, that barrier: a second subscriber to a filter
        waits for the first one's. Of several under way, the latest: every node answers
        barriers in order (or leaves, which answers them all). The broker sends a SUBACK,
        and looks up the retained messages, once this is done.
        """
        filters = set(filters)
        if not self._announced.isdisjoint(filters):
            return self.barrier()
        under_way = [self._proving[filter] for filter in filters if filter in self._proving]
        if not under_way:
            return None
        return max(under_way, key=lambda proving: proving[0])[1]

    def _proven(self, waiter: asyncio.Future[None]) -> None:
        """A barrier is done: the interest it proves is known everywhere."""
        for filter in [filter for filter, (_, proving) in self._proving.items() if proving is waiter]:
            del self._proving[filter]

    def _on_barrier(self, sender: str, payload: bytes) -> None:
        """Answer a barrier after everything queued here so far.

        The bus batches per recipient: a broadcast queued before the answer (a retained
        change's gossip) could otherwise go out after it, in another ZeroMQ message,
        and the asker would look up its retained messages without it.
        """
        self.bus.flush()
        self.bus.send(sender, BARRIER_ACK, payload)

    def _on_barrier_ack(self, sender: str, payload: bytes) -> None:
        self._barrier_answered(int.from_bytes(payload, "big"), sender)

    def _barrier_answered(self, number: int, node: str) -> None:
        entry = self._barriers.get(number)
        if entry is None:
            return
        waiter, waiting_for = entry
        waiting_for.discard(node)
        if not waiting_for:
            del self._barriers[number]
            if not waiter.done():
                waiter.set_result(None)

    # --------------------------------------------------------- the other side

    def _on_publish(self, sender: str, payload: bytes) -> None:
        self.stats.delivered_remote += 1
        sink = self._sink
        if sink is None:
            return
        sequence, body = split_sequence(payload)
        message = decode_message(body)
        if self._watching and message.retain:   # the sender knew our interest: routed live here
            self._routed_live(message.topic)
        self._deliver(sink, sink.deliver_remote, message, (sender, sequence))

    def _on_publish_run(self, sender: str, payload: bytes) -> None:
        # a run is never retained (Broker.handle_packets): nothing for watch_live_retained
        run = ReceivedRun(payload)
        self.stats.delivered_remote += run.count
        sink = self._sink
        if sink is None or not run.count:
            return
        deliver_run = getattr(sink, "deliver_remote_run", None)
        if deliver_run is not None and not self.sessions.windows:
            deliver_run(run, run.version)   # as received: read into messages only if needed
            return
        deliver_remote = sink.deliver_remote   # takes MQTT 5 raw bytes, or none
        first = run.first_sequence
        for offset, message in enumerate(run.messages()):
            if run.version != MQTT_5:
                message = replace(message, raw=None)
            self._deliver(sink, deliver_remote, message, (sender, first + offset))

    def _deliver(self, sink: Sink, deliver: Callable[[Publish], None], message: Publish,
                 message_id: MessageId) -> None:
        """Hand one message from another node to ``deliver``; its id stays known meanwhile
        (``message_id``), and longer while ``keep_ids`` is set (a hand-over here)."""
        self._routing = (message, message_id)
        if self.keep_ids:
            self._remember_id(message, message_id)
        try:
            deliver(message)
        finally:
            self._routing = None

    def known_id(self, message: Publish) -> MessageId | None:
        """The bus id of ``message`` if it came from another node and is known here now."""
        routing = self._routing
        if routing is not None and routing[0] is message:
            return routing[1]
        known = self._ids.get(id(message)) if self._ids else None
        return known[1] if known is not None and known[0] is message else None

    def _on_interest_added(self, sender: str, payload: bytes) -> None:
        self._add_interest(sender, payload.decode())

    def _on_interest_removed(self, sender: str, payload: bytes) -> None:
        announced = payload.decode()
        filter, key = _interest_entry(sender, announced)
        self.interest.remove(filter, key)
        self._interest_changed()
        group, _ = parse_shared(announced)
        if group is not None:
            self.shared.remove(group, filter, sender)

    def _add_interest(self, node: str, announced: str) -> None:
        filter, key = _interest_entry(node, announced)
        self.interest.add(filter, key, None)
        self._interest_changed()
        self._interest_keys.setdefault(node, set()).add(key)
        group, _ = parse_shared(announced)
        if group is not None:
            self.shared.add(group, filter, node)

    # ---- shared groups across workers (the broker's side is not wired yet: cluster notes) ----

    def pick_shared(self, group: str, filter: str, has_local_member: bool) -> str | None:
        """Which node serves the next message of group ``group`` on ``filter``; None: this one."""
        return self.shared.pick(group, filter, has_local_member)

    def forward_shared(self, node: str, group: str, filter: str, message: Publish) -> None:
        """Send ``message`` to ``node`` for one of its members of ``$share/group/filter``."""
        self.bus.send(node, PUBLISH_SHARED, msgpack.packb((group, filter, encode_message(message))))

    def _on_publish_shared(self, sender: str, payload: bytes) -> None:
        group, filter, body = msgpack.unpackb(payload)
        deliver = getattr(self._sink, "deliver_shared", None)
        if deliver is None or not deliver(group, filter, decode_message(body)):
            log.warning("a message for shared group %s/%s found no member here", group, filter)

    def _on_retained(self, sender: str, payload: bytes) -> None:
        topic, order, body = msgpack.unpackb(payload)
        self._apply_retained(topic, tuple(order), body, 0.0)

    def _apply_retained(self, topic: str, order: Order, body: bytes, age: float) -> None:
        """Keep a remote retained change if it is ordered after the one known; else ignore it."""
        self._clock.observe(order, _wall_ms())
        known = self._retained.get(topic)
        if known is not None and order <= known.order:
            self.stats.retained_ignored += 1
            return
        entry = _RetainedEntry(order, body, time.monotonic() - age)
        self._remember(topic, entry)
        self.stats.retained_applied += 1
        if self._sink is None:
            return
        if body:
            message = self._as_of(entry, time.monotonic())
            if message is not None:
                self._sink.apply_retained(message)
        else:
            self._sink.apply_retained(Publish(topic, b"", retain=True))

    def _remember(self, topic: str, entry: _RetainedEntry) -> None:
        previous = self._retained.pop(topic, None)
        if previous is not None and not previous.body:
            self._tombstones -= 1
        self._retained[topic] = entry  # re-inserted last: the dict is oldest-first
        if not entry.body:
            self._tombstones += 1
            if self._tombstones > TOMBSTONE_LIMIT:
                self._forget_oldest_tombstones()

    def _forget_oldest_tombstones(self) -> None:
        for topic in [topic for topic, entry in self._retained.items() if not entry.body]:
            if self._tombstones <= TOMBSTONE_LIMIT // 2:
                break
            del self._retained[topic]
            self._tombstones -= 1

    @staticmethod
    def _as_of(entry: _RetainedEntry, now: float) -> Publish | None:
        """The stored message with its remaining expiry interval at ``now``; None if expired."""
        message = decode_message(entry.body)
        interval = message.properties.message_expiry_interval
        if interval is None:
            return message
        remaining = interval - int(now - entry.stored_at)
        if remaining <= 0:
            return None
        return replace(message, properties=replace(message.properties, message_expiry_interval=remaining))

    def _on_peer_left(self, node: str) -> None:
        dropped = sum(len(self.interest.remove_key(key)) for key in self._interest_keys.pop(node, ()))
        self._interest_changed()
        self.shared.remove_node(node)
        log.info("%s left the bus; %d interest entries dropped", node, dropped)
        waiter = self._snapshots.get(node)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        for number in list(self._barriers):
            self._barrier_answered(number, node)

    # ------------------------------------------------------------ snapshots

    async def sync(self, timeout: float = 10.0) -> None:
        """Take every member's interest and retained messages (a joining node, before it serves)."""
        loop = asyncio.get_running_loop()
        members = sorted(self.bus.peers)
        self._snapshots = {member: loop.create_future() for member in members}
        for member in members:
            try:
                await self.bus.request(member, SNAPSHOT, timeout=timeout)
            except BusError as exc:
                log.warning("no snapshot from %s: %s", member, exc)
                self._snapshots.pop(member).set_result(None)
        if self._snapshots:
            await asyncio.wait_for(asyncio.gather(*self._snapshots.values()), timeout)
        self._snapshots = {}

    def _serve_snapshot(self, sender: str, payload: bytes) -> bytes:
        """Send ``sender`` our interest and retained table over PUB, in order with later gossip."""
        now = time.monotonic()
        retained = [(topic, entry.order, entry.body, now - entry.stored_at)
                    for topic, entry in self._retained.items()]
        self.bus.send(sender, SNAPSHOT, msgpack.packb((sorted(self._local_interest), retained)))
        return b""

    def _on_snapshot(self, sender: str, payload: bytes) -> None:
        interest, retained = msgpack.unpackb(payload)
        for filter in interest:
            self._add_interest(sender, filter)
        for topic, order, body, age in retained:
            self._apply_retained(topic, tuple(order), body, age)
        waiter = self._snapshots.get(sender)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def local_interest(self) -> frozenset[str]:
        return frozenset(self._local_interest)


_GROUP_SEPARATOR = "\x00"


def _interest_entry(node: str, filter: str) -> tuple[str, str]:
    """(filter to match, key) of one node's interest in the remote-interest trie.

    Plain filters are keyed by the node name. "$share/g/a/+" is matched as
    "a/+" under the key "node\\0g", so a node's shared and plain interest in
    the same filter come and go independently. A shared group's members on
    several workers each get the message from their own worker's broker (one
    per worker, not one per group): global groups need the broker's help,
    see the cluster notes.
    """
    group, routable = parse_shared(filter)
    return routable, node if group is None else f"{node}{_GROUP_SEPARATOR}{group}"


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000
