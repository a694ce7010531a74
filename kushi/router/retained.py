"""The retained messages of a broker: one per topic, found by topic filter.

[MQTT-3.3.1-5] A PUBLISH with RETAIN = 1 replaces the retained message of its
topic; [MQTT-3.3.1-6]/[MQTT-3.3.1-7] one with an empty payload deletes it and
is never stored itself. A new subscription asks `match(filter, now)` for the
retained messages its filter matches.

Topics are kept in a tree of levels next to the topic -> entry dict, so a
filter with wildcards only visits the branches it can match ("a/+/c" does not
look at the topics under "b"); "#" visits everything under its parent.

Message expiry (MQTT 5, 3.3.2.3.3): a message stored with a Message Expiry
Interval is dropped once that interval has passed; `match` never returns an
expired message and gives back the remaining interval ([MQTT-3.3.2-6]).
Times are `now` arguments (time.monotonic() seconds), never read here.

For several workers, `set` takes an optional `order` (any comparable tuple,
e.g. (hybrid logical clock, worker id)): a write ordered before the stored one
is ignored, so every worker keeps the same last writer whatever order the
writes arrive in. A clear leaves no trace, so an older write arriving after
a newer clear is stored again.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, replace
from itertools import count

from kushi.protocol.packets import Publish

STORED = 1
CLEARED = -1
UNCHANGED = 0


@dataclass(slots=True)
class _Retained:
    """One retained message and when it was stored."""

    message: Publish
    stored_at: float
    expires_at: float | None
    order: tuple | None
    serial: int  # tells this entry from a later one on the same topic in the expiry heap


class _Level:
    """One level of the topic tree: the retained message of this topic, if any, and the levels below."""

    __slots__ = ("children", "retained")

    def __init__(self) -> None:
        self.children: dict[str, _Level] = {}
        self.retained: _Retained | None = None


class RetainedStore:
    """One retained message per topic, with expiry and last-writer-wins ordering."""

    def __init__(self) -> None:
        self._by_topic: dict[str, _Retained] = {}
        self._tree = _Level()
        self._expiry_heap: list[tuple[float, int, str]] = []
        self._serials = count()

    def __len__(self) -> int:
        return len(self._by_topic)

    def set(self, topic: str, message: Publish, now: float, order: tuple | None = None) -> int:
        """Store `message` as the retained message of `topic`, or clear it if the payload is empty.

        Returns STORED (1), CLEARED (-1) or UNCHANGED (0: a clear of a topic
        holding nothing, or a write ordered before the stored one).
        The stored copy owns its payload: a memoryview into a read buffer is
        copied to bytes, and the received packet bytes (`raw`) are not kept.
        """
        current = self._by_topic.get(topic)
        if current is not None and order is not None and current.order is not None \
                and order < current.order:
            return UNCHANGED
        if len(message.payload) == 0:
            if current is None:
                return UNCHANGED
            self._remove(topic)
            return CLEARED
        if isinstance(message.payload, memoryview) or message.raw is not None:
            message = replace(message, payload=bytes(message.payload), raw=None)
        interval = message.properties.message_expiry_interval
        entry = _Retained(message, now, None if interval is None else now + interval,
                          order, next(self._serials))
        self._level_of(topic).retained = entry
        self._by_topic[topic] = entry
        if entry.expires_at is not None:
            heapq.heappush(self._expiry_heap, (entry.expires_at, entry.serial, topic))
            self._compact_expiry_heap()
        return STORED

    def get(self, topic: str) -> Publish | None:
        """The retained message of `topic` as stored (expiry not applied), or None."""
        entry = self._by_topic.get(topic)
        return entry.message if entry is not None else None

    def order_of(self, topic: str) -> tuple | None:
        """The `order` the retained message of `topic` was stored with."""
        entry = self._by_topic.get(topic)
        return entry.order if entry is not None else None

    def match(self, filter: str, now: float) -> list[Publish]:
        """The unexpired retained messages whose topics match `filter`.

        A message with an expiry interval comes back with the interval that
        remains at `now` (rounded up, so a live message never says 0).
        """
        if "+" not in filter and "#" not in filter:
            entry = self._by_topic.get(filter)
            entries = [entry] if entry is not None else []
        else:
            entries = self._entries_matching(filter)
        return [message for message in (self._as_of(entry, now) for entry in entries)
                if message is not None]

    def snapshot(self, now: float) -> list[tuple[Publish, tuple | None]]:
        """Every unexpired message with its order, e.g. to sync another worker's store."""
        return [(message, entry.order) for entry in self._by_topic.values()
                if (message := self._as_of(entry, now)) is not None]

    def expire(self, now: float) -> list[str]:
        """Drop the messages whose expiry interval has passed at `now`; return their topics."""
        removed: list[str] = []
        heap = self._expiry_heap
        while heap and heap[0][0] <= now:
            _, serial, topic = heapq.heappop(heap)
            entry = self._by_topic.get(topic)
            if entry is not None and entry.serial == serial:  # else replaced or cleared since
                self._remove(topic)
                removed.append(topic)
        return removed

    @staticmethod
    def _as_of(entry: _Retained, now: float) -> Publish | None:
        """The message as it should be sent at `now`: None if expired, else with the remaining interval."""
        if entry.expires_at is None:
            return entry.message
        remaining = entry.expires_at - now
        if remaining <= 0:
            return None
        properties = replace(entry.message.properties, message_expiry_interval=math.ceil(remaining))
        return replace(entry.message, properties=properties)

    def _entries_matching(self, filter: str) -> list[_Retained]:
        """Walk the topic tree along a wildcard filter (4.7 rules, incl. [MQTT-4.7.2-1])."""
        nodes = [self._tree]
        for depth, level in enumerate(filter.split("/")):
            if level == "#":
                return self._entries_below(nodes, skip_dollar=depth == 0)
            next_nodes: list[_Level] = []
            for node in nodes:
                if level != "+":
                    child = node.children.get(level)
                    if child is not None:
                        next_nodes.append(child)
                elif depth == 0:  # a leading "+" skips the $-topics
                    next_nodes.extend(child for name, child in node.children.items()
                                      if name[:1] != "$")
                else:
                    next_nodes.extend(node.children.values())
            if not next_nodes:
                return []
            nodes = next_nodes
        return [node.retained for node in nodes if node.retained is not None]

    @staticmethod
    def _entries_below(nodes: list[_Level], skip_dollar: bool) -> list[_Retained]:
        """Every entry at `nodes` and below ("a/#" includes "a" itself)."""
        found: list[_Retained] = []
        if skip_dollar:  # only the root: its direct $-children are not matched by "#"
            nodes = [child for node in nodes for name, child in node.children.items()
                     if name[:1] != "$"]
        stack = list(nodes)
        while stack:
            node = stack.pop()
            if node.retained is not None:
                found.append(node.retained)
            stack.extend(node.children.values())
        return found

    def _level_of(self, topic: str) -> _Level:
        """The tree level of `topic`, created with its parents if missing."""
        node = self._tree
        for level in topic.split("/"):
            child = node.children.get(level)
            if child is None:
                child = node.children[level] = _Level()
            node = child
        return node

    def _remove(self, topic: str) -> None:
        """Remove the entry of `topic` and prune the tree levels left empty."""
        del self._by_topic[topic]
        path = [self._tree]
        for level in topic.split("/"):
            path.append(path[-1].children[level])
        path[-1].retained = None
        for level, node, parent in zip(reversed(topic.split("/")), reversed(path[1:]),
                                       reversed(path[:-1])):
            if node.retained is not None or node.children:
                break
            del parent.children[level]

    def _compact_expiry_heap(self) -> None:
        """Rebuild the heap when replaced entries left too many stale items in it."""
        if len(self._expiry_heap) > 2 * len(self._by_topic) + 64:
            self._expiry_heap = [(entry.expires_at, entry.serial, topic)
                                 for topic, entry in self._by_topic.items()
                                 if entry.expires_at is not None]
            heapq.heapify(self._expiry_heap)
