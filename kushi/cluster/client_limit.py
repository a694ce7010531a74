"""``Options.max_clients`` over several workers: the whole broker's connected clients count.

On its own, each worker refuses a CONNECT beyond ``max_clients`` counting only
its own connections (``kushi.worker.connect``), which would let N workers take
N x ``max_clients``. The supervisor knows every worker's count (the statistics
each worker sends it every second) and sends the counts back to every worker
(``CONNECTED_COUNTS``) each time a snapshot arrives. ``ClusterClientLimit``,
the first hook of each worker when ``max_clients`` is set, adds the other
workers' counts to its own and refuses one too many with 0x97 Quota exceeded
(3.1.1: "server unavailable"), as one process does.

The other workers' counts are up to about a second old: a burst of CONNECTs
spread over the workers within that second can overshoot the limit by what
the others accepted meanwhile, never beyond N x ``max_clients``. A client id
connected on this worker may still take its own session over, as on one
worker; one connected on another worker counts as a new client here.
"""

from __future__ import annotations

from typing import Any, Mapping

from ..hooks.base import Hook
from ..protocol.packets import Connect

CONNECTED_COUNTS = "connected"
"""Bus kind, supervisor -> workers: msgpack {node name: connected clients}."""

QUOTA_EXCEEDED = 0x97


class ClusterClientLimit(Hook):
    """Refuses a CONNECT when this worker's clients plus the others' reach ``max_clients``."""

    id = "cluster-client-limit"

    def __init__(self, server: Any, node: str) -> None:
        self.server = server
        self.node = node
        self.clients_elsewhere = 0

    def counts_received(self, counts: Mapping[str, int]) -> None:
        """The supervisor's latest {node: connected clients}; this worker's own is not used."""
        self.clients_elsewhere = sum(n for node, n in counts.items() if node != self.node)

    def on_connect(self, client: Any, packet: Connect) -> int | None:
        connections = self.server.broker.connections
        if client.client_id in connections:
            return None
        if len(connections) + self.clients_elsewhere >= self.server.options.max_clients:
            return QUOTA_EXCEEDED
        return None
