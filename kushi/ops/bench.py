"""``kushi bench``: a load generator to point at any MQTT broker (yours, kushi, Mosquitto...).

    kushi bench --host broker.example --port 1883 --scenario pairs --clients 8 --qos 1 --duration 10

Scenarios (topics are ``{prefix}/{n}``):

* ``pairs``  N publishers and N subscribers, publisher i -> subscriber i (one topic each);
* ``fanin``  N publishers -> 1 subscriber of ``{prefix}/#``;
* ``fanout`` 1 publisher -> N subscribers of ``{prefix}/0``.

Every payload carries (publisher, sequence number, send time), so the receiving side
counts what arrived, what was lost (a gap in a publisher's sequence) and duplicates
(QoS 1 may deliver twice), and measures the latency. Publishers run a closed loop:
each stays at most ``--max-ahead`` messages ahead of its slowest subscriber (QoS 0)
or keeps ``--window`` messages awaiting PUBACK (QoS 1), so a slow broker is measured,
not buried. ``--rate`` fixes a per-publisher rate instead of "as fast as possible".

It is written in Python (asyncio on uvloop, raw sockets, kushi's own codec): it is
several times slower than the C load generator ``mqbench`` used for kushi's published
benchmarks, and measures a broker only up to its own speed. Watch its CPU: a load
generator at 100% of a core is the limit, not the broker.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import TextIO

from ..protocol.codec import encode
from ..protocol.packets import (
    MQTT_3_1_1, MQTT_5, Connack, Connect, Puback, Publish, Suback, Subscribe, Subscription,
)
from ..protocol.reader import PacketReader

__all__ = ["BenchConfig", "BenchResult", "run_bench", "add_arguments", "main"]

SCENARIOS = ("pairs", "fanin", "fanout")
STAMP = struct.Struct(">IQQ")   # publisher index, sequence number, send time (ns, monotonic)
NOT_AS_FAST = ("kushi bench is a Python load generator: slower than mqbench, it measures a broker "
               "only up to its own speed (see 'generator CPU').")
DESCRIPTION = ("Load-test any MQTT broker (scenarios pairs, fanin, fanout) with a progress line "
               "and a summary table: sent, received, msg/s, lost, latency. " + NOT_AS_FAST)
BATCH = 64                      # messages written per publisher turn
DRAIN_IDLE = 1.0                # after publishing, stop waiting once nothing arrived for this long
DRAIN_MAX = 10.0


@dataclass
class BenchConfig:
    """What to run; the defaults are a quick look at a local broker."""

    host: str = "127.0.0.1"
    port: int = 1883
    scenario: str = "pairs"
    clients: int = 8
    qos: int = 0
    size: int = 64
    duration: float = 10.0
    rate: float = 0.0            # per publisher, messages per second; 0 = as fast as possible
    window: int = 16             # QoS 1: PUBLISH awaiting PUBACK per publisher
    max_ahead: int = 1000        # QoS 0: messages a publisher may be ahead of its slowest subscriber
    version: int = MQTT_3_1_1
    prefix: str = "kushi-bench"
    username: str | None = None
    password: str | None = None


@dataclass
class BenchResult:
    """The counts and latencies of one run."""

    sent: int = 0
    expected: int = 0
    received: int = 0
    duplicates: int = 0
    lost: int = 0
    seconds: float = 0.0
    latencies_us: list[float] = field(default_factory=list)
    generator_cpu: float = 0.0   # seconds of CPU this process used

    @property
    def rate(self) -> float:
        """Messages received per second of publishing."""
        return self.received / self.seconds if self.seconds else 0.0

    def percentile(self, fraction: float) -> float | None:
        values = self.latencies_us
        if not values:
            return None
        return values[min(len(values) - 1, int(fraction * len(values)))]


class BenchError(Exception):
    """The broker refused or dropped a bench client."""


class Client(asyncio.Protocol):
    """One MQTT connection of the bench: connects, subscribes, publishes, counts."""

    def __init__(self, bench: Bench, client_id: str) -> None:
        self.bench = bench
        self.client_id = client_id
        self.reader = PacketReader()
        self.reader.version = bench.config.version
        self.transport: asyncio.Transport | None = None
        self.connack: asyncio.Future[Connack] = bench.loop.create_future()
        self.suback: asyncio.Future[Suback] | None = None
        self.writable = asyncio.Event()
        self.writable.set()
        self.unacked = 0                          # QoS 1 PUBLISH awaiting PUBACK
        self.acked = asyncio.Event()
        self.last_seq: dict[int, int] = {}       # subscriber: publisher -> last sequence seen
        self.received = 0
        self.closed = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.writable.set()
        self.acked.set()
        for waiter in (self.connack, self.suback):
            if waiter is not None and not waiter.done():
                waiter.set_exception(BenchError(f"{self.client_id}: connection closed ({exc})"))
        self.bench.client_lost(self)

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        acks = []
        now = time.monotonic_ns()
        while packets := reader.read_packets():
            for packet in packets:
                if type(packet) is Publish:
                    self.bench.message(self, packet.payload, now)
                    if packet.qos:
                        acks.append(encode(Puback(packet.packet_id), self.bench.config.version))
                elif type(packet) is Puback:
                    self.unacked -= 1
                    self.acked.set()
                elif type(packet) is Connack:
                    self.connack.set_result(packet)
                elif type(packet) is Suback and self.suback is not None:
                    self.suback.set_result(packet)
        if acks and self.transport is not None:
            self.transport.writelines(acks)

    # commands
    async def handshake(self) -> None:
        config = self.bench.config
        self.transport.write(encode(Connect(  # type: ignore[union-attr]
            protocol_version=config.version, client_id=self.client_id, keep_alive=60,
            username=config.username,
            password=config.password.encode() if config.password is not None else None,
        ), config.version))
        connack = await asyncio.wait_for(self.connack, 15)
        if connack.reason_code:
            raise BenchError(f"{self.client_id}: CONNACK refused, reason code {connack.reason_code:#x}")

    async def subscribe(self, topic_filter: str) -> None:
        config = self.bench.config
        self.suback = self.bench.loop.create_future()
        self.transport.write(encode(  # type: ignore[union-attr]
            Subscribe(1, (Subscription(topic_filter, qos=config.qos),)), config.version))
        suback = await asyncio.wait_for(self.suback, 15)
        if suback.reason_codes[0] >= 0x80:
            raise BenchError(f"{self.client_id}: SUBSCRIBE {topic_filter!r} refused")


class Bench:
    """One run: the clients, the counters, the publishing loops and the progress display."""

    def __init__(self, config: BenchConfig, out: TextIO) -> None:
        if config.scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {config.scenario!r} (one of {', '.join(SCENARIOS)})")
        if config.size < STAMP.size:
            raise ValueError(f"--size must be at least {STAMP.size} bytes (the payload carries a stamp)")
        self.config = config
        self.out = out
        self.loop = asyncio.get_running_loop()
        self.publishers: list[Client] = []
        self.subscribers: list[Client] = []
        self.listeners: list[list[Client]] = []   # per publisher: the subscribers its topic reaches
        self.sent: list[int] = []
        self.result = BenchResult()
        self.progress = asyncio.Event()
        self.reported = 0   # messages received at the last progress line
        self.publishing = False
        self.failure: BaseException | None = None
        self.last_arrival = 0.0

    # counting (called from Client.data_received)
    def message(self, subscriber: Client, payload: bytes, now_ns: int) -> None:
        publisher, seq, sent_ns = STAMP.unpack_from(payload)
        last = subscriber.last_seq.get(publisher, 0)
        result = self.result
        if seq <= last:
            result.duplicates += 1
            return
        subscriber.last_seq[publisher] = seq
        subscriber.received += 1
        result.received += 1
        result.latencies_us.append((now_ns - sent_ns) / 1000)
        self.last_arrival = time.monotonic()
        self.progress.set()

    def client_lost(self, client: Client) -> None:
        if self.publishing and self.failure is None:
            self.failure = BenchError(f"{client.client_id}: the broker closed the connection")
            self.progress.set()

    # the run
    async def connect(self, client_id: str) -> Client:
        config = self.config
        _, client = await self.loop.create_connection(lambda: Client(self, client_id),
                                                      config.host, config.port)
        await client.handshake()
        return client

    async def setup(self) -> None:
        config = self.config
        n = config.clients
        tag = f"{os.getpid()}"
        publishers = 1 if config.scenario == "fanout" else n
        subscribers = 1 if config.scenario == "fanin" else n
        self.subscribers = list(await asyncio.gather(
            *(self.connect(f"bench-{tag}-sub-{i}") for i in range(subscribers))))
        for i, subscriber in enumerate(self.subscribers):
            topic_filter = f"{config.prefix}/#" if config.scenario == "fanin" else \
                f"{config.prefix}/{0 if config.scenario == 'fanout' else i}"
            await subscriber.subscribe(topic_filter)
        self.publishers = list(await asyncio.gather(
            *(self.connect(f"bench-{tag}-pub-{i}") for i in range(publishers))))
        self.sent = [0] * publishers
        if config.scenario == "pairs":
            self.listeners = [[subscriber] for subscriber in self.subscribers]
        else:
            self.listeners = [self.subscribers] * publishers

    def slowest(self, index: int) -> int:
        """The messages of publisher ``index`` its slowest subscriber has received."""
        return min(sub.last_seq.get(index, 0) for sub in self.listeners[index])

    async def publish(self, index: int, deadline: float) -> None:
        """Publish as fast as the flow control (or ``--rate``) allows until ``deadline``."""
        config = self.config
        client = self.publishers[index]
        transport = client.transport
        qos = config.qos
        padding = b"\x00" * (config.size - STAMP.size)
        # the bytes before the payload, made by the codec once; only the payload changes
        template = encode(Publish(f"{config.prefix}/{index}", b"\x00" * config.size, qos=qos,
                                  packet_id=1 if qos else None), config.version)
        head = template[: len(template) - config.size]
        head_before_id, head_after_id = (head[:-2], b"") if qos and config.version != MQTT_5 else \
            (head[:-3], head[-1:]) if qos else (head, b"")
        pack = STAMP.pack
        packet_id = 0
        interval = 1.0 / config.rate if config.rate else 0.0
        next_at = time.monotonic()
        seq = 0
        while not client.closed and self.failure is None:
            now = time.monotonic()
            if now >= deadline:
                break
            if interval:
                if now < next_at:
                    await asyncio.sleep(next_at - now)
                    continue
                allowed = min(BATCH, int((now - next_at) / interval) + 1)
            else:
                allowed = BATCH
            if qos:
                allowed = min(allowed, config.window - client.unacked)
            else:
                allowed = min(allowed, config.max_ahead - (seq - self.slowest(index)))
            if allowed <= 0 or not client.writable.is_set():
                waiter = client.acked if qos else self.progress
                waiter.clear()
                try:
                    await asyncio.wait_for(client.writable.wait() if not client.writable.is_set()
                                           else waiter.wait(), 0.1)
                except TimeoutError:
                    pass
                continue
            chunks = []
            stamp_ns = time.monotonic_ns()
            for _ in range(allowed):
                seq += 1
                if qos:
                    packet_id = packet_id % 65535 + 1
                    chunks.append(head_before_id + packet_id.to_bytes(2, "big") + head_after_id
                                  + pack(index, seq, stamp_ns) + padding)
                else:
                    chunks.append(head + pack(index, seq, stamp_ns) + padding)
            if qos:
                client.unacked += allowed
            transport.writelines(chunks)
            self.sent[index] = seq
            next_at += allowed * interval
            await asyncio.sleep(0)

    async def report_progress(self, started: float) -> None:
        """One line per second: updated in place on a terminal, appended otherwise."""
        while True:
            await asyncio.sleep(1.0)
            self.write_progress(started)

    def write_progress(self, started: float) -> None:
        """Write one progress line: totals, and what arrived since the previous line."""
        received = self.result.received
        line = (f"{time.monotonic() - started:5.1f} s  sent {sum(self.sent):>10,}  "
                f"received {received:>10,}  {received - self.reported:>9,} since last line")
        self.reported = received
        self.out.write("\r" + line if self.out.isatty() else line + "\n")
        self.out.flush()

    async def run(self) -> BenchResult:
        config = self.config
        cpu_start = time.process_time()
        await self.setup()
        result = self.result
        started = time.monotonic()
        progress = self.loop.create_task(self.report_progress(started))
        self.publishing = True
        try:
            deadline = started + config.duration
            await asyncio.gather(*(self.publish(i, deadline) for i in range(len(self.publishers))))
            result.seconds = time.monotonic() - started
            # drain: what is on its way arrives, or nothing has come for DRAIN_IDLE
            per_publisher = [len(listeners) for listeners in self.listeners]
            result.sent = sum(self.sent)
            result.expected = sum(sent * n for sent, n in zip(self.sent, per_publisher))
            self.last_arrival = time.monotonic()
            drain_until = self.last_arrival + DRAIN_MAX
            while (result.received < result.expected and time.monotonic() < drain_until
                   and time.monotonic() - self.last_arrival < DRAIN_IDLE and self.failure is None):
                self.progress.clear()
                try:
                    await asyncio.wait_for(self.progress.wait(), DRAIN_IDLE)
                except TimeoutError:
                    pass
        finally:
            self.publishing = False
            progress.cancel()
            self.write_progress(started)   # the final state, even for a run shorter than a second
            if self.out.isatty():
                self.out.write("\n")
            for client in self.publishers + self.subscribers:
                if client.transport is not None:
                    client.transport.close()
        if self.failure is not None:
            raise self.failure
        result.lost = result.expected - result.received
        result.latencies_us.sort()
        result.generator_cpu = time.process_time() - cpu_start
        return result


async def run_bench(config: BenchConfig, out: TextIO = sys.stdout) -> BenchResult:
    """Run one bench in the running event loop; the progress goes to ``out``."""
    return await Bench(config, out).run()


def summary(config: BenchConfig, result: BenchResult) -> str:
    """The table printed after a run."""
    def latency(fraction: float) -> str:
        value = result.percentile(fraction)
        return "-" if value is None else f"{value:,.0f} us"

    rows = [
        ("scenario", f"{config.scenario}, {config.clients} clients, QoS {config.qos}, "
                     f"{config.size} B, MQTT {'5' if config.version == MQTT_5 else '3.1.1'}"),
        ("broker", f"{config.host}:{config.port}"),
        ("duration", f"{result.seconds:.1f} s"),
        ("sent", f"{result.sent:,}"),
        ("expected", f"{result.expected:,}"),
        ("received", f"{result.received:,}"),
        ("msg/s", f"{result.rate:,.0f}"),
        ("lost", f"{result.lost:,}"),
        ("duplicates", f"{result.duplicates:,}"),
        ("latency p50", latency(0.50)),
        ("latency p99", latency(0.99)),
        ("generator CPU", f"{100 * result.generator_cpu / max(result.seconds, 1e-9):.0f}% of one core"),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [f"  {name:<{width}}  {value}" for name, value in rows]
    return "\n".join(["", *lines, "", NOT_AS_FAST])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``kushi bench`` (the CLI registers the subcommand with these)."""
    defaults = BenchConfig()
    parser.add_argument("--host", default=defaults.host)
    parser.add_argument("--port", type=int, default=defaults.port)
    parser.add_argument("--scenario", choices=SCENARIOS, default=defaults.scenario,
                        help="pairs: N pub->sub pairs; fanin: N pubs -> 1 sub; fanout: 1 pub -> N subs")
    parser.add_argument("--clients", type=int, default=defaults.clients, metavar="N")
    parser.add_argument("--qos", type=int, choices=(0, 1), default=defaults.qos)
    parser.add_argument("--size", type=int, default=defaults.size, metavar="B",
                        help=f"payload bytes (at least {STAMP.size})")
    parser.add_argument("--duration", type=float, default=defaults.duration, metavar="S")
    parser.add_argument("--rate", type=float, default=defaults.rate, metavar="R",
                        help="messages per second per publisher (default: as fast as possible)")
    parser.add_argument("--window", type=int, default=defaults.window,
                        help="QoS 1: messages awaiting PUBACK per publisher")
    parser.add_argument("--max-ahead", type=int, default=defaults.max_ahead,
                        help="QoS 0: how far a publisher may run ahead of its slowest subscriber")
    parser.add_argument("--v5", action="store_true", help="MQTT 5 (default 3.1.1)")
    parser.add_argument("--prefix", default=defaults.prefix, help="topic prefix")
    parser.add_argument("--username")
    parser.add_argument("--password")


def main(args: argparse.Namespace) -> int:
    """Run ``kushi bench`` from parsed flags; returns the exit code (1 if anything was lost at QoS 1)."""
    config = BenchConfig(
        host=args.host, port=args.port, scenario=args.scenario, clients=args.clients, qos=args.qos,
        size=args.size, duration=args.duration, rate=args.rate, window=args.window,
        max_ahead=args.max_ahead, version=MQTT_5 if args.v5 else MQTT_3_1_1, prefix=args.prefix,
        username=args.username, password=args.password,
    )
    print(NOT_AS_FAST)
    try:
        import uvloop
        result = uvloop.run(run_bench(config))
    except (BenchError, OSError, ValueError, TimeoutError) as exc:
        print(f"kushi bench: error: {exc}", file=sys.stderr)
        return 2
    print(summary(config, result))
    return 1 if config.qos and result.lost else 0
