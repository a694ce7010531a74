#!/usr/bin/env python3
"""Where a CONNECT's instructions go: the connect phase counted stage by stage under callgrind.

Each stage runs the storm's clients (CONNECT 3.1.1, clean start, keep alive 60) one step
further than the one before, on real ``MQTTConnection`` and ``Broker`` objects with fake
transports (as ``profile_connect.py`` does); callgrind counts the whole process at two client
counts, and the difference per client is the stage's cost. The collector is off and the
process ends without freeing anything, so neither a collection nor the exit lands on one
stage by chance (``profile_connect.py --as-worker`` counts the collector as a worker sets it).

    .venv/bin/python benchmarks/connect_stages.py          # needs valgrind; 2-5 minutes (12 runs)

Stages (cumulative, except ``reader``, which branches off ``made``):
  setup     the CONNECT bytes and the fake transports (the replay's own)
  object    + MQTTConnection(broker, listener), its PacketReader included
  made      + connection_made: the broker files its connect timeout
  reader    made + the CONNECT through the reader alone (get_buffer, buffer_updated,
            next_packet: the decoder), nothing handled
  connect   made + the CONNECT read as a TCP transport hands it over: decoded, accepted,
            session made, CONNACK written
  turn      + a loop turn every 64 clients (mqbench keeps 64 connects in flight)
"""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from profile_connect import WINDOW, receive, storm_connects  # noqa: E402
from profile_hotpath import FakeTransport  # noqa: E402

from kushi.hooks.manager import HookManager  # noqa: E402
from kushi.worker.broker import Broker  # noqa: E402
from kushi.worker.connection import MQTTConnection  # noqa: E402
from kushi.worker.options import Options  # noqa: E402

STAGES = ("setup", "object", "made", "reader", "connect", "turn")
SIZES = (1000, 3000)


def run_stage(stage: str, clients: int) -> None:
    """Run ``clients`` clients up to ``stage``, then end the process without freeing them."""
    import uvloop
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    broker = Broker(Options(), HookManager(), loop=loop)
    connects = storm_connects(clients)
    transports = [FakeTransport() for _ in range(clients)]
    kept: list[object] = [None] * clients
    level = STAGES.index(stage)
    gc.disable()
    for i, data in enumerate(connects):
        if level == 0:
            kept[i] = data
            continue
        conn = kept[i] = MQTTConnection(broker, "bench")
        if level >= 2:
            conn.connection_made(transports[i])  # type: ignore[arg-type]
        if stage == "reader":
            buffer = conn.reader.get_buffer()
            buffer[:len(data)] = data
            conn.reader.buffer_updated(len(data))
            kept[i] = conn.reader.next_packet()
        elif level >= 4:
            receive(conn, data)
        if level >= 5 and i % WINDOW == 0:
            loop.call_soon(loop.stop)
            loop.run_forever()
    if level >= 4 and len(broker.connections) != clients:
        raise SystemExit(f"stage {stage}: {len(broker.connections)} of {clients} connected")
    sys.stdout.flush()
    os._exit(0)


def instructions(stage: str, clients: int) -> int:
    """Callgrind's instruction count for the whole process of ``stage`` at ``clients``."""
    out = Path(f"/tmp/connect_stages.{os.getpid()}.{stage}.{clients}")
    subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                    sys.executable, __file__, "--child", stage, str(clients)],
                   check=True, capture_output=True, env={**os.environ, "PYTHONHASHSEED": "0"})
    total = int(out.read_text().split("summary: ")[1].split()[0])
    out.unlink()
    return total


def main() -> int:
    if sys.argv[1:2] == ["--child"]:
        run_stage(sys.argv[2], int(sys.argv[3]))
    per_client = {stage: (instructions(stage, SIZES[1]) - instructions(stage, SIZES[0]))
                  / (SIZES[1] - SIZES[0]) for stage in STAGES}
    print("| stage | instructions per client | this stage alone |")
    print("|---|---|---|")
    for stage in STAGES:
        before = "made" if stage in ("reader", "connect") else STAGES[max(STAGES.index(stage) - 1, 0)]
        alone = per_client[stage] - per_client[before] if stage != "setup" else per_client[stage]
        print(f"| {stage} | {per_client[stage]:,.0f} | {alone:,.0f} |")
    broker_part = per_client["turn"] - per_client["setup"]
    reader_part = per_client["reader"] - per_client["made"]
    print(f"\nthe broker's part (turn - setup): {broker_part:,.0f}; of it the reader and decoder "
          f"{reader_part:,.0f} ({reader_part / broker_part:.0%}), the connection object "
          f"{per_client['object'] - per_client['setup']:,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
