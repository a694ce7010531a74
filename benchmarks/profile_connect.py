#!/usr/bin/env python3
"""The broker's Python cost per CONNECT, without sockets: a connection storm replayed.

As mqbench's storm (S5) does it: every client connects (CONNECT 3.1.1, keep alive 60),
then each sends PINGREQ, then each sends DISCONNECT and its connection is lost; the
broker's once-a-second ``tick`` runs after each of the three phases (a real storm of
10,000 clients at 10,000/s sees a tick or two while most of them are connected). Bytes
arrive as a TCP transport hands them over (``get_buffer``/``buffer_updated``); the loop's
callbacks (flushes, connect tasks) are run after each step, as one loop iteration would.
Real ``MQTTConnection`` and ``Broker`` objects on fake transports
(``profile_hotpath.FakeTransport``); what it leaves out is the kernel and the loop's I/O.

    .venv/bin/python benchmarks/profile_connect.py                 # us of CPU per client
    .venv/bin/python benchmarks/profile_connect.py allow --cprofile
    valgrind --tool=callgrind .venv/bin/python benchmarks/profile_connect.py allow -n 1000
    (and -n 3000: the difference of the two totals / 2000 = instructions per client)
    .venv/bin/python benchmarks/profile_connect.py none --loop uvloop --connect-only
    .venv/bin/python benchmarks/profile_connect.py none --loop uvloop --connect-only --as-worker

``--as-worker``: the collector tuned as a ``kushi serve`` worker tunes it
(``kushi.cluster.worker.tune_garbage_collector``), and the process ends without freeing the
storm (a storm's clients stay connected): the default counts CPython's default collector and,
under callgrind, the collection and deallocation of every client at exit, per client.

Hooks: ``none`` (an embedding program without hooks), ``allow`` (AllowAllHook),
``claim`` (AllowAllHook and a coroutine ``on_connect_authenticate`` that awaits one loop
turn), ``cluster`` (what a ``kushi serve`` worker without authentication runs: the real
``ClusterSessionHook`` and ``SessionLink``, whose claims go in batches to a stand-in for
the bus and the directory, answered a loop turn later; the stand-in's own work, the
directory's side, is a few hundred instructions a batch).
``--loop uvloop`` runs the broker on uvloop (as ``kushi serve`` does; a loop turn is then
``run_forever`` until a ``stop`` callback, whose own cost is counted too); the default,
asyncio's pure-Python loop, runs the ready callbacks directly and counts only them.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import sys
import time
import types
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
from profile_hotpath import FakeTransport, turn  # noqa: E402

import msgpack  # noqa: E402

from kushi.cluster import session_link  # noqa: E402
from kushi.cluster.session_hook import ClusterSessionHook  # noqa: E402
from kushi.cluster.session_link import SessionLink  # noqa: E402
from kushi.cluster.worker import tune_garbage_collector  # noqa: E402
from kushi.hooks.allow_all import AllowAllHook  # noqa: E402
from kushi.hooks.base import Hook  # noqa: E402
from kushi.hooks.manager import HookManager  # noqa: E402
from kushi.protocol.codec import encode  # noqa: E402
from kushi.protocol.packets import MQTT_3_1_1, Connect, Disconnect, Pingreq  # noqa: E402
from kushi.worker.broker import Broker  # noqa: E402
from kushi.worker.connection import MQTTConnection  # noqa: E402
from kushi.worker.options import Options  # noqa: E402


class DirectoryStandIn:
    """The part of ``kushi.router.bus.Bus`` a ``SessionLink`` uses, answering every claim batch
    as the session directory answers a storm's (every client id free), one loop turn later."""

    name = "w0"
    peers: set[str] = set()

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.generation = 0
        self.batches = 0

    def serve(self, kind: str, handler: Any) -> None:
        pass

    def on(self, kind: str, handler: Any) -> None:
        pass

    def ask(self, peer: str, kind: str, payload: bytes, on_answer: Any, timeout: float = 10.0) -> None:
        claims = msgpack.unpackb(payload)
        self.batches += 1
        first, self.generation = self.generation + 1, self.generation + len(claims)
        self.loop.call_soon(on_answer, msgpack.packb((first, [])), None)

    def send(self, recipient: str, kind: str, payload: bytes) -> None:
        pass   # releases: not in a connect phase


def cluster_hook(broker: Broker, loop: asyncio.AbstractEventLoop) -> Hook:
    """The session hook of a ``kushi serve`` worker, on a ``DirectoryStandIn``. Its claims
    gather for one loop turn (``CLAIM_GATHER`` 0), not 5 ms of the replay's slowed clock: a
    real storm's batches hold ~50 claims (benchmarks/PROFILE.md), a turn here 64."""
    session_link.CLAIM_GATHER = 0
    link = SessionLink(DirectoryStandIn(loop))   # type: ignore[arg-type]
    server = types.SimpleNamespace(broker=broker, options=broker.options)
    return ClusterSessionHook(types.SimpleNamespace(sessions=link), server)   # type: ignore[arg-type]


class AwaitedClaim(Hook):
    """Stands for the cluster's claim: a coroutine hook answered one loop turn later."""

    id = "awaited-claim"

    async def on_connect_authenticate(self, client: Any, packet: Connect) -> bool:
        await asyncio.sleep(0)
        return True


WINDOW = 64
"""uvloop: steps (a CONNECT, a PINGREQ or a DISCONNECT) handled per loop turn."""


