"""kushi.cluster: one broker as several worker processes on one host.

Where to start reading:

- ``supervisor``   Supervisor / run_cluster / serve: reserves ports, forks the
                   workers, restarts them, signals, the inline client, stats.
- ``worker``       what a forked worker runs: bus join, snapshot, then the
                   kushi.Server with a BusFabric; SIGHUP reload, retirement.
- ``fabric``       BusFabric, the broker's cluster seam over the bus: interest,
                   forwarding, retained last-writer-wins, snapshots, barriers.
- ``session_link`` claims, takeovers and hand-over forwarding (fabric.sessions).
- ``session_hook`` the hook that ties a worker's CONNECTs and wills to it.
- ``handover``     forwarders that keep a moving session from losing messages.
- ``directory`` / ``directory_node``  the session directory in the supervisor,
                   and the wills it publishes when a worker dies.
- ``session_transfer``, ``wire``  sessions and messages as bytes.
- ``shared_groups`` shared subscription groups across workers (fabric side).

The bus itself (ZeroMQ over ipc://) is ``kushi.router.bus``; the ordering
of retained writes is ``kushi.router.bus_clock``.
"""
