"""A hybrid logical clock: a total order of events across the processes of one host.

Retained messages are last-writer-wins. Wall clocks of two processes on one
host agree closely, but two writes in the same millisecond, or a clock that
steps back, would decide differently on different workers. A hybrid logical
clock (Kulkarni et al., 2014) keeps the wall-clock millisecond where it can
and a logical counter where it cannot, and moves past every time it has
seen, so an event caused by another (a write after receiving one) is always
ordered after it. Adding the node name breaks the remaining ties, so every
worker sorts every pair of writes the same way.

The clock never reads the time itself: callers pass ``physical_ms``.
"""

from __future__ import annotations

#: (wall milliseconds, logical counter, node name): compared as a tuple
Order = tuple[int, int, str]


class HybridClock:
    """The hybrid logical clock of one node."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.wall = 0
        self.logical = 0

    def tick(self, physical_ms: int) -> Order:
        """The order of a local event happening now; greater than every order seen."""
        if physical_ms > self.wall:
            self.wall, self.logical = physical_ms, 0
        else:
            self.logical += 1
        return (self.wall, self.logical, self.node)

    def observe(self, remote: Order, physical_ms: int) -> None:
        """Move past ``remote`` (received from another node), so later local events sort after it."""
        remote_wall, remote_logical = remote[0], remote[1]
        wall = max(self.wall, remote_wall, physical_ms)
        if wall == self.wall and wall == remote_wall:
            logical = max(self.logical, remote_logical) + 1
        elif wall == self.wall:
            logical = self.logical + 1
        elif wall == remote_wall:
            logical = remote_logical + 1
        else:
            logical = 0
        self.wall, self.logical = wall, logical
