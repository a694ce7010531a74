#!/usr/bin/env python3
"""Run the load scenarios against kushi and Mosquitto, interleaved, and write RESULTS.md.

What it does, in order:
1. builds the load generator from ``../shared/tools/mqbench`` into ``build/mqbench``
   (it installs nothing: Mosquitto must already be on the PATH, e.g. the Debian package);
2. for each round and each scenario, starts a fresh broker (kushi, then Mosquitto, then
   kushi, ...) on a free port, runs mqbench against it under ``brokercpu`` (which reads the
   broker's CPU time from /proc), and stops the broker;
3. writes the medians of the rounds and the kushi / Mosquitto ratios to
   ``benchmarks/RESULTS.md`` (or ``--out``), with the machine and the exact commands.

Absolute numbers on a shared 2-core machine are noise; the ratios, measured in the same
run, are the result.

    python benchmarks/run.py                     # all scenarios, 3 rounds, 10 s each
    python benchmarks/run.py -d 3 --rounds 1 S1 S2   # a quick look
    python benchmarks/run.py --workers 2 S2      # kushi with 2 worker processes
    python benchmarks/run.py --kushi-python build/venv-compiled/bin/python S5 SP
        # kushi as installed for that interpreter: `make test-compiled` builds that venv
        # with the mypyc-compiled codec and reader (README, "Compiled codec")
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
MQBENCH_SRC = SHARED / "tools" / "mqbench" / "mqbench.c"
BROKERCPU = SHARED / "tools" / "brokercpu"
MOSQUITTO_CONF = SHARED / "tools" / "mosquitto-bench.conf"
MQBENCH = ROOT / "build" / "mqbench"


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    args: tuple[str, ...]
    #: a connection storm reports connections, not messages
    storm: bool = False


SCENARIOS = [
    Scenario("S1", "16 publishers -> 1 wildcard subscriber, QoS 0",
             ("--pubs", "16", "--subs", "1", "--topics", "16", "--fanout", "-q", "0")),
    Scenario("S2", "32 publisher/subscriber pairs, QoS 0",
             ("--pubs", "32", "--subs", "32", "--topics", "32", "--pair", "-q", "0")),
    Scenario("S3", "32 pairs, QoS 1",
             ("--pubs", "32", "--subs", "32", "--topics", "32", "--pair", "-q", "1")),
    Scenario("S4", "1 publisher -> 256 subscribers, QoS 0",
             ("--pubs", "1", "--subs", "256", "--topics", "1", "-q", "0")),
    Scenario("S5", "10,000 idle connections",
             ("--conns", "10000", "--conn-window", "64", "-k", "60"), storm=True),
    Scenario("S6", "4 pairs, 64 KiB payloads, QoS 1",
             ("--pubs", "4", "--subs", "4", "--topics", "4", "--pair", "-q", "1", "-s", "65536")),
    Scenario("SP", "S2 shape at a fixed 80,000 msg/s (sparse: one packet per read)",
             ("--pubs", "32", "--subs", "32", "--topics", "32", "--pair", "-q", "0",
              "--rate", "2500")),
    # SP at half the rate: where 80,000 msg/s one packet per read takes a whole core (both
    # brokers then batch what piles up, and CPU per message is pinned near 1 core / rate),
    # this shows how the cost per message moves when each broker has room to spare
    Scenario("SP40", "S2 shape at a fixed 40,000 msg/s (sparse, half SP's rate)",
             ("--pubs", "32", "--subs", "32", "--topics", "32", "--pair", "-q", "0",
              "--rate", "1250")),
    # a quarter of SP's rate: Mosquitto has room to spare (~33 us a message, 2/3 of a core),
    # kushi much less (~46 us, 0.9 of a core: it batches some of what piles up)
    Scenario("SP20", "S2 shape at a fixed 20,000 msg/s (sparse, a quarter of SP's rate)",
             ("--pubs", "32", "--subs", "32", "--topics", "32", "--pair", "-q", "0",
              "--rate", "625")),
    # an eighth: neither broker is near a core, so the CPU per message is what a message
    # that comes alone costs
    Scenario("SP10", "S2 shape at a fixed 10,000 msg/s (sparse, an eighth of SP's rate)",
             ("--pubs", "32", "--subs", "32", "--topics", "32", "--pair", "-q", "0",
              "--rate", "312.5")),
    Scenario("L2", "1,600 msg/s QoS 0, latency",
             ("--pubs", "32", "--subs", "32", "--topics", "32", "--pair", "-q", "0", "--rate", "50")),
    Scenario("L3", "1,600 msg/s QoS 1, latency",
             ("--pubs", "32", "--subs", "32", "--topics", "32", "--pair", "-q", "1", "--rate", "50")),
]


@dataclass
class Measurement:
    values: dict[str, float] = field(default_factory=dict)
    ok: bool = True
    note: str = ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_mqbench() -> None:
    if not MQBENCH_SRC.exists():
        sys.exit(f"mqbench source not found at {MQBENCH_SRC}")
    if MQBENCH.exists() and MQBENCH.stat().st_mtime >= MQBENCH_SRC.stat().st_mtime:
        return
    MQBENCH.parent.mkdir(exist_ok=True)
    subprocess.run(["cc", "-O2", "-pthread", "-o", str(MQBENCH), str(MQBENCH_SRC), "-lm"], check=True)


def raise_nofile() -> None:
    """Both brokers and mqbench need more than 1024 descriptors for the connection storm."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"broker exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)  # polling a port that is not open yet; no event to wait on
    raise RuntimeError(f"broker did not listen on {port} within {timeout}s")


