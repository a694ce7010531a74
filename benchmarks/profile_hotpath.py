#!/usr/bin/env python3
"""The broker's Python cost per delivered message, without sockets: a steady replay.

mqbench runs on a shared, loaded machine measure the whole broker, system calls
included, with a lot of noise. This replays the same shapes in one process with
fake transports: real ``MQTTConnection`` and ``Broker`` objects, real bytes fed
to ``data_received``, the event loop turned once per round so the writes are
flushed, and CPU time (``time.process_time``) counted only around the broker's
own calls. What it leaves out is the kernel: reads, writes, epoll.

    .venv/bin/python benchmarks/profile_hotpath.py            # every shape
    .venv/bin/python benchmarks/profile_hotpath.py S3 --cprofile   # and where the time goes

Shapes (as in benchmarks/run.py; 64-byte payloads, MQTT 3.1.1):
  S1  16 publishers -> 1 subscriber of bench/#, 64 messages per read
  S2  32 pairs, 64 messages per read
  SP  32 pairs, 1 message per read (sparse traffic)
  S3  32 pairs at QoS 1, 16 messages per read (mqbench's window), PUBACKs back
  S4  1 publisher -> 256 subscribers, 64 messages per read
  L3  32 pairs at QoS 1, 1 message per read, each PUBACK in its own read (L3's latency
      shape, and SP's at QoS 1)
The broker has no hook, as ``kushi serve`` without authentication runs (and an
embedding program without hooks); ``--allow-all`` adds the AllowAllHook, as
``kushi serve`` did before it left it out.

``--bus`` gives the broker the fabric of a ``kushi serve`` worker (``BusFabric``) on a bus
with no other worker (``BusStandIn``): what a message costs a worker of one, the cluster's
checks included (the default is the one-process server's ``LocalFabric``).

``--buffered`` feeds each read as a TCP, TLS or Unix transport does (uvloop and asyncio
call ``get_buffer`` then ``buffer_updated`` on an ``asyncio.BufferedProtocol``), not through
``data_received`` (the WebSocket layer's way): the path a real socket read takes. Copying
the bytes into the offered buffer is the harness's work, as the kernel's copy would be.

Instructions per message (load-independent), with two message counts:

    PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.1 \
        .venv/bin/python benchmarks/profile_hotpath.py SP --buffered --messages 1000 --repeat 1
    (again with --messages 5000 into /tmp/cg.2; then (total 2 - total 1) / 4000)
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import sys
import time
from dataclasses import dataclass
from typing import Any

from kushi.cluster.fabric import BusFabric
from kushi.hooks.allow_all import AllowAllHook
from kushi.hooks.manager import HookManager
from kushi.protocol.codec import encode
from kushi.protocol.packets import MQTT_3_1_1, Connect, Publish, Subscribe, Subscription
from kushi.worker.broker import Broker
from kushi.worker.connection import MQTTConnection
from kushi.worker.options import Options


class FakeTransport:
    """Takes what the broker writes and counts it; never pushes back."""

    def __init__(self) -> None:
        self.written = 0

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def writelines(self, chunks: list[bytes]) -> None:
        for chunk in chunks:
            self.written += len(chunk)

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 1) if name == "peername" else default

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class BusStandIn:
    """The part of ``kushi.router.bus.Bus`` a ``BusFabric`` uses, for a worker with no peers:
    nothing is sent, and a barrier (a SUBACK's) has nobody to wait for."""

    name = "w0"

    def __init__(self) -> None:
        self.peers: set[str] = set()
        self.on_peer_left: list[Any] = []

    def on(self, kind: str, handler: Any) -> None:
        pass

    def serve(self, kind: str, handler: Any) -> None:
        pass

    def send(self, *message: Any) -> None:
        pass

    def broadcast(self, *message: Any) -> None:
        pass

    def flush(self, *peers: Any) -> None:
        pass


@dataclass(frozen=True)
class Shape:
    publishers: int
    subscribers: int
    per_read: int
    qos: int = 0
    fanin: bool = False       # every subscriber takes bench/#

    def topic(self, publisher: int) -> str:
        return f"bench/{publisher % max(self.subscribers, 1)}" if not self.fanin else f"bench/{publisher}"

    def deliveries_per_message(self) -> int:
        if self.fanin:
            return self.subscribers
        return max(1, self.subscribers // self.publishers) if self.subscribers >= self.publishers else 1


CONNACK_AND_SUBACK = 4 + 5   # bytes a subscriber is sent before any message (MQTT 3.1.1)

SHAPES = {
    "S1": Shape(16, 1, 64, fanin=True),
    "S2": Shape(32, 32, 64),
    "SP": Shape(32, 32, 1),
    "S3": Shape(32, 32, 16, qos=1),
    "S4": Shape(1, 256, 64),
    "L3": Shape(32, 32, 1, qos=1),
}


def connect(broker: Broker, client_id: str) -> MQTTConnection:
    conn = MQTTConnection(broker, "bench")
    conn.connection_made(FakeTransport())  # type: ignore[arg-type]
    conn.data_received(encode(Connect(protocol_version=MQTT_3_1_1, client_id=client_id), MQTT_3_1_1))
    return conn


def receive(conn: MQTTConnection, data: bytes) -> None:
    """One socket read of ``data`` as a BufferedProtocol transport makes it (``--buffered``)."""
    size = len(data)
    conn.get_buffer(-1)[:size] = data
    conn.buffer_updated(size)


def turn(loop: asyncio.AbstractEventLoop) -> None:
    """Run the callbacks the broker scheduled (its flushes), as one loop iteration would.

    Reaches into asyncio's ready queue (a private attribute) so that the measure
    holds the callbacks' own cost and not that of running the loop.
    """
    ready = loop._ready  # type: ignore[attr-defined]
    while ready:
        ready.popleft()._run()


def measure(name: str, rounds: int, profile: cProfile.Profile | None, allow_all: bool = False,
            buffered: bool = False, bus: bool = False) -> float:
    """Microseconds of CPU per delivered message for one shape (``buffered``: reads as TCP makes them)."""
    shape = SHAPES[name]
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    hooks = HookManager()
    if allow_all:
        hooks.add(AllowAllHook())
    fabric = BusFabric(BusStandIn(), 0) if bus else None  # type: ignore[arg-type]
    broker = Broker(Options(), hooks, fabric, loop=loop)
    if fabric is not None:
        fabric.attach(broker)
    subscribers = [connect(broker, f"sub-{i}") for i in range(shape.subscribers)]

    async def subscribe() -> None:
        """Each subscriber subscribes; back once every SUBACK is written (with a BusFabric, a
        SUBACK waits for the fabric's barrier, a future: the loop must run)."""
        for i, sub in enumerate(subscribers):
            topic_filter = "bench/#" if shape.fanin else f"bench/{i if shape.publishers > 1 else 0}"
            sub.data_received(encode(Subscribe(1, (Subscription(topic_filter, qos=shape.qos),)), MQTT_3_1_1))
        while any(sub.transport.written < CONNACK_AND_SUBACK for sub in subscribers):  # type: ignore[union-attr]
            await asyncio.sleep(0)

    loop.run_until_complete(subscribe())
    publishers = [connect(broker, f"pub-{i}") for i in range(shape.publishers)]
    turn(loop)
    payload = b"x" * 64
    # each read: per_read PUBLISH packets from one publisher (QoS 1: packet ids 1..per_read)
    reads = [b"".join(encode(Publish(shape.topic(i), payload, qos=shape.qos,
                                     packet_id=(n + 1) if shape.qos else None), MQTT_3_1_1)
                      for n in range(shape.per_read))
             for i in range(shape.publishers)]
    # the PUBACKs a subscriber sends for per_read messages, by the first packet id it was given
    next_id = [1] * len(subscribers)
    cpu = 0.0
    delivered_before = broker.messages_sent
    for _ in range(rounds):
        acks = []
        if shape.qos:
            for index in range(len(subscribers)):
                first = next_id[index]
                acks.append(b"".join(b"\x40\x02" + ((first + k - 1) % 65535 + 1).to_bytes(2, "big")
                                     for k in range(shape.per_read)))
                next_id[index] = (first + shape.per_read - 1) % 65535 + 1
        if profile is not None:
            profile.enable()
        started = time.process_time()
        if buffered:
            for conn, data in zip(publishers, reads):
                receive(conn, data)
            turn(loop)
            for conn, data in zip(subscribers, acks):
                receive(conn, data)
        else:
            for conn, data in zip(publishers, reads):
                conn.data_received(data)
            turn(loop)
            for conn, data in zip(subscribers, acks):
                conn.data_received(data)
        turn(loop)
        cpu += time.process_time() - started
        if profile is not None:
            profile.disable()
    delivered = broker.messages_sent - delivered_before
    expected = rounds * shape.publishers * shape.per_read * shape.deliveries_per_message()
    if delivered != expected:
        raise SystemExit(f"{name}: {delivered} deliveries, expected {expected}")
    loop.close()
    return cpu / delivered * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shapes", nargs="*", default=list(SHAPES))
    parser.add_argument("--messages", type=int, default=200_000, help="deliveries per shape (about)")
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    parser.add_argument("--cprofile", action="store_true", help="print the top functions (cProfile)")
    parser.add_argument("--allow-all", action="store_true",
                        help="with the AllowAllHook (kushi serve without authentication before it left it out)")
    parser.add_argument("--bus", action="store_true",
                        help="a kushi serve worker's fabric (BusFabric) on a bus of one worker")
    parser.add_argument("--buffered", action="store_true",
                        help="feed reads through get_buffer/buffer_updated, as a TCP transport does")
    args = parser.parse_args()
    for name in args.shapes:
        shape = SHAPES[name]
        per_round = shape.publishers * shape.per_read * shape.deliveries_per_message()
        rounds = max(1, args.messages // per_round)
        best = min(measure(name, rounds, None, args.allow_all, args.buffered, args.bus) for _ in range(args.repeat))
        print(f"{name}: {best:.2f} us CPU per delivered message "
              f"({rounds * per_round:,} deliveries, best of {args.repeat})")
        if args.cprofile:
            profile = cProfile.Profile()
            measure(name, rounds, profile, args.allow_all, args.buffered, args.bus)
            pstats.Stats(profile, stream=sys.stdout).sort_stats("tottime").print_stats(18)
    return 0


if __name__ == "__main__":
    sys.exit(main())
