#!/usr/bin/env python3
"""The cluster's session bookkeeping per client of a connection storm, worker and directory apart.

Under ``kushi serve`` every CONNECT of a clean start without a will claims its client id
without waiting (``ClusterSessionHook.on_connect_authenticate`` ->
``SessionLink.claim_without_waiting``), and its end releases it (``on_disconnect`` ->
``will_cleared``, ``session_ended``). This replays N such clients through the real hook,
a real ``SessionLink`` and a real ``DirectoryNode`` on two real buses over ipc://, in one
process: the worker's bus and link on the main thread's loop, the directory's bus on a
second thread with its own loop (each node its own ZeroMQ context, as in ``kushi serve``).

The storm's shape: clients connect in batches of ``--batch`` (the claims a 5 ms gathering
holds at ~6,000 connects/s; each batch is queued in one go, so it goes as one request
whatever the timing), the next batch queued as soon as the previous one was sent; once
every claim is answered, the clients disconnect in batches of the same size (each batch of
releases one bus item). What the wall clock changes (how long a reply takes) changes no
batch, so instruction counts are load-independent. Count instructions per thread:

    for n in 1000 3000; do PYTHONHASHSEED=0 valgrind --tool=callgrind --separate-threads=yes \\
      --callgrind-out-file=/tmp/claims.cg.$n .venv/bin/python benchmarks/profile_claims.py -n $n; done
    .venv/bin/python benchmarks/profile_claims.py --callgrind /tmp/claims.cg.1000 /tmp/claims.cg.3000

The second command sums each thread's instructions (thread 1: the worker's loop; the other
Python thread: the directory; the rest: ZeroMQ's I/O threads) and prints
(total(3000) - total(1000)) / 2000 per client, for each side.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import glob
import pstats
import re
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kushi.cluster.directory_node import DirectoryNode  # noqa: E402
from kushi.cluster.session_hook import ClusterSessionHook  # noqa: E402
from kushi.cluster.session_link import DIRECTORY, SessionLink  # noqa: E402
from kushi.cluster.worker import tune_garbage_collector  # noqa: E402
from kushi.router.bus import Bus  # noqa: E402


def new_loop() -> asyncio.AbstractEventLoop:
    try:   # the workers and the supervisor run on uvloop
        import uvloop
        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()


class DirectoryThread(threading.Thread):
    """The supervisor's side: the directory's bus (the registrar) on its own loop."""

    def __init__(self, runtime: str) -> None:
        super().__init__(name="directory", daemon=True)
        self.runtime = runtime
        self.started_bus = threading.Event()
        self.node: DirectoryNode | None = None
        self.loop = new_loop()
        self.profile: cProfile.Profile | None = None
        self._finished: asyncio.Future[None] | None = None

    def run(self) -> None:
        asyncio.set_event_loop(self.loop)
        if self.profile is not None:
            self.profile.enable()
        self.loop.run_until_complete(self._serve())
        if self.profile is not None:
            self.profile.disable()

    async def _serve(self) -> None:
        bus = Bus(DIRECTORY, self.runtime)
        await bus.start()
        self.node = DirectoryNode(bus, lambda message: None)
        self._finished = self.loop.create_future()
        self.started_bus.set()
        await self._finished
        await bus.close()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(lambda: self._finished is not None and self._finished.set_result(None))


class StormClient:
    """What the hook reads of a connection: its client id and its session (no will)."""

    __slots__ = ("client_id", "session")

    def __init__(self, client_id: str) -> None:
        self.client_id = client_id
        self.session = SimpleNamespace(will=None)


class DriverOnly:
    """``--driver-only``: stands in for the hook, so that a run counts the replay's own cost."""

    def on_connect_authenticate(self, client: Any, packet: Any) -> bool:
        return True

    def on_disconnect(self, client: Any, error: BaseException | None, expire: bool) -> None:
        pass


