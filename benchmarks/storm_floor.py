#!/usr/bin/env python3
"""How fast a Python server on this machine can take a connection storm at all, beside kushi.

S5's target is 10,000 connects/s. This runs mqbench's storm (S5's arguments, held 1 s)
against four servers, one after the other, ``--rounds`` times, and prints each one's
connect rate and the CPU its processes used (user and system, from /proc): over the whole
storm (connect, ping, disconnect), and per connect during the connect phase alone, the part
mqbench's connect rate counts, beside mqbench's own CPU per connect (the load generator
shares the two cores):

- ``floor``: a bare uvloop protocol that answers CONNECT with a fixed CONNACK, PINGREQ
  with PINGRESP and closes on DISCONNECT: no parsing, no session, nothing kushi does.
  What is left is uvloop's accept and transports and the kernel: the most a Python
  server on uvloop gets here;
- ``server``: a one-process ``kushi.Server`` (no hooks), as an embedding program runs it;
- ``serve``: ``kushi serve --workers 1`` (supervisor, worker, session directory);
- ``mosquitto``: Mosquitto with ``../shared/tools/mosquitto-bench.conf``.

    .venv/bin/python benchmarks/storm_floor.py              # 3 rounds
    .venv/bin/python benchmarks/storm_floor.py --rounds 1 floor serve

The floor and the one-process server run in a child Python process started by this script
(``--child KIND PORT``), so every server is measured the same way: from outside.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402  (benchmarks/run.py: scenarios, broker launcher, mqbench path)

TICKS = os.sysconf("SC_CLK_TCK")
KINDS = ("floor", "server", "serve", "mosquitto")
CONNACK = b"\x20\x02\x00\x00"
PINGRESP = b"\xd0\x00"
SAMPLE = 0.01   # seconds between two readings of the CPU counters during a storm


class FloorProtocol(asyncio.Protocol):
    """Answers mqbench's storm with fixed bytes; assumes one packet per read, as the storm sends."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        kind = data[0] & 0xF0
        if kind == 0x10:
            self.transport.write(CONNACK)
        elif kind == 0xC0:
            self.transport.write(PINGRESP)
        elif kind == 0xE0:
            self.transport.close()


async def serve_child(kind: str, port: int) -> None:
    """The ``floor`` or ``server`` process: listen on ``port`` until SIGINT."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGINT, stop.set)
    if kind == "floor":
        server = await asyncio.get_running_loop().create_server(
            FloorProtocol, "127.0.0.1", port, backlog=4096)
        await stop.wait()
        server.close()
        return
    import kushi
    broker = kushi.Server(kushi.Options())
    broker.add_listener(kushi.TCP("tcp", f"127.0.0.1:{port}"))
    await broker.start()
    await stop.wait()
    await broker.close()


def command(kind: str, port: int, workdir: Path) -> list[str]:
    if kind in ("floor", "server"):
        return [run.KUSHI_PYTHON, __file__, "--child", kind, str(port)]
    broker = run.Broker("mosquitto" if kind == "mosquitto" else "kushi", 1, workdir)
    broker.port = port
    return broker.command()


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of ``pid`` and its children (the workers of ``kushi serve``)."""
    user = system = 0.0
    pids = [pid]
    try:
        pids += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        pass
    for process in pids:
        try:
            stat = Path(f"/proc/{process}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        user += int(fields[11]) / TICKS
        system += int(fields[12]) / TICKS
    return user, system


@dataclass
class Storm:
    """One storm's figures: its connect rate, the server's CPU over the whole storm, and the
    server's and mqbench's CPU per connect during the connect phase alone (what the rate
    counts), in microseconds."""

    rate: float
    user: float
    system: float
    connect_user: float
    connect_system: float
    generator: float


def storm(kind: str, workdir: Path) -> Storm:
    """One storm against a fresh ``kind`` server.

    The CPU of the server's processes and of mqbench is read every SAMPLE seconds while
    the storm runs; the connect phase is the first ``connect_s`` seconds mqbench reports.
    """
    port = run.free_port()
    scenario = next(sc for sc in run.SCENARIOS if sc.name == "S5")
    proc = subprocess.Popen(command(kind, port, workdir), cwd=workdir, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                            preexec_fn=lambda: (os.setpgrp(), run.raise_nofile()))
    try:
        run.wait_for_port(port, proc)
        user0, system0 = cpu_seconds(proc.pid)
        started = time.monotonic()
        bench = subprocess.Popen([str(run.MQBENCH), "-p", str(port), "-d", "1", *scenario.args],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 preexec_fn=run.raise_nofile)
        samples = []   # (seconds since the start, server (user, system), mqbench's user + system)
        while bench.poll() is None:
            samples.append((time.monotonic() - started, cpu_seconds(proc.pid), sum(cpu_seconds(bench.pid))))
            time.sleep(SAMPLE)   # sampling the CPU counters while the storm runs
        out, err = bench.communicate()
        user1, system1 = cpu_seconds(proc.pid)
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    found = re.search(r"conn_rate=(\d+)", out)
    phase = re.search(r"connect_s=([0-9.]+)", out)
    if found is None or phase is None or "failed=0" not in out:
        raise SystemExit(f"{kind}: the storm failed:\n{out}{err}")
    conns = int(re.search(r"conns=(\d+)", out).group(1))   # type: ignore[union-attr]
    ended = [sample for sample in samples if sample[0] <= float(phase.group(1)) + SAMPLE / 2]
    (_, (user_a, system_a), gen_a), (_, (user_b, system_b), gen_b) = samples[0], ended[-1]
    per_connect = 1e6 / conns
    return Storm(float(found.group(1)), user1 - user0, system1 - system0,
                 (user_b - user_a) * per_connect, (system_b - system_a) * per_connect,
                 (gen_b - gen_a) * per_connect)


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        import uvloop
        uvloop.run(serve_child(sys.argv[2], int(sys.argv[3])))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kinds", nargs="*", default=list(KINDS), help=", ".join(KINDS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--kushi-python", default=sys.executable,
                        help="the interpreter the kushi servers run under (as run.py's)")
    args = parser.parse_args()
    run.KUSHI_PYTHON = os.path.abspath(args.kushi_python)
    print(f"kushi: {run.kushi_build(run.KUSHI_PYTHON)} ({run.KUSHI_PYTHON})", flush=True)
    run.build_mqbench()
    workdir = Path(tempfile.mkdtemp(prefix="kushi-floor-"))
    results: dict[str, list[Storm]] = {kind: [] for kind in args.kinds}
    for _ in range(args.rounds):
        for kind in args.kinds:   # interleaved, as run.py does, so load drifts hit each alike
            results[kind].append(storm(kind, workdir))
    print("| server | connects/s (median) | CPU s per 10k-client storm, user + system (median) "
          "| connect phase: server us/connect, user + system | mqbench us/connect | rounds |")
    print("|---|---|---|---|---|---|")
    for kind, rows in results.items():
        def median(field: str) -> float:
            return statistics.median(getattr(row, field) for row in rows)
        rounds = ", ".join(f"{row.rate:,.0f}" for row in rows)
        print(f"| {kind} | {median('rate'):,.0f} | {median('user'):.2f} + {median('system'):.2f} "
              f"| {median('connect_user'):.0f} + {median('connect_system'):.0f} "
              f"| {median('generator'):.0f} | {rounds} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
