#!/usr/bin/env python3
"""CPU of each thread of the broker during one connection storm (S5), and the connect rate.

``run.py`` gives the broker's total CPU; a storm's cost is split between the worker,
the supervisor (the session directory answers every CONNECT's claim) and their ZeroMQ
I/O threads. This starts ``kushi serve`` (or Mosquitto), runs mqbench's S5 storm against
it, and prints the CPU seconds of every thread that used any, read from
``/proc/PID/task/*/stat`` before and after.

    .venv/bin/python benchmarks/storm_cpu.py            # kushi serve, one worker
    .venv/bin/python benchmarks/storm_cpu.py mosquitto
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402  (benchmarks/run.py: scenarios, broker launcher, mqbench path)

TICKS = os.sysconf("SC_CLK_TCK")


def threads(pid: int) -> dict[tuple[int, int, str], tuple[float, float]]:
    """(process, thread, name) -> (user, system) CPU seconds, for ``pid`` and its children."""
    found: dict[tuple[int, int, str], tuple[float, float]] = {}
    processes = [pid]
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            processes += [int(child) for child in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
        except OSError:
            pass
    for process in processes:
        for task in os.listdir(f"/proc/{process}/task"):
            try:
                stat = Path(f"/proc/{process}/task/{task}/stat").read_text()
            except OSError:
                continue
            name = stat[stat.index("(") + 1:stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2:].split()
            found[(process, int(task), name)] = (int(fields[11]) / TICKS, int(fields[12]) / TICKS)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("broker", nargs="?", default="kushi", choices=["kushi", "mosquitto"])
    args = parser.parse_args()
    scenario = next(sc for sc in run.SCENARIOS if sc.name == "S5")
    with run.Broker(args.broker, 1, Path(tempfile.mkdtemp(prefix="kushi-storm-"))) as broker:
        assert broker.proc is not None
        before = threads(broker.proc.pid)
        bench = subprocess.run([str(run.MQBENCH), "-p", str(broker.port), "-d", "1", *scenario.args],
                               capture_output=True, text=True)
        after = threads(broker.proc.pid)
    print(next((line for line in bench.stdout.splitlines() if line.startswith("mqbench:")), bench.stdout))
    total = 0.0
    for key, (user, system) in sorted(after.items()):
        user -= before.get(key, (0.0, 0.0))[0]
        system -= before.get(key, (0.0, 0.0))[1]
        total += user + system
        if user + system >= 0.02:
            print(f"  pid {key[0]} {key[2]:<14} user {user:5.2f} s  sys {system:5.2f} s")
    print(f"  total {total:.2f} s of CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