def receive(conn: MQTTConnection, data: bytes) -> None:
    """Bytes from the socket, handed over as uvloop's TCP transport does (BufferedProtocol)."""
    buffer = conn.get_buffer(-1)
    buffer[:len(data)] = data
    conn.buffer_updated(len(data))


def storm_connects(clients: int) -> list[bytes]:
    """The storm's CONNECT packets, one per client, as mqbench sends them (3.1.1, keep alive 60)."""
    return [encode(Connect(protocol_version=MQTT_3_1_1, client_id=f"storm-{i}", keep_alive=60),
                   MQTT_3_1_1) for i in range(clients)]


def new_loop(kind: str) -> tuple[asyncio.AbstractEventLoop, Callable[[bool], None]]:
    """An event loop of ``kind`` and its ``turn(phase_ends)``: run what the broker scheduled."""
    if kind == "uvloop":
        import uvloop
        loop = uvloop.new_event_loop()

        steps = 0

        def uvloop_turn(phase_ends: bool = False) -> None:
            # a run_forever costs tens of microseconds of its own (signals, the loop's set-up):
            # one turn per WINDOW steps, as mqbench keeps --conn-window 64 connects in progress
            nonlocal steps
            steps += 1
            if phase_ends or steps % WINDOW == 0:
                loop.call_soon(loop.stop)
                loop.run_forever()
        return loop, uvloop_turn
    loop = asyncio.new_event_loop()
    return loop, lambda phase_ends=False: turn(loop)


def storm(hooks_kind: str, clients: int, profile: cProfile.Profile | None,
          loop_kind: str = "asyncio", connect_only: bool = False) -> float:
    """Microseconds of CPU per client (connect, ping, disconnect, lost; three ticks).

    ``connect_only``: the connect phase and its tick alone, what mqbench's connect rate
    measures (the clients stay connected; nothing after it runs, so callgrind counts it alone).
    """
    loop, run_ready = new_loop(loop_kind)
    asyncio.set_event_loop(loop)
    hooks = HookManager()
    if hooks_kind in ("allow", "claim"):
        hooks.add(AllowAllHook())
    if hooks_kind == "claim":
        hooks.add(AwaitedClaim())
    broker = Broker(Options(), hooks, loop=loop)
    if hooks_kind == "cluster":
        hooks.add(cluster_hook(broker, loop))
    connects = storm_connects(clients)
    ping, disconnect = encode(Pingreq(), MQTT_3_1_1), encode(Disconnect(), MQTT_3_1_1)
    conns: list[MQTTConnection] = []
    if profile is not None:
        profile.enable()
    started = time.process_time()
    # the ticks come at the storm's seconds, not the profiler's: under valgrind a storm of
    # 3,000 clients takes ~30 s, and the connect timeouts (10 s) would seem to run out
    storm_began = time.monotonic()
    # each step runs as the loop's, as it does live (the cluster's claims ask for the running
    # loop); run_ready needs none running, or uvloop refuses to start: two calls a step, in
    # every mode so that the modes compare
    inside = asyncio.events._set_running_loop
    for data in connects:
        inside(loop)
        conn = MQTTConnection(broker, "bench")
        conns.append(conn)
        conn.connection_made(FakeTransport())  # type: ignore[arg-type]
        receive(conn, data)
        inside(None)
        run_ready()
    run_ready(True)
    broker.tick(storm_began + 1)
    if connect_only:
        cpu = time.process_time() - started
        if profile is not None:
            profile.disable()
        if broker.connections_accepted != clients or len(broker.connections) != clients:
            raise SystemExit("the storm did not connect every client")
        return cpu / clients * 1e6
    for conn in conns:
        receive(conn, ping)
        run_ready()
    run_ready(True)
    broker.tick(storm_began + 2)
    for conn in conns:
        receive(conn, disconnect)
        conn.connection_lost(None)
        run_ready()
    run_ready(True)
    broker.tick(storm_began + 3)
    cpu = time.process_time() - started
    if profile is not None:
        profile.disable()
    if broker.connections_accepted != clients or broker.connections or broker.sessions:
        raise SystemExit("the storm did not connect and end every client")
    loop.close()
    return cpu / clients * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("hooks", nargs="*", help="none, allow, claim, cluster (default: all four)")
    parser.add_argument("-n", "--clients", type=int, default=20_000)
    parser.add_argument("--cprofile", action="store_true", help="and print where the time goes")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--connect-only", action="store_true",
                        help="only the connect phase (what S5's connect rate measures)")
    parser.add_argument("--as-worker", action="store_true",
                        help="the collector set as a `kushi serve` worker sets it, and the "
                             "storm's objects never freed (a storm's clients stay connected)")
    args = parser.parse_args()
    if args.as_worker:
        tune_garbage_collector()
    for kind in args.hooks or ["none", "allow", "claim", "cluster"]:
        profile = cProfile.Profile() if args.cprofile else None
        print(f"{kind:6} {storm(kind, args.clients, profile, args.loop, args.connect_only):6.1f} us of CPU per client")
        if profile is not None:
            pstats.Stats(profile).sort_stats("tottime").print_stats(25)
    if args.as_worker:
        # freeing 10,000 clients' objects at exit (a collection over all of them, then each
        # one's deallocation) is no part of a storm, but callgrind would count it per client
        sys.stdout.flush()
        os._exit(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
