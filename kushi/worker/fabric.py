"""The cluster seam: how one worker's broker talks to the other workers.

The broker never knows whether it is alone. It reports interest changes,
inbound messages and retained changes to ``broker.fabric``; a cluster fabric
(``kushi.cluster``) carries them to the other workers and calls back
``broker.deliver_remote`` / ``broker.apply_retained``. In one process there is
nobody to tell, so ``LocalFabric`` does nothing, at the cost of one method
call per event.

A cluster fabric also has ``known_everywhere(filters)``, a future done when
every worker knows this one's interest in them (a SUBACK waits for it), and
``watch_live_retained()``: the topics of the retained messages routed live on
this worker while a new subscription waits (``LiveTopics``), which get no
retained copy after the wait (``kushi.worker.subscriptions``). One process
has neither: there is nobody to wait for.
"""

from __future__ import annotations

from collections.abc import Set
from typing import Protocol

from ..protocol.packets import Publish


class Fabric(Protocol):
    """What a broker needs from the cluster (see the contract's cluster seam)."""

    worker_id: int

    def interest_added(self, filter: str) -> None: ...
    def interest_removed(self, filter: str) -> None: ...
    def forward(self, message: Publish) -> None: ...
    def retained_changed(self, message: Publish) -> None: ...


class LocalFabric:
    """The fabric of a single process: there are no other workers to tell."""

    def __init__(self, worker_id: int = 0) -> None:
        self.worker_id = worker_id

    def interest_added(self, filter: str) -> None:
        """The first local subscriber to ``filter`` arrived; nobody else needs to know."""

    def interest_removed(self, filter: str) -> None:
        """The last local subscriber to ``filter`` left; nobody else needs to know."""

    def forward(self, message: Publish) -> None:
        """An inbound message; there is no other worker to forward it to."""

    def retained_changed(self, message: Publish) -> None:
        """A retained message changed here; there is no other worker to tell."""


class LiveTopics(Protocol):
    """The topics of the retained messages routed live on this worker since it was opened
    (``kushi.cluster.fabric.LiveRetainedTopics``), until ``close()``."""

    topics: Set[str]

    def close(self) -> None: ...


class _NothingLive:
    """The ``LiveTopics`` of a subscription that waits for nobody: no topic, ever."""

    topics: Set[str] = frozenset()

    def close(self) -> None:
        """Nothing to stop noting."""


NOTHING_LIVE: LiveTopics = _NothingLive()
