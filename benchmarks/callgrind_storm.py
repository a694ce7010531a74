#!/usr/bin/env python3
"""Instructions per connect of a live broker through a connection storm, under callgrind.

A wall-clock storm here moves by +-25% between rounds; instruction counts do not move with
the machine's load. This starts a server under ``valgrind --tool=callgrind``
(``--trace-children=yes``: ``kushi serve``'s worker is forked, and counted apart from the
supervisor), switches instrumentation on once it listens, zeroes the counters, runs an
mqbench storm of ``-n`` clients (held while they connect), and dumps the counters once every
client is connected (ss counts the established connections): the connect phase alone, as
S5's rate counts it, with uvloop, ZeroMQ, msgpack and libc in it (the kernel not).

    .venv/bin/python benchmarks/callgrind_storm.py serve -n 2000
    .venv/bin/python benchmarks/callgrind_storm.py server -n 2000
    .venv/bin/python benchmarks/callgrind_storm.py serve --kushi-python build/venv-compiled/bin/python

prints each process's instructions per connect (for ``serve``: the supervisor, with the
session directory, and the worker). Two adjustments for valgrind, both for the run only:
- valgrind 3.19 does not know ``pidfd_open``, with which the supervisor watches its
  workers: it is replaced by a pipe that never becomes readable (nothing exits here);
- under valgrind a storm runs at ~400 connects/s, so the worker's claims would go a few
  at a time after their 5 ms of gathering; ``--claim-gather`` (0.1 s by default) gives
  batches of a real storm's size (~40-50 claims, benchmarks/PROFILE.md section 20).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402  (free ports, the mqbench path)
import storm_floor  # noqa: E402  (the servers' commands)

UNDER_VALGRIND = (
    "import os, runpy, sys; os.pidfd_open = lambda pid, flags=0: os.pipe()[0]; "
    "import kushi.cluster.session_link as link; link.CLAIM_GATHER = float(os.environ['CLAIM_GATHER']); "
    "sys.argv = ['kushi'] + sys.argv[1:]; runpy.run_module('kushi.ops.cli', run_name='__main__')"
)
"""``python -m kushi.ops.cli`` with the two adjustments of the module docstring."""


def established(port: int) -> int:
    """How many connections to ``port`` are established."""
    listing = subprocess.run(["ss", "-Htn", "state", "established", f"( sport = :{port} )"],
                             capture_output=True, text=True).stdout
    return listing.count("\n")


def control(pid: int, *options: str) -> None:
    """``callgrind_control`` for ``pid`` and the processes it forked (the workers) only: without
    a pid it would act on every callgrind run on the machine."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    for process in [pid, *map(int, children)]:
        subprocess.run(["callgrind_control", *options, str(process)], capture_output=True)


def totals(path: Path) -> int:
    """The instruction count of one callgrind dump."""
    for line in path.read_text().splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise ValueError(f"no totals in {path}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=("server", "serve"))
    parser.add_argument("-n", "--clients", type=int, default=2000)
    parser.add_argument("--claim-gather", type=float, default=0.1)
    parser.add_argument("--kushi-python", default=sys.executable,
                        help="the interpreter the server runs under (as run.py's)")
    args = parser.parse_args()
    run.KUSHI_PYTHON = os.path.abspath(args.kushi_python)
    work = Path(tempfile.mkdtemp(prefix="kushi-cg-"))
    port = run.free_port()
    command = storm_floor.command(args.kind, port, work)
    if command[1:3] == ["-m", "kushi.ops.cli"]:
        command = [command[0], "-c", UNDER_VALGRIND, *command[3:]]
    valgrind = ["valgrind", "--tool=callgrind", "--trace-children=yes", "--instr-atstart=no",
                f"--callgrind-out-file={work}/cg.%p"]
    server = subprocess.Popen(valgrind + command, cwd=work, stdout=subprocess.DEVNULL,
                              stderr=open(work / "valgrind.log", "w"),
                              env=dict(os.environ, PYTHONHASHSEED="0", CLAIM_GATHER=str(args.claim_gather)),
                              preexec_fn=lambda: (os.setpgrp(), run.raise_nofile()))
    try:
        run.wait_for_port(port, server, timeout=300)
        time.sleep(3)   # the workers' start-up after the port opens (joining the bus): not counted
        control(server.pid, "--instr=on")
        control(server.pid, "--zero")
        storm = subprocess.Popen([str(run.MQBENCH), "-p", str(port), "-d", "30", "--conns",
                                  str(args.clients), "--conn-window", "64", "-k", "600"],
                                 stdout=subprocess.PIPE, text=True, preexec_fn=run.raise_nofile)
        while established(port) < args.clients:
            if storm.poll() is not None:
                raise SystemExit(f"the storm ended early:\n{storm.stdout.read() if storm.stdout else ''}")
            time.sleep(0.2)   # polling ss: the storm reports nothing before its end
        control(server.pid, "--dump")
        storm.kill()
        storm.wait()
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
    dumps = sorted(work.glob("cg.*.1"))   # one per process: the dump taken above
    for dump in dumps:
        pid = dump.name.split(".")[1]
        role = "process" if len(dumps) == 1 else ("supervisor" if dump is dumps[0] else "worker")
        print(f"{args.kind} {role} (pid {pid}): {totals(dump) / args.clients:,.0f} instructions per connect")
    return 0


if __name__ == "__main__":
    sys.exit(main())
