#!/usr/bin/env python3
"""The broker's Python cost per CONNECT, without sockets: a connection storm replayed.

Each client as mqbench's storm (S5) does it: the connection is made, CONNECT (3.1.1,
keep alive 60) arrives, then PINGREQ, then DISCONNECT, and the connection is lost;
the loop's callbacks (flushes, connect tasks) are run after each step, as one loop
iteration would. Real ``MQTTConnection`` and ``Broker`` objects on fake transports
(``profile_hotpath.FakeTransport``); what it leaves out is the kernel and uvloop.

    .venv/bin/python benchmarks/profile_connect.py                 # us of CPU per client
    .venv/bin/python benchmarks/profile_connect.py allow --cprofile
    valgrind --tool=callgrind .venv/bin/python benchmarks/profile_connect.py allow -n 2000

Hooks: ``none`` (an embedding program without hooks), ``allow`` (AllowAllHook, as
``kushi serve`` without authentication), ``claim`` (AllowAllHook and a coroutine
``on_connect_authenticate`` that awaits one loop turn, as the cluster's session claim).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from profile_hotpath import FakeTransport, turn  # noqa: E402

from kushi.hooks.allow_all import AllowAllHook  # noqa: E402
from kushi.hooks.base import Hook  # noqa: E402
from kushi.hooks.manager import HookManager  # noqa: E402
from kushi.protocol.codec import encode  # noqa: E402
from kushi.protocol.packets import MQTT_3_1_1, Connect, Disconnect, Pingreq  # noqa: E402
from kushi.worker.broker import Broker  # noqa: E402
from kushi.worker.connection import MQTTConnection  # noqa: E402
from kushi.worker.options import Options  # noqa: E402


class AwaitedClaim(Hook):
    """Stands for the cluster's claim: a coroutine hook answered one loop turn later."""

    id = "awaited-claim"

    async def on_connect_authenticate(self, client: Any, packet: Connect) -> bool:
        await asyncio.sleep(0)
        return True


def storm(hooks_kind: str, clients: int, profile: cProfile.Profile | None) -> float:
    """Microseconds of CPU per client (connect, ping, disconnect, lost)."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    hooks = HookManager()
    if hooks_kind in ("allow", "claim"):
        hooks.add(AllowAllHook())
    if hooks_kind == "claim":
        hooks.add(AwaitedClaim())
    broker = Broker(Options(), hooks, loop=loop)
    connects = [encode(Connect(protocol_version=MQTT_3_1_1, client_id=f"storm-{i}", keep_alive=60),
                       MQTT_3_1_1) for i in range(clients)]
    ping, disconnect = encode(Pingreq(), MQTT_3_1_1), encode(Disconnect(), MQTT_3_1_1)
    if profile is not None:
        profile.enable()
    started = time.process_time()
    for data in connects:
        conn = MQTTConnection(broker, "bench")
        conn.connection_made(FakeTransport())  # type: ignore[arg-type]
        conn.data_received(data)
        turn(loop)
        conn.data_received(ping)
        turn(loop)
        conn.data_received(disconnect)
        conn.connection_lost(None)
        turn(loop)
    cpu = time.process_time() - started
    if profile is not None:
        profile.disable()
    if broker.connections_accepted != clients or broker.connections or broker.sessions:
        raise SystemExit("the storm did not connect and end every client")
    loop.close()
    return cpu / clients * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("hooks", nargs="*", help="none, allow, claim (default: all three)")
    parser.add_argument("-n", "--clients", type=int, default=20_000)
    parser.add_argument("--cprofile", action="store_true", help="and print where the time goes")
    args = parser.parse_args()
    for kind in args.hooks or ["none", "allow", "claim"]:
        profile = cProfile.Profile() if args.cprofile else None
        print(f"{kind:6} {storm(kind, args.clients, profile):6.1f} us of CPU per client")
        if profile is not None:
            pstats.Stats(profile).sort_stats("tottime").print_stats(25)
    return 0


if __name__ == "__main__":
    sys.exit(main())
