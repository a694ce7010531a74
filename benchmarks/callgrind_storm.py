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

``--sparse``: not a storm but SP's pairs (32 QoS 0 publisher/subscriber pairs, 64-byte
payloads, each pair its own topic) slow enough that every message comes alone in its read
and its loop iteration, as SP10 has them without valgrind:

    .venv/bin/python benchmarks/callgrind_storm.py serve --sparse
    .venv/bin/python benchmarks/callgrind_storm.py mosquitto --sparse

Two runs of ``-d`` seconds at the two ``--rates`` (messages/s a publisher), counted from
the publishing's start (mqbench -v says every CONNACK and SUBACK came back) to mqbench's
end; the slower run's count is taken from the faster one's. What a run pays once (the
drain, the disconnects) and what the server does per second (its tick) drop out: what is
left is the instructions of one more lone message. The wake-ups (``epoll_wait`` calls) a
message say how alone they came: a little over 1 when each had its own loop iteration
(the tick's wake-ups on top); faster rates, or a valgrind slowed by a loaded machine, let
messages meet in an iteration, and then they cost less. Mosquitto, started as root, stays
root for the run: as the user mosquitto callgrind_control cannot reach it.
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


def start(kind: str, work: Path, claim_gather: float) -> tuple[subprocess.Popen, int]:
    """``kind``'s server under callgrind, instrumentation off, once it listens: (process, port)."""
    port = run.free_port()
    command = storm_floor.command(kind, port, work)
    if command[1:3] == ["-m", "kushi.ops.cli"]:
        command = [command[0], "-c", UNDER_VALGRIND, *command[3:]]
    if kind == "mosquitto" and os.geteuid() == 0:
        # started as root, Mosquitto becomes the user mosquitto, and callgrind_control (vgdb) then
        # finds no pipe of the process's: it stays root for the run
        conf = Path(command[-1])
        conf.write_text(conf.read_text() + "user root\n")
    valgrind = ["valgrind", "--tool=callgrind", "--trace-children=yes", "--instr-atstart=no",
                f"--callgrind-out-file={work}/cg.%p"]
    server = subprocess.Popen(valgrind + command, cwd=work, stdout=subprocess.DEVNULL,
                              stderr=open(work / "valgrind.log", "w"),
                              env=dict(os.environ, PYTHONHASHSEED="0", CLAIM_GATHER=str(claim_gather)),
                              preexec_fn=lambda: (os.setpgrp(), run.raise_nofile()))
    run.wait_for_port(port, server, timeout=300)
    time.sleep(3)   # the workers' start-up after the port opens (joining the bus): not counted
    return server, port


def wakeups(path: Path) -> int:
    """How many times the process of a callgrind dump waited in epoll (``epoll_wait`` or
    ``epoll_pwait`` calls): its event loop's iterations, the wake-ups."""
    names: dict[str, str] = {}   # the dump names a function once, then by its number
    waits = 0
    called = ""
    for line in path.read_text().splitlines():
        if line.startswith(("fn=(", "cfn=(")):
            number, _, name = line.partition("=")[2].partition(" ")
            if name:
                names[number] = name
            called = names.get(number, "") if line[0] == "c" else ""
        elif line.startswith("calls=") and called in ("epoll_wait", "epoll_pwait"):
            waits += int(line[6:].split()[0])
    return waits


def dumped(work: Path) -> list[tuple[str, int, int]]:
    """(process, instructions, wake-ups) of each process's first dump in ``work``: "process"
    alone, or the supervisor (the first pid) and the worker of ``kushi serve``."""
    dumps = sorted(work.glob("cg.*.1"))   # one per process: the dump control(--dump) took
    counted = []
    for dump in dumps:
        pid = dump.name.split(".")[1]
        role = "process" if len(dumps) == 1 else ("supervisor" if dump is dumps[0] else "worker")
        counted.append((f"{role} (pid {pid})", totals(dump), wakeups(dump)))
    return counted


def storm(args: argparse.Namespace) -> None:
    """The connect phase of a storm of ``args.clients`` clients, per connect."""
    work = Path(tempfile.mkdtemp(prefix="kushi-cg-"))
    server, port = start(args.kind, work, args.claim_gather)
    try:
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
    for process, instructions, _ in dumped(work):
        print(f"{args.kind} {process}: {instructions / args.clients:,.0f} instructions per connect")


def sp_shape() -> list[str]:
    """SP's mqbench arguments as benchmarks/run.py has them (32 QoS 0 pairs, each its own
    topic, mqbench's 64-byte payloads), without its rate: a sparse run sets its own."""
    args = list(next(scenario.args for scenario in run.SCENARIOS if scenario.name == "SP"))
    at = args.index("--rate")
    return args[:at] + args[at + 2:]


def sparse_run(args: argparse.Namespace, rate: float) -> tuple[int, list[tuple[str, int, int]]]:
    """One sparse run at ``rate`` messages/s per publisher: (messages delivered, [(process,
    instructions)]), counted from the start of the publishing (every subscription in place)
    to mqbench's end."""
    work = Path(tempfile.mkdtemp(prefix="kushi-cg-"))
    server, port = start(args.kind, work, args.claim_gather)
    try:
        control(server.pid, "--instr=on")
        bench = subprocess.Popen([str(run.MQBENCH), "-p", str(port), *sp_shape(), "--rate", str(rate),
                                  "-d", str(args.duration), "--warmup", "0", "-v"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert bench.stderr is not None and bench.stdout is not None
        for line in bench.stderr:   # -v: this line once every CONNACK and SUBACK came back
            if "connections ready" in line:
                control(server.pid, "--zero")
                break
        else:
            raise SystemExit(f"mqbench ended before publishing:\n{bench.stdout.read()}")
        output = bench.stdout.read()
        bench.wait()
        control(server.pid, "--dump")
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
    print(f"{args.kind} at {rate:g} msg/s a publisher: dumps in {work}", file=sys.stderr)
    return int(run.parse_result(output)["recv"]), dumped(work)


def sparse(args: argparse.Namespace) -> None:
    """Instructions per delivered message, one message per read: two runs of the same length
    at two rates, the slower one's count taken from the faster one's. What a run pays once
    (the drain, the 64 disconnects) and what the broker does per second (its tick, the
    statistics) drop out: what is left is what one more message costs."""
    slow, fast = args.rates
    few, first = sparse_run(args, slow)
    many, second = sparse_run(args, fast)
    print(f"{args.kind}, 32 pairs for {args.duration:g} s: {few} messages delivered at {slow:g} msg/s "
          f"a publisher, {many} at {fast:g}")
    for (process, more, woken), (_, fewer, _) in zip(second, first):
        print(f"{args.kind} {process}: {(more - fewer) / (many - few):,.0f} instructions per message "
              f"({more / many:,.0f} in the faster run alone, {woken / many:.2f} wake-ups a message)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=("server", "serve", "mosquitto"))
    parser.add_argument("-n", "--clients", type=int, default=2000)
    parser.add_argument("--claim-gather", type=float, default=0.1)
    parser.add_argument("--kushi-python", default=sys.executable,
                        help="the interpreter the server runs under (as run.py's)")
    parser.add_argument("--sparse", action="store_true",
                        help="not a storm: SP's pairs, each message alone in its read (see the docstring)")
    parser.add_argument("--rates", type=float, nargs=2, default=(0.5, 1.5),
                        help="--sparse: the two runs' messages/s per publisher (32 publishers)")
    parser.add_argument("-d", "--duration", type=float, default=30.0,
                        help="--sparse: each run's publishing seconds")
    args = parser.parse_args()
    run.KUSHI_PYTHON = os.path.abspath(args.kushi_python)
    run.build_mqbench()
    if args.sparse:
        sparse(args)
    else:
        storm(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