KUSHI_PYTHON = sys.executable
"""The interpreter kushi runs under (``--kushi-python``): kushi is imported as installed for it,
never from the working directory (a broker starts in its own directory)."""


def kushi_build(python: str) -> str:
    """Which kushi ``python`` runs: "pure Python" or "compiled codec and reader (mypyc)"."""
    probe = subprocess.run([python, "-c", "import kushi.protocol as p; print(getattr(p, 'compiled', False))"],
                           capture_output=True, text=True, cwd=tempfile.gettempdir())
    return "compiled codec and reader (mypyc)" if probe.stdout.strip() == "True" else "pure Python"


class Broker:
    """A broker process started for one measurement, in its own process group."""

    def __init__(self, kind: str, workers: int, workdir: Path) -> None:
        self.kind, self.workers, self.workdir = kind, workers, workdir
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def command(self) -> list[str]:
        if self.kind == "mosquitto":
            conf = self.workdir / f"mosquitto-{self.port}.conf"
            conf.write_text(MOSQUITTO_CONF.read_text().replace("PORT", str(self.port)))
            return [shutil.which("mosquitto") or "mosquitto", "-c", str(conf)]
        return [KUSHI_PYTHON, "-m", "kushi.ops.cli", "serve", "--tcp", f"127.0.0.1:{self.port}",
                "--ws", "none", "--http", "none", "--log-level", "warning",
                "--workers", str(self.workers)]

    def __enter__(self) -> "Broker":
        # in the work directory: ``python -m`` puts the current directory first on sys.path,
        # which in the repository would be its kushi whatever --kushi-python installed
        self.proc = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL,
                                     stderr=open(self.workdir / f"{self.kind}-{self.port}.log", "w"),
                                     preexec_fn=lambda: (os.setpgrp(), raise_nofile()), cwd=self.workdir)
        wait_for_port(self.port, self.proc)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, signal.SIGINT)
            self.proc.wait(timeout=10)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


KV = re.compile(r"(\w+)=(\S+)")


def parse_result(output: str) -> dict[str, float]:
    """Numbers from mqbench's result line(s) and brokercpu's line."""
    values: dict[str, float] = {}
    capture = False
    for line in output.splitlines():
        if line.startswith("mqbench:"):
            capture = True
        elif line.startswith("brokercpu:"):
            capture = True
        elif not line.startswith("  "):
            capture = False
        if capture:
            for key, raw in KV.findall(line):
                try:
                    values[key] = float(raw)
                except ValueError:
                    pass
    return values


def measure(kind: str, scenario: Scenario, duration: float, workers: int, workdir: Path) -> Measurement:
    with Broker(kind, workers, workdir) as broker:
        assert broker.proc is not None
        cmd = [sys.executable, str(BROKERCPU), "run", "--pid", str(broker.proc.pid), "--",
               str(MQBENCH), "-p", str(broker.port), "-d", str(duration), *scenario.args,
               "--label", f"{kind}-{scenario.name}"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 120)
    values = parse_result(done.stdout)
    m = Measurement(values=values, ok=done.returncode == 0)
    if scenario.storm and "conns" in values and "peak_rss_kb" in values:
        m.values["kib_per_conn"] = (values["peak_rss_kb"] - values.get("start_rss_kb", 0)) / values["conns"]
    if not m.ok:
        m.note = (done.stdout + done.stderr).strip().splitlines()[-1:] and \
            (done.stdout + done.stderr).strip().splitlines()[-1]
    return m


def median(ms: list[Measurement], key: str) -> float | None:
    vals = [m.values[key] for m in ms if key in m.values]
    return statistics.median(vals) if vals else None


def fmt(v: float | None, digits: int = 1) -> str:
    if v is None:
        return "-"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.2f}x"


def machine_description() -> str:
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mosq = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True).stdout.splitlines()[:1]
    return (f"{os.cpu_count()} CPUs ({cpu}), Linux {platform.release()}, Python {platform.python_version()}, "
            f"{mosq[0] if mosq else 'mosquitto'}")


