#!/usr/bin/env python3
"""The cost of one batch on the bus between two nodes: ZeroMQ, msgpack, the drain, the loop.

Two real ``kushi.router.bus.Bus`` nodes in one process over ipc://, on uvloop as the
workers run: node ``a`` sends
one item (a 1 KiB payload) to ``b`` and waits until ``b``'s handler has it, ROUNDS
times. ``profile_crossing.py`` leaves the bus out (a stand-in keeps the items); this
is the part it leaves out, per batch. Wall time here is mostly the two ZeroMQ I/O
threads waking up; count instructions instead (all threads; the kernel left out):

    valgrind --tool=callgrind .venv/bin/python benchmarks/profile_bus.py 1000   # and 5000:
    # (Ir(5000) - Ir(1000)) / 4000 = instructions per batch sent and handled
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time

from kushi.router.bus import Bus


async def exchange(rounds: int) -> int:
    """Send ``rounds`` batches of one item from a to b, one at a time; how many b handled."""
    runtime = tempfile.mkdtemp(prefix="kushi-profile-bus-")
    a = Bus("a", runtime)
    b = Bus("b", runtime, registrar="a")
    await a.start()
    await b.start()
    loop = asyncio.get_running_loop()
    handled = 0
    waiter: asyncio.Future[None] = loop.create_future()

    def on_item(sender: str, payload: bytes) -> None:
        nonlocal handled
        handled += 1
        if not waiter.done():
            waiter.set_result(None)

    b.on("item", on_item)
    payload = b"x" * 1024
    try:
        for _ in range(rounds):
            waiter = loop.create_future()
            a.send("b", "item", payload)
            await waiter
    finally:
        await a.close()
        await b.close()
        shutil.rmtree(runtime, ignore_errors=True)
    return handled


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rounds", type=int, nargs="?", default=5000, help="batches sent (default 5000)")
    args = parser.parse_args()
    try:   # the workers run on uvloop (kushi.cluster.worker)
        import uvloop
        loop_factory = uvloop.new_event_loop
    except ImportError:
        loop_factory = asyncio.new_event_loop
    started = time.process_time()
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        handled = runner.run(exchange(args.rounds))
    cpu = time.process_time() - started
    print(f"{handled:,} batches handled ({handled:,} deliveries), {cpu / max(handled, 1) * 1e6:.1f} us CPU "
          f"per batch, start-up included (all threads)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
