"""Shared subscription groups across workers: which workers have members, whose turn it is.

``$share/g/f`` spreads the messages over the members of g on every worker,
each message to one member (MQTT 5 section 4.8.2). The worker that receives
a publish picks the worker that serves it, in turn among the workers with a
member of g (itself included when it has one); the chosen worker then picks
one of its own members. Fair per worker, not per member, which the
specification allows (the choice of member is the server's).

Which workers have members comes from the interest gossip: a worker's first
local member of "$share/g/f" announces the filter, its last one withdraws it.
"""

from __future__ import annotations

from collections import defaultdict


class SharedGroups:
    """(group, filter) -> the nodes with members; round-robin choice among them."""

    def __init__(self, node: str) -> None:
        self.node = node
        self._nodes: dict[tuple[str, str], set[str]] = defaultdict(set)
        self._turn: dict[tuple[str, str], int] = defaultdict(int)

    def add(self, group: str, filter: str, node: str) -> None:
        self._nodes[(group, filter)].add(node)

    def remove(self, group: str, filter: str, node: str) -> None:
        nodes = self._nodes.get((group, filter))
        if nodes is not None:
            nodes.discard(node)
            if not nodes:
                del self._nodes[(group, filter)]
                self._turn.pop((group, filter), None)

    def remove_node(self, node: str) -> None:
        for key in [key for key, nodes in self._nodes.items() if node in nodes]:
            self.remove(key[0], key[1], node)

    def pick(self, group: str, filter: str, has_local_member: bool) -> str | None:
        """The node whose member gets the next message; None means this node."""
        candidates = sorted(self._nodes.get((group, filter), ()))
        if has_local_member:
            candidates.append(self.node)
        if not candidates:
            return None
        turn = self._turn[(group, filter)]
        self._turn[(group, filter)] = turn + 1
        choice = candidates[turn % len(candidates)]
        return None if choice == self.node else choice
