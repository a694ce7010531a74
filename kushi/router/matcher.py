"""Who gets a message: the subscription trie and the shared groups behind one cache.

A broker matches every inbound PUBLISH; most traffic repeats a limited set of
topics, while subscriptions change far less often than messages arrive. So
the TopicMatcher keeps topic -> MatchResult in a dict and throws the whole
cache away whenever a subscription is added or removed (and when it grows past
`cache_size` topics, which bounds its memory when topics are endless, e.g.
one per device). A cached result is shared: callers must not change it.

Filters are given as subscribed: "$share/{group}/{filter}" goes to the shared
groups, anything else to the trie.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from kushi.protocol.topics import parse_shared

from .shared import Member, SharedSubscriptions
from .trie import SubscriptionTrie


class MatchResult:
    """The subscriptions a topic matches.

    `subscribers`: (key, value) per matching non-shared (filter, key); a key
    appears once per matching filter. `shared`: (group, filter, members) per
    matching shared group; choose the member with `TopicMatcher.pick`.
    """

    __slots__ = ("subscribers", "shared")

    def __init__(self, subscribers: tuple[Member, ...],
                 shared: tuple[tuple[str, str, tuple[Member, ...]], ...]) -> None:
        self.subscribers = subscribers
        self.shared = shared

    def __bool__(self) -> bool:
        return bool(self.subscribers or self.shared)

    def __repr__(self) -> str:
        return f"MatchResult(subscribers={self.subscribers!r}, shared={self.shared!r})"


class TopicMatcher:
    """Subscriptions (plain and shared) with a cache of topic -> MatchResult."""

    def __init__(self, cache_size: int = 65_536) -> None:
        self.trie = SubscriptionTrie()
        self.shared = SharedSubscriptions()
        self.cache_size = cache_size
        self.hits = 0
        self.misses = 0
        self._cache: dict[str, MatchResult] = {}

    def __len__(self) -> int:
        """The number of subscriptions, shared memberships included."""
        return len(self.trie) + len(self.shared)

    def add(self, filter: str, key: str, value: object) -> bool:
        """Subscribe `key` to `filter` with `value`; True if it was not subscribed to it."""
        self._cache.clear()
        group, topic_filter = parse_shared(filter)
        if group is None:
            return self.trie.add(topic_filter, key, value)
        return self.shared.add(group, topic_filter, key, value)

    def remove(self, filter: str, key: str) -> bool:
        """Unsubscribe `key` from `filter`; True if it was subscribed."""
        group, topic_filter = parse_shared(filter)
        if group is None:
            removed = self.trie.remove(topic_filter, key)
        else:
            removed = self.shared.remove(group, topic_filter, key)
        if removed:
            self._cache.clear()
        return removed

    def remove_key(self, key: str) -> list[str]:
        """Remove every subscription of `key`; return the filters as subscribed."""
        filters = self.trie.remove_key(key)
        filters += [f"$share/{group}/{filter}" for group, filter in self.shared.remove_key(key)]
        if filters:
            self._cache.clear()
        return filters

    def subscribers(self, filter: str) -> dict[str, object]:
        """{key: value} subscribed to exactly `filter` (a shared one: the group's members)."""
        group, topic_filter = parse_shared(filter)
        if group is None:
            return self.trie.subscribers(topic_filter)
        return self.shared.members(group, topic_filter)

    def match(self, topic: str) -> MatchResult:
        """The subscriptions matching the topic name `topic` (cached until subscriptions change)."""
        result = self._cache.get(topic)
        if result is not None:
            self.hits += 1
            return result
        self.misses += 1
        result = MatchResult(
            tuple(self.trie.match(topic)),
            tuple((group, filter, tuple(members))
                  for group, filter, members in self.shared.match(topic)),
        )
        if len(self._cache) >= self.cache_size:
            self._cache.clear()
        self._cache[topic] = result
        return result

    def pick(self, group: str, filter: str, members: Sequence[Member],
             is_available: Callable[[str], bool] | None = None) -> Member | None:
        """The member of a shared group to send the next message to (see SharedSubscriptions.pick)."""
        return self.shared.pick(group, filter, members, is_available)

    @property
    def cache_entries(self) -> int:
        """How many topics are cached right now."""
        return len(self._cache)