async def storm(clients: int, batch: int, directory: DirectoryThread, runtime: str,
                driver_only: bool = False) -> None:
    bus = Bus("w1", runtime, registrar=DIRECTORY)
    await bus.start()
    link = SessionLink(bus)
    hook: Any = DriverOnly() if driver_only else ClusterSessionHook(SimpleNamespace(sessions=link), None)
    loop = asyncio.get_running_loop()
    sent: asyncio.Future[None] = loop.create_future()

    def batch_sent(send: Any) -> Any:
        """Wraps the link's sending of gathered claims or releases: the driver queues the next
        batch once this one went (one Python call per batch; a batch is never split)."""
        def sending() -> None:
            send()
            if not sent.done():
                sent.set_result(None)
        return sending

    link._send_claims = batch_sent(link._send_claims)       # type: ignore[method-assign]
    link._send_releases = batch_sent(link._send_releases)   # type: ignore[method-assign]
    connect = SimpleNamespace(clean_start=True, will=None)
    connected = [StormClient(f"storm-{n}") for n in range(clients)]
    for start in range(0, clients, batch):
        sent = loop.create_future()
        for client in connected[start:start + batch]:
            hook.on_connect_authenticate(client, connect)
        if not driver_only:
            await sent
    while link._claim_tasks or link._unanswered:   # the last batch's answer (a few polls, once)
        await asyncio.sleep(0.001)
    for start in range(0, clients, batch):
        sent = loop.create_future()
        for client in connected[start:start + batch]:
            hook.on_disconnect(client, None, True)
        if not driver_only:
            await sent
    assert directory.node is not None
    while len(directory.node.directory):   # every release handled on the other thread
        await asyncio.sleep(0.001)
    await bus.close()


def replay(clients: int, batch: int, profiles: list[cProfile.Profile] | None = None,
           driver_only: bool = False) -> None:
    """Run the storm; with ``profiles`` (two), cProfile the worker's thread and the directory's."""
    runtime = tempfile.mkdtemp(prefix="kushi-profile-claims-")
    directory = DirectoryThread(runtime)
    if profiles:
        directory.profile = profiles[1]
    directory.start()
    directory.started_bus.wait()
    tune_garbage_collector()   # as the worker process sets it
    loop = new_loop()
    try:
        if profiles:
            profiles[0].enable()
        loop.run_until_complete(storm(clients, batch, directory, runtime, driver_only))
        if profiles:
            profiles[0].disable()
    finally:
        directory.stop()
        directory.join()
        loop.close()
        shutil.rmtree(runtime, ignore_errors=True)


def thread_totals(prefix: str) -> dict[int, tuple[int, bool]]:
    """Thread number -> (instructions, runs Python) of callgrind's per-thread files ``prefix-NN``."""
    totals: dict[int, tuple[int, bool]] = {}
    for path in glob.glob(f"{prefix}-*"):
        number = int(path.rsplit("-", 1)[1])
        text = Path(path).read_text(errors="replace")
        summary = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
        totals[number] = (int(summary.group(1)) if summary else 0, "_PyEval_EvalFrameDefault" in text)
    return totals


def per_client(small: str, large: str) -> None:
    """Print instructions per client for each side from the two callgrind runs."""
    counts = [int(re.search(r"(\d+)$", prefix).group(1)) for prefix in (small, large)]   # type: ignore[union-attr]
    sides: list[dict[str, int]] = []
    for prefix in (small, large):
        side = {"worker": 0, "directory": 0, "zeromq threads": 0}
        for number, (total, python) in thread_totals(prefix).items():
            side["worker" if number == 1 else "directory" if python else "zeromq threads"] += total
        sides.append(side)
    clients = counts[1] - counts[0]
    for name in sides[0]:
        print(f"{name:>15}: {(sides[1][name] - sides[0][name]) / clients:10,.0f} instructions per client")
    print(f"{'all':>15}: {(sum(sides[1].values()) - sum(sides[0].values())) / clients:10,.0f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--clients", type=int, default=5000, help="clients (default 5000)")
    parser.add_argument("--batch", type=int, default=32, help="claims per request (default 32)")
    parser.add_argument("--callgrind", nargs=2, metavar=("SMALL", "LARGE"),
                        help="per-client instructions from two callgrind runs (--callgrind-out-file "
                             "values ending in their client counts)")
    parser.add_argument("--driver-only", action="store_true",
                        help="replace the hook by one that does nothing: the replay's own cost")
    parser.add_argument("--cprofile", action="store_true", help="print cProfile's view of each side")
    args = parser.parse_args()
    if args.callgrind:
        per_client(*args.callgrind)
        return 0
    profiles = [cProfile.Profile(), cProfile.Profile()] if args.cprofile else None
    started = time.process_time()
    replay(args.clients, args.batch, profiles, args.driver_only)
    cpu = time.process_time() - started
    print(f"{args.clients:,} clients claimed and released, {cpu / args.clients * 1e6:.1f} us CPU per "
          f"client, start-up included (both sides, all threads)")
    for side, profile in zip(("worker", "directory"), profiles or []):
        print(f"==== {side}")
        pstats.Stats(profile).sort_stats("tottime").print_stats(25)
    return 0


if __name__ == "__main__":
    sys.exit(main())
