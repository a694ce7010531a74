"""Shared subscriptions ($share/{group}/{filter}, MQTT 5 section 4.8.2).

The clients subscribed with the same ShareName and the same filter form one
group; a message matching the filter goes to one member of each matching
group, not to all of them. Groups are keyed by (group, filter): "$share/g/a/+"
and "$share/g/a/#" are two different groups even though both are named g.

`match(topic)` says which groups want a message and who their members are;
`pick()` chooses the member that gets it, round robin so that the load
spreads evenly, skipping members the caller reports as unavailable (offline,
disconnected, slow). The split lets the broker cache `match` per topic while
`pick` still rotates for every message.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import cast

from .trie import SubscriptionTrie

Member = tuple[str, object]
"""(key, value) of one group member: usually (client id, subscription options)."""


class _Group:
    """The members of one (group, filter) and where round robin continues."""

    __slots__ = ("name", "filter", "members", "next_index")

    def __init__(self, name: str, filter: str) -> None:
        self.name = name
        self.filter = filter
        self.members: dict[str, object] = {}
        self.next_index = 0


class SharedSubscriptions:
    """The shared-subscription groups of one broker, found by topic."""

    def __init__(self) -> None:
        # The trie finds the groups by topic: key = group name, value = _Group.
        self._trie = SubscriptionTrie()
        self._groups: dict[tuple[str, str], _Group] = {}
        self._groups_by_key: dict[str, set[tuple[str, str]]] = {}
        self._member_count = 0

    def __len__(self) -> int:
        """The number of (group, filter, key) memberships."""
        return self._member_count

    def add(self, group: str, filter: str, key: str, value: object) -> bool:
        """Make `key` a member of (group, filter) with `value`; True if it was not one.

        A member subscribing again has its value replaced.
        """
        entry = self._groups.get((group, filter))
        if entry is None:
            entry = self._groups[group, filter] = _Group(group, filter)
            self._trie.add(filter, group, entry)
        is_new = key not in entry.members
        entry.members[key] = value
        if is_new:
            self._groups_by_key.setdefault(key, set()).add((group, filter))
            self._member_count += 1
        return is_new

    def remove(self, group: str, filter: str, key: str) -> bool:
        """Remove `key` from (group, filter); True if it was a member.

        The group disappears with its last member.
        """
        entry = self._groups.get((group, filter))
        if entry is None or key not in entry.members:
            return False
        del entry.members[key]
        self._member_count -= 1
        memberships = self._groups_by_key[key]
        memberships.discard((group, filter))
        if not memberships:
            del self._groups_by_key[key]
        if not entry.members:
            del self._groups[group, filter]
            self._trie.remove(filter, group)
        return True

    def remove_key(self, key: str) -> list[tuple[str, str]]:
        """Remove `key` from every group (e.g. a session ending); return those (group, filter)."""
        memberships = list(self._groups_by_key.get(key, ()))
        for group, filter in memberships:
            self.remove(group, filter, key)
        return memberships

    def groups_of(self, key: str) -> frozenset[tuple[str, str]]:
        """The (group, filter) pairs `key` is a member of."""
        return frozenset(self._groups_by_key.get(key, ()))

    def members(self, group: str, filter: str) -> dict[str, object]:
        """A copy of {key: value} of the members of (group, filter); empty if none."""
        entry = self._groups.get((group, filter))
        return dict(entry.members) if entry is not None else {}

    def groups(self) -> list[tuple[str, str]]:
        """Every (group, filter) that has members."""
        return list(self._groups)

    def match(self, topic: str) -> list[tuple[str, str, list[Member]]]:
        """(group, filter, members) of every group whose filter matches `topic`."""
        found = cast("list[tuple[str, _Group]]", self._trie.match(topic))
        return [(entry.name, entry.filter, list(entry.members.items())) for _, entry in found]

    def pick(self, group: str, filter: str, candidates: Sequence[Member],
             is_available: Callable[[str], bool] | None = None) -> Member | None:
        """Choose the member of (group, filter) that gets the next message.

        `candidates` are the members as `match` returned them. Round robin:
        each call starts after the member chosen last time, so consecutive
        messages go to consecutive members. Members for which `is_available(key)`
        is False are skipped; None when no candidate is available.
        """
        entry = self._groups.get((group, filter))
        start = entry.next_index if entry is not None else 0
        count = len(candidates)
        for offset in range(count):
            index = (start + offset) % count
            member = candidates[index]
            if is_available is None or is_available(member[0]):
                if entry is not None:
                    entry.next_index = index + 1
                return member
        return None