def write_results(path: Path, results: dict[str, dict[str, list[Measurement]]], args: argparse.Namespace) -> None:
    kushi_label = f"kushi ({args.workers} worker{'s' if args.workers > 1 else ''})"
    lines = [
        "# Benchmark results",
        "",
        f"Machine: {machine_description()}.  ",
        f"Run: `python benchmarks/run.py {' '.join(sys.argv[1:])}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
        f"{args.rounds} round(s) of {args.duration:g} s per scenario, brokers interleaved "
        "(kushi, Mosquitto, kushi, ...), medians shown. Load generator: `build/mqbench` "
        "(from ../shared/tools/mqbench), broker CPU from `../shared/tools/brokercpu`. "
        f"kushi: {kushi_build(KUSHI_PYTHON)}.",
        "",
        "Ratios are kushi / Mosquitto from the same run: for msg/s higher is better, for CPU and",
        "latency lower is better. Absolute numbers on a shared 2-core machine are noise.",
        "",
        f"| scenario | {kushi_label} msg/s | Mosquitto msg/s | ratio | kushi us CPU/msg | Mosquitto us CPU/msg | ratio | kushi p50/p99 us | Mosquitto p50/p99 us | lost k/m | gen CPU % k/m |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for sc in SCENARIOS:
        if sc.name not in results:
            continue
        k, m = results[sc.name]["kushi"], results[sc.name]["mosquitto"]
        if sc.storm:
            lines.append(
                f"| {sc.name}: {sc.title} | {fmt(median(k, 'conn_rate'))} conn/s | {fmt(median(m, 'conn_rate'))} conn/s | "
                f"{ratio(median(k, 'conn_rate'), median(m, 'conn_rate'))} | {fmt(median(k, 'kib_per_conn'), 2)} KiB/conn | "
                f"{fmt(median(m, 'kib_per_conn'), 2)} KiB/conn | {ratio(median(k, 'kib_per_conn'), median(m, 'kib_per_conn'))} | "
                f"connect p99 {fmt(median(k, 'conn_p99_ms'))} ms | {fmt(median(m, 'conn_p99_ms'))} ms | "
                f"failed {fmt(median(k, 'failed'), 0)}/{fmt(median(m, 'failed'), 0)} | - |")
            continue
        lines.append(
            f"| {sc.name}: {sc.title} | {fmt(median(k, 'rate'))} | {fmt(median(m, 'rate'))} | "
            f"{ratio(median(k, 'rate'), median(m, 'rate'))} | {fmt(median(k, 'cpu_us_per_msg'), 2)} | "
            f"{fmt(median(m, 'cpu_us_per_msg'), 2)} | {ratio(median(k, 'cpu_us_per_msg'), median(m, 'cpu_us_per_msg'))} | "
            f"{fmt(median(k, 'p50_us'))} / {fmt(median(k, 'p99_us'))} | {fmt(median(m, 'p50_us'))} / {fmt(median(m, 'p99_us'))} | "
            f"{fmt(median(k, 'lost'), 0)}/{fmt(median(m, 'lost'), 0)} | "
            f"{fmt(median(k, 'gen_cpu_pct'), 0)}/{fmt(median(m, 'gen_cpu_pct'), 0)} |")
    failures = [(name, kind, ms.note) for name, kinds in results.items() for kind, runs in kinds.items()
                for ms in runs if not ms.ok]
    if failures:
        lines += ["", "Runs that reported errors (mqbench exit status non-zero):", ""]
        lines += [f"- {name} {kind}: {note}" for name, kind, note in failures]
    lines += ["", "Scenario commands (`mqbench -p PORT -d DURATION` plus):", ""]
    lines += [f"- {sc.name}: `{' '.join(sc.args)}`" for sc in SCENARIOS if sc.name in results]
    path.write_text("\n".join(lines) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenarios", nargs="*", help="scenario names (default: all)")
    parser.add_argument("-d", "--duration", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1, help="kushi worker processes")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "RESULTS.md")
    parser.add_argument("--kushi-python", default=sys.executable,
                        help="the interpreter kushi runs under (default: this one)")
    args = parser.parse_args()
    global KUSHI_PYTHON
    KUSHI_PYTHON = os.path.abspath(args.kushi_python)   # brokers start in their own directory
    print(f"kushi: {kushi_build(KUSHI_PYTHON)} ({KUSHI_PYTHON})", flush=True)
    if shutil.which("mosquitto") is None:
        sys.exit("mosquitto is not installed (Debian: apt-get install mosquitto); it is the yardstick")
    build_mqbench()
    raise_nofile()
    chosen = [sc for sc in SCENARIOS if not args.scenarios or sc.name in args.scenarios]
    results: dict[str, dict[str, list[Measurement]]] = {sc.name: {"kushi": [], "mosquitto": []} for sc in chosen}
    with tempfile.TemporaryDirectory(prefix="kushi-bench-") as tmp:
        for rnd in range(args.rounds):
            for sc in chosen:
                for kind in ("kushi", "mosquitto"):
                    m = measure(kind, sc, args.duration, args.workers, Path(tmp))
                    results[sc.name][kind].append(m)
                    print(f"round {rnd + 1} {sc.name} {kind}: rate={m.values.get('rate', m.values.get('conn_rate'))} "
                          f"cpu_us_per_msg={m.values.get('cpu_us_per_msg')} ok={m.ok} {m.note}", flush=True)
                write_results(args.out, results, args)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
