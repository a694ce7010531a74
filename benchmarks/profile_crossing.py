#!/usr/bin/env python3
"""The Python cost of a message that crosses the bus, against one delivered on its own worker.

``profile_hotpath.py S2`` replays 32 publisher/subscriber pairs on one broker. This
replays the same reads on a broker whose subscribers are all on a second broker:
worker A reads the runs and sends each on (``BusFabric.forward_run``), worker B
takes the bus item (``BusFabric._on_publish_run``) and writes it to its subscribers.
Real ``MQTTConnection``, ``Broker`` and ``BusFabric`` objects; the bus is a stand-in
that keeps what is sent, so ZeroMQ, msgpack and the kernel are left out (the same on
both sides of a comparison). CPU (``time.process_time``) is counted around the
brokers' own calls, per delivered message:

    .venv/bin/python benchmarks/profile_crossing.py              # local, sender, receiver
    .venv/bin/python benchmarks/profile_crossing.py --cprofile receiver   # where its time goes
    .venv/bin/python benchmarks/profile_crossing.py --qos 1   # S3's shape: QoS 1, PUBACKs counted

At QoS 1 each subscriber acknowledges what it got after each read (its PUBACKs
counted with the local delivery and the receiver).

crossing / local = (sender + receiver) / local.

Instruction counts (load-independent): ``--only`` runs one part, so that callgrind's
total is that part's plus start-up; two message counts cancel the start-up out:

    valgrind --tool=callgrind .venv/bin/python benchmarks/profile_crossing.py --repeat 1 \
        --only sender --messages 20000      # and 60000: (Ir(60k) - Ir(20k)) / deliveries between

``--only receiver`` runs the sender too (the receiver needs its items): subtract ``sender``.
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
from profile_hotpath import connect, turn  # noqa: E402  (a script beside this one)

from kushi.cluster.fabric import BusFabric  # noqa: E402
from kushi.hooks.manager import HookManager  # noqa: E402
from kushi.protocol.codec import encode  # noqa: E402
from kushi.protocol.packets import MQTT_3_1_1, Puback, Publish, Subscribe, Subscription  # noqa: E402
from kushi.worker.broker import Broker  # noqa: E402
from kushi.worker.options import Options  # noqa: E402

PAIRS = 32
PER_READ = 64


class KeptBus:
    """A bus stand-in: keeps each item sent; the fabric's handlers are registered and unused."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.peers: set[str] = set()
        self.on_peer_left: list[Any] = []
        self.sent: list[tuple[str, str, bytes]] = []

    def on(self, kind: str, handler: Any) -> None:
        pass

    def serve(self, kind: str, handler: Any) -> None:
        pass

    def send(self, recipient: str, kind: str, payload: bytes) -> None:
        self.sent.append((recipient, kind, payload))

    def broadcast(self, kind: str, payload: bytes) -> None:
        pass

    def flush(self) -> None:
        pass


def make_broker(loop: asyncio.AbstractEventLoop, fabric: Any = None) -> Broker:
    return Broker(Options(), HookManager(), fabric, loop)   # no hook: `kushi serve` without authentication


def subscribe(broker: Broker, qos: int) -> list[Any]:
    subscribers = [connect(broker, f"sub-{i}") for i in range(PAIRS)]
    for i, sub in enumerate(subscribers):
        sub.data_received(encode(Subscribe(1, (Subscription(f"bench/{i}", qos),)), MQTT_3_1_1))
    return subscribers


PUBACKS = [encode(Puback(packet_id), MQTT_3_1_1) for packet_id in range(65536)]   # index 0 unused


def acknowledge(subscribers: list[Any]) -> None:
    """Each subscriber's PUBACKs for what it has in flight (QoS 1)."""
    for sub in subscribers:
        inflight = sub.session.inflight
        if inflight:
            sub.data_received(b"".join([PUBACKS[packet_id] for packet_id in inflight]))


SIDES = ("local", "sender", "receiver")


