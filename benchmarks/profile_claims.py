#!/usr/bin/env python3
"""The cluster's session bookkeeping per client of a connection storm, worker and directory apart.

Under ``kushi serve`` every CONNECT of a clean start without a will claims its client id
without waiting (``ClusterSessionHook.on_connect_authenticate`` ->
``SessionLink.claim_without_waiting``), and its end releases it (``on_disconnect`` ->
``will_cleared``, ``session_ended``). This replays N such clients through the real hook,
a real ``SessionLink`` and a real ``DirectoryNode`` on two real buses over ipc://: the
worker's side in this process, the directory's in a forked child (as the supervisor is
its own process under ``kushi serve``: each side has its own loop, ZeroMQ context and
garbage collector, so one side's allocations never start a collection on the other's
count).

The storm's shape: clients connect in batches of ``--batch`` (the claims a 5 ms gathering
holds at ~6,000 connects/s; each batch is queued in one go, so it goes as one request
whatever the timing), the next batch queued as soon as the previous one was sent; once
every claim is answered, the clients disconnect in batches of the same size (each batch of
releases one bus item). What the wall clock changes (how long a reply takes) changes no
batch, so instruction counts are load-independent. Count instructions per process and
thread (``%p``: valgrind follows the fork; ``--pids`` says which process is which):

    for n in 1000 3000; do PYTHONHASHSEED=0 valgrind --tool=callgrind --separate-threads=yes \\
      --callgrind-out-file=/tmp/claims.$n.%p .venv/bin/python benchmarks/profile_claims.py \\
      -n $n --pids /tmp/claims.$n.pids; done
    .venv/bin/python benchmarks/profile_claims.py --callgrind /tmp/claims.1000 /tmp/claims.3000

The second command prints (total(3000) - total(1000)) / 2000 per client for the worker's
Python thread, the directory's, and their ZeroMQ I/O threads. ``--driver-only`` replaces
the hook by one that does nothing: what the replay itself costs the worker's side.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import glob
import os
import pstats
import re
import shutil
import sys
import tempfile
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

COUNT = "bench-count"   # request to the directory: how many client ids it records
STOP = "bench-stop"     # request to the directory: the replay is over


def new_loop() -> asyncio.AbstractEventLoop:
    try:   # the workers and the supervisor run on uvloop
        import uvloop
        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()


def directory_process(runtime: str, ready: int, profile: bool) -> None:
    """The supervisor's side, in the forked child: the directory's bus (the registrar)."""
    async def serve() -> None:
        bus = Bus(DIRECTORY, runtime)
        await bus.start()
        node = DirectoryNode(bus, lambda message: None)
        finished = asyncio.get_running_loop().create_future()

        def stop(sender: str, payload: bytes) -> bytes:
            finished.set_result(None)
            return b""

        bus.serve(COUNT, lambda sender, payload: str(len(node.directory)).encode())
        bus.serve(STOP, stop)
        os.write(ready, b"1")
        await finished
        await asyncio.sleep(0.05)   # the STOP reply goes out before the bus closes
        await bus.close()

    tune_garbage_collector()   # the supervisor keeps CPython's settings; either way, its own
    profiler = cProfile.Profile() if profile else None
    loop = new_loop()
    if profiler is not None:
        profiler.enable()
    loop.run_until_complete(serve())
    if profiler is not None:
        profiler.disable()
        print("==== directory")
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    loop.close()


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


async def storm(clients: int, batch: int, runtime: str, driver_only: bool) -> None:
    """The worker's side: connect every client, then disconnect every one, in batches."""
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
    while await bus.request(DIRECTORY, COUNT) != b"0":   # every release handled there
        await asyncio.sleep(0.001)
    await bus.request(DIRECTORY, STOP)
    await bus.close()


def replay(clients: int, batch: int, profile: bool = False, driver_only: bool = False,
           pids: str | None = None) -> None:
    """Run the storm, the directory in a forked child; ``profile``: cProfile both sides."""
    runtime = tempfile.mkdtemp(prefix="kushi-profile-claims-")
    ready_read, ready_write = os.pipe()
    child = os.fork()   # before any loop or ZeroMQ context exists (neither is fork-safe)
    if child == 0:
        os.close(ready_read)
        try:
            directory_process(runtime, ready_write, profile)
        finally:
            sys.stdout.flush()
            os._exit(0)
    os.close(ready_write)
    if pids:
        Path(pids).write_text(f"worker {os.getpid()}\ndirectory {child}\n")
    os.read(ready_read, 1)   # the directory's bus is bound
    tune_garbage_collector()   # as the worker process sets it
    profiler = cProfile.Profile() if profile else None
    loop = new_loop()
    try:
        if profiler is not None:
            profiler.enable()
        loop.run_until_complete(storm(clients, batch, runtime, driver_only))
        if profiler is not None:
            profiler.disable()
    finally:
        loop.close()
        os.waitpid(child, 0)
        shutil.rmtree(runtime, ignore_errors=True)
    if profiler is not None:
        print("==== worker")
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


def side_totals(prefix: str) -> dict[str, int]:
    """Instructions of one run (``prefix``.PID-NN files, ``prefix``.pids): the worker's and the
    directory's Python thread (thread 1 of each process) and the ZeroMQ I/O threads."""
    roles = dict(line.split()[::-1] for line in Path(f"{prefix}.pids").read_text().splitlines())
    totals = {"worker": 0, "directory": 0, "zeromq threads": 0}
    for path in glob.glob(f"{prefix}.*-*"):
        pid, thread = re.search(r"\.(\d+)-(\d+)$", path).groups()   # type: ignore[union-attr]
        summary = re.search(r"^(?:summary|totals): (\d+)", Path(path).read_text(errors="replace"), re.M)
        side = roles[pid] if int(thread) == 1 else "zeromq threads"
        totals[side] += int(summary.group(1)) if summary else 0
    return totals


def per_client(small: str, large: str) -> None:
    """Print instructions per client for each side from the two callgrind runs."""
    counts = [int(re.search(r"(\d+)$", prefix).group(1)) for prefix in (small, large)]   # type: ignore[union-attr]
    before, after = side_totals(small), side_totals(large)
    clients = counts[1] - counts[0]
    for name in before:
        print(f"{name:>15}: {(after[name] - before[name]) / clients:10,.0f} instructions per client")
    print(f"{'all':>15}: {(sum(after.values()) - sum(before.values())) / clients:10,.0f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--clients", type=int, default=5000, help="clients (default 5000)")
    parser.add_argument("--batch", type=int, default=32, help="claims per request (default 32)")
    parser.add_argument("--driver-only", action="store_true",
                        help="replace the hook by one that does nothing: the replay's own cost")
    parser.add_argument("--cprofile", action="store_true", help="print cProfile's view of each side")
    parser.add_argument("--pids", help="write which process is the worker and which the directory here")
    parser.add_argument("--callgrind", nargs=2, metavar=("SMALL", "LARGE"),
                        help="per-client instructions from two callgrind runs (the --callgrind-out-file "
                             "values before .%%p, ending in their client counts; their .pids files)")
    args = parser.parse_args()
    if args.callgrind:
        per_client(*args.callgrind)
        return 0
    started = time.process_time()
    replay(args.clients, args.batch, args.cprofile, args.driver_only, args.pids)
    cpu = time.process_time() - started
    print(f"{args.clients:,} clients claimed and released, {cpu / args.clients * 1e6:.1f} us CPU per "
          f"client on the worker's side, start-up included")
    return 0


if __name__ == "__main__":
    sys.exit(main())
