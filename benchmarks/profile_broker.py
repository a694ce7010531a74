#!/usr/bin/env python3
"""Profile the kushi broker under one mqbench scenario with py-spy.

Starts ``kushi serve`` on a free port, attaches ``py-spy record`` to it (and to
its worker processes, when a supervisor forks them), runs
mqbench (the scenario arguments are those of ``benchmarks/run.py``), then
prints py-spy's top functions by own time and by total time, and the broker CPU
per delivered message measured by ``brokercpu`` alongside (py-spy sampling adds
a few percent).

    .venv/bin/python benchmarks/profile_broker.py S1 -d 5
    .venv/bin/python benchmarks/profile_broker.py S3 --raw /tmp/s3.txt   # keep the folded stacks
    .venv/bin/python benchmarks/profile_broker.py S3 --workers 2         # both workers sampled

py-spy is a development tool: ``.venv/bin/pip install py-spy`` (not a kushi dependency).
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402  (benchmarks/run.py: scenarios, broker launcher, mqbench path)


def function_name(frame: str) -> str:
    """"route (kushi/worker/delivery.py:200)" -> "route delivery.py" (lines folded together)."""
    name, _, where = frame.partition(" (")
    return f"{name} {where.rsplit('/', 1)[-1].split(':')[0]}"


def top(folded: Path, limit: int) -> tuple[list[tuple[str, int]], list[tuple[str, int]], int]:
    """(own time, total time) per function from py-spy's folded stacks, and the sample count."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in folded.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = [function_name(frame) for frame in stack.split(";") if frame]
        samples += count
        if frames:
            own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    return own.most_common(limit), total.most_common(limit), samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", help="a scenario name of benchmarks/run.py (S1, S2, S3, SP, ...)")
    parser.add_argument("-d", "--duration", type=float, default=5)
    parser.add_argument("--limit", type=int, default=30)
    parser.add_argument("--raw", type=Path, help="keep py-spy's folded stacks in this file")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--workers", type=int, default=1, help="kushi worker processes")
    args = parser.parse_args()
    scenario = next(sc for sc in run.SCENARIOS if sc.name == args.scenario)
    py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy"
    workdir = Path(tempfile.mkdtemp(prefix="kushi-profile-"))
    folded = args.raw or workdir / "folded.txt"
    with run.Broker("kushi", args.workers, workdir) as broker:
        assert broker.proc is not None
        spy = subprocess.Popen([py_spy, "record", "--format", "raw", "--rate", str(args.rate),
                                "--nonblocking", "--subprocesses", "-o", str(folded),
                                "--pid", str(broker.proc.pid)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        bench = subprocess.run(
            [sys.executable, str(run.BROKERCPU), "run", "--pid", str(broker.proc.pid), "--",
             str(run.MQBENCH), "-p", str(broker.port), "-d", str(args.duration), *scenario.args],
            capture_output=True, text=True)
        spy.send_signal(signal.SIGINT)
        spy.wait(timeout=30)
    print(bench.stdout.strip())
    own, total, samples = top(folded, args.limit)
    print(f"\n{samples} samples; own time:")
    for name, count in own:
        print(f"  {100 * count / samples:5.1f}%  {name}")
    print("total time (function and what it calls):")
    for name, count in total:
        print(f"  {100 * count / samples:5.1f}%  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
