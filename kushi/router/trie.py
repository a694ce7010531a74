"""The subscription trie: which (filter, key) pairs match a topic name.

A topic filter is stored as a path of levels ("a/+/c" -> "a", "+", "c"); the
wildcards are ordinary children named "+" and "#". Matching a topic walks the
trie level by level, following at each node the child named like the level,
the "+" child, and collecting every subscriber of the "#" child. The cost
depends on the depth of the topic and on the wildcards on its way, not on the
number of subscriptions.

Matching rules (MQTT 5 section 4.7, the same in 3.1.1):

- "+" matches exactly one level, "#" the parent level and any number of
  levels below it: "a/#" matches "a", "a/b" and "a/b/c".
- Empty levels are real levels: "a//b" has three levels, matched by "a/+/b".
- [MQTT-4.7.2-1] A filter whose first level is "+" or "#" never matches a
  topic starting with "$" (e.g. "$SYS/...").
- [MQTT-4.7.3-4] Topics are compared exactly as received, no normalization.

Filters are assumed valid (kushi.protocol.topics.validate_topic_filter runs
before a filter gets here); the trie does not check them again.

Each (filter, key) pair holds one value, opaque to the router: the broker
keeps its subscription options there. The key is usually a client id.
"""

from __future__ import annotations

from collections.abc import Iterator


class _Node:
    """One level of the trie: the subscribers ending here and the next levels.

    `single` and `multi` are the "+" and "#" children again (or None), read
    as attributes on the hot path instead of two more dict lookups per level.
    """

    __slots__ = ("children", "subscribers", "single", "multi")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.subscribers: dict[str, object] = {}
        self.single: _Node | None = None
        self.multi: _Node | None = None

    def child(self, level: str) -> _Node:
        """The child for `level`, created if missing."""
        node = self.children.get(level)
        if node is None:
            node = self.children[level] = _Node()
            if level == "+":
                self.single = node
            elif level == "#":
                self.multi = node
        return node

    def drop_child(self, level: str) -> None:
        del self.children[level]
        if level == "+":
            self.single = None
        elif level == "#":
            self.multi = None


class SubscriptionTrie:
    """Topic filters by level, answering "who is subscribed to this topic?".

    Removing the last subscriber of a filter prunes the nodes that became
    empty, so the memory held follows the live subscriptions.
    """

    def __init__(self) -> None:
        self._root = _Node()
        self._filters_by_key: dict[str, set[str]] = {}
        self._count = 0

    def __len__(self) -> int:
        """The number of (filter, key) pairs stored."""
        return self._count

    def add(self, filter: str, key: str, value: object) -> bool:
        """Store `value` for (filter, key); return True if the pair is new.

        An existing pair has its value replaced and False is returned (a
        SUBSCRIBE repeating a filter replaces the subscription, [MQTT-3.8.4-3]).
        """
        node = self._root
        for level in filter.split("/"):
            node = node.child(level)
        is_new = key not in node.subscribers
        node.subscribers[key] = value
        if is_new:
            self._filters_by_key.setdefault(key, set()).add(filter)
            self._count += 1
        return is_new

    def remove(self, filter: str, key: str) -> bool:
        """Remove (filter, key); return True if it was there.

        Nodes left with neither subscribers nor children are pruned.
        """
        path = self._path(filter)
        if path is None or key not in path[-1][1].subscribers:
            return False
        del path[-1][1].subscribers[key]
        self._count -= 1
        filters = self._filters_by_key[key]
        filters.discard(filter)
        if not filters:
            del self._filters_by_key[key]
        for (level, node), (_, parent) in zip(reversed(path[1:]), reversed(path[:-1])):
            if node.subscribers or node.children:
                break
            parent.drop_child(level)
        return True

    def remove_key(self, key: str) -> list[str]:
        """Remove every filter of `key` (e.g. a session ending); return those filters."""
        filters = list(self._filters_by_key.get(key, ()))
        for filter in filters:
            self.remove(filter, key)
        return filters

    def filters_of(self, key: str) -> frozenset[str]:
        """The filters `key` is subscribed to."""
        return frozenset(self._filters_by_key.get(key, ()))

    def subscribers(self, filter: str) -> dict[str, object]:
        """A copy of {key: value} for exactly this filter (no wildcard matching).

        Empty when nobody is subscribed to it: the broker uses this to tell
        the first subscriber of a filter from the next ones.
        """
        path = self._path(filter)
        return dict(path[-1][1].subscribers) if path is not None else {}

    def get(self, filter: str, key: str) -> object | None:
        """The value stored for (filter, key), or None."""
        path = self._path(filter)
        return path[-1][1].subscribers.get(key) if path is not None else None

    def filters(self) -> Iterator[str]:
        """Every filter that has at least one subscriber."""
        return self._walk(self._root, [])

    def match(self, topic: str) -> list[tuple[str, object]]:
        """Every (key, value) whose filter matches the topic name `topic`.

        A key subscribed with several matching filters appears once per
        filter; the caller decides how overlapping subscriptions are merged.
        """
        levels = topic.split("/")
        found: list[tuple[str, object]] = []
        first = levels[0]
        if first[:1] == "$":
            # [MQTT-4.7.2-1] a $-topic is not matched by a leading wildcard:
            # only the root's child named exactly like the first level applies.
            start = self._root.children.get(first)
            if start is None:
                return found
            nodes = [start]
            del levels[0]
        else:
            nodes = [self._root]
        # One pass per level, inlined: this is the per-message hot path.
        for level in levels:
            next_nodes = []
            for node in nodes:
                if node.multi is not None:  # "#" here matches this level and all below
                    found.extend(node.multi.subscribers.items())
                exact = node.children.get(level)
                if exact is not None:
                    next_nodes.append(exact)
                if node.single is not None:
                    next_nodes.append(node.single)
            if not next_nodes:
                return found
            nodes = next_nodes
        for node in nodes:
            found.extend(node.subscribers.items())
            if node.multi is not None:  # "a/#" also matches "a"
                found.extend(node.multi.subscribers.items())
        return found

    def _path(self, filter: str) -> list[tuple[str, _Node]] | None:
        """The nodes from the root to `filter`'s node with their level names, or None."""
        node = self._root
        path = [("", node)]
        for level in filter.split("/"):
            child = node.children.get(level)
            if child is None:
                return None
            path.append((level, child))
            node = child
        return path

    def _walk(self, node: _Node, levels: list[str]) -> Iterator[str]:
        if node.subscribers:
            yield "/".join(levels)
        for level, child in node.children.items():
            yield from self._walk(child, [*levels, level])