def measure(rounds: int, profile: cProfile.Profile | None, profiled: int = 2,
            qos: int = 0, only: str | None = None) -> tuple[float, float, float]:
    """Microseconds of CPU per delivered message: local, crossing's sender, crossing's receiver.

    ``profile`` is enabled around one of the three (``profiled``: 0, 1, 2, in that order).
    ``only``: run the local delivery alone, the sender alone (its bus items dropped), or
    the sender and the receiver; the other figures are then 0.
    """
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    payload = b"x" * 64
    reads = [b"".join(encode(Publish(f"bench/{i}", payload, qos, packet_id=n + 1 if qos else None),
                             MQTT_3_1_1) for n in range(PER_READ))
             for i in range(PAIRS)]
    local = make_broker(loop)
    local_subscribers = subscribe(local, qos)
    local_publishers = [connect(local, f"pub-{i}") for i in range(PAIRS)]
    done = loop.create_future()
    done.set_result(None)
    bus_a, bus_b = KeptBus("w1"), KeptBus("w2")
    fabric_a, fabric_b = BusFabric(bus_a, 1), BusFabric(bus_b, 2)   # type: ignore[arg-type]
    sender, receiver = make_broker(loop, fabric_a), make_broker(loop, fabric_b)
    for fabric in (fabric_a, fabric_b):
        fabric.barrier = lambda: done   # type: ignore[method-assign]  (no other node to wait for)
    fabric_a.attach(sender)
    fabric_b.attach(receiver)
    remote_subscribers = subscribe(receiver, qos)
    for i in range(PAIRS):
        fabric_a._add_interest("w2", f"bench/{i}")
    publishers = [connect(sender, f"pub-{i}") for i in range(PAIRS)]
    turn(loop)
    cpu = [0.0, 0.0, 0.0]

    def read_all(publishers: list[Any], subscribers: list[Any] = ()) -> None:  # type: ignore[assignment]
        for conn, data in zip(publishers, reads):
            conn.data_received(data)
        if qos:
            acknowledge(subscribers)

    def receive_all() -> None:
        items, bus_a.sent = bus_a.sent, []
        for _, _, item in items:
            fabric_b._on_publish_run("w1", item)
        if qos:
            acknowledge(remote_subscribers)

    steps = [lambda: read_all(local_publishers, local_subscribers), lambda: read_all(publishers), receive_all]
    running = {None: (0, 1, 2), "local": (0,), "sender": (1,), "receiver": (1, 2)}[only]
    for _ in range(rounds):
        if only == "sender":
            bus_a.sent = []   # nobody receives them
        for index in running:
            step = steps[index]
            if profile is not None and index == profiled:
                profile.enable()
            started = time.process_time()
            step()
            turn(loop)
            cpu[index] += time.process_time() - started
            if profile is not None and index == profiled:
                profile.disable()
    delivered = rounds * PAIRS * PER_READ
    for index, broker in ((0, local), (2, receiver)):
        if index in running and broker.messages_sent != delivered:
            raise SystemExit(f"{broker.messages_sent} deliveries, expected {delivered}")
    loop.close()
    return tuple(value / delivered * 1e6 if index in running else 0.0   # type: ignore[return-value]
                 for index, value in enumerate(cpu))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000, help="deliveries per measure (about)")
    parser.add_argument("--qos", type=int, choices=(0, 1), default=0, help="0: S2's shape, 1: S3's")
    parser.add_argument("--repeat", type=int, default=5, help="best of this many runs")
    parser.add_argument("--cprofile", choices=SIDES,
                        help="print the top functions of one side (cProfile)")
    parser.add_argument("--only", choices=SIDES,
                        help="run one part (receiver: with its sender), for instruction counts")
    args = parser.parse_args()
    rounds = max(1, args.messages // (PAIRS * PER_READ))
    runs = [measure(rounds, None, qos=args.qos, only=args.only) for _ in range(args.repeat)]
    local, sent, received = (min(run[k] for run in runs) for k in range(3))
    delivered = f"({rounds * PAIRS * PER_READ:,} deliveries)"
    if args.only:
        print(f"{'S3' if args.qos else 'S2'} shape, --only {args.only}: local {local:.3f}, "
              f"sender {sent:.3f}, receiver {received:.3f} us CPU per delivered message {delivered}")
        return 0
    print(f"{'S3' if args.qos else 'S2'} shape, us CPU per delivered message (best of {args.repeat}): local {local:.3f}, "
          f"crossing: sender {sent:.3f} + receiver {received:.3f} = {sent + received:.3f} "
          f"({(sent + received) / local:.2f}x local) {delivered}")
    if args.cprofile:
        profile = cProfile.Profile()
        measure(rounds, profile, SIDES.index(args.cprofile), args.qos)
        pstats.Stats(profile, stream=sys.stdout).sort_stats("tottime").print_stats(14)
    return 0


if __name__ == "__main__":
    sys.exit(main())
