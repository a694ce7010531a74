#!/usr/bin/env python3
"""The broker's Python cost per delivered 64 KiB QoS 1 message (S6), without sockets: a replay.

As ``profile_hotpath.py`` does for small messages: real ``MQTTConnection`` and
``Broker`` objects on fake transports, with the bytes *read into the connection's
own buffers* the way uvloop does for an ``asyncio.BufferedProtocol`` (``get_buffer``,
the bytes put there, ``buffer_updated``; again while the "socket" holds more), so the
landing buffers of large packets are exercised. Each round, every publisher's socket
holds ``--per-read`` PUBLISH packets (S6: mqbench's window of 16 allows several), the
loop is turned (the flushes), then every subscriber's PUBACKs are read.

The bytes copied into the buffers stand for the kernel's copy and are counted too.
Instruction counts are what to compare (load-independent): run it under callgrind
with two message counts and take the difference,

    valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.%p .venv/bin/python \
        benchmarks/profile_large.py --messages 800
    (and --messages 2400; (Ir(2400) - Ir(800)) / 1600 = instructions per message)

or run it plainly for CPU microseconds (``--cprofile``: where the time goes). Of the
instructions, 65.5 K per message are the copy into the buffers (``__memcpy_*`` in
callgrind_annotate): anything above that in memcpy is a copy made by the broker.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from profile_hotpath import FakeTransport, turn  # noqa: E402  (the fake transport and loop turn)

from kushi.hooks.manager import HookManager  # noqa: E402
from kushi.protocol.codec import encode  # noqa: E402
from kushi.protocol.packets import MQTT_3_1_1, Connect, Publish, Subscribe, Subscription  # noqa: E402
from kushi.worker.broker import Broker  # noqa: E402
from kushi.worker.connection import MQTTConnection  # noqa: E402
from kushi.worker.options import Options  # noqa: E402

PAIRS = 4
PAYLOAD = 65_536


def read_into(conn: MQTTConnection, data: bytes | bytearray) -> None:
    """``data`` arrives on ``conn``'s socket: read into its buffers until the socket is empty."""
    view = memoryview(data)
    while view:
        buffer = conn.get_buffer(-1)
        count = min(len(buffer), len(view))
        buffer[:count] = view[:count]
        del buffer   # uvloop lets go of the buffer before buffer_updated returns
        view = view[count:]
        conn.buffer_updated(count)


def connect(broker: Broker, client_id: str) -> MQTTConnection:
    conn = MQTTConnection(broker, "bench")
    conn.connection_made(FakeTransport())  # type: ignore[arg-type]
    read_into(conn, encode(Connect(protocol_version=MQTT_3_1_1, client_id=client_id), MQTT_3_1_1))
    return conn


def measure(messages: int, per_read: int, profile: cProfile.Profile | None) -> tuple[float, int]:
    """(microseconds of CPU per delivered message, deliveries) for about ``messages`` deliveries."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    broker = Broker(Options(), HookManager(), loop=loop)   # no hooks: kushi serve without authentication
    subscribers = [connect(broker, f"sub-{i}") for i in range(PAIRS)]
    for i, sub in enumerate(subscribers):
        read_into(sub, encode(Subscribe(1, (Subscription(f"bench/{i}", qos=1),)), MQTT_3_1_1))
    publishers = [connect(broker, f"pub-{i}") for i in range(PAIRS)]
    turn(loop)
    payload = bytes(range(256)) * (PAYLOAD // 256)
    rounds = max(1, messages // (PAIRS * per_read))
    # each publisher's read, encoded once; each round only its packet ids are written in, so
    # the one copy of the payload per message is the one into the connection's buffers
    packets = [encode(Publish(f"bench/{i}", payload, qos=1, packet_id=1), MQTT_3_1_1) for i in range(PAIRS)]
    reads = [bytearray(packet * per_read) for packet in packets]
    id_at = len(packets[0]) - PAYLOAD - 2
    next_id = 0   # the subscribers' packet ids go up together: one message per pair per step
    cpu = 0.0
    delivered_before = broker.messages_sent
    for _ in range(rounds):
        for read in reads:
            for n in range(per_read):
                at = n * len(packets[0]) + id_at
                read[at:at + 2] = ((next_id + n) % 65535 + 1).to_bytes(2, "big")
        acks = b"".join(b"\x40\x02" + ((next_id + n) % 65535 + 1).to_bytes(2, "big") for n in range(per_read))
        next_id = (next_id + per_read) % 65535
        if profile is not None:
            profile.enable()
        started = time.process_time()
        for conn, data in zip(publishers, reads):
            read_into(conn, data)
        turn(loop)
        for conn in subscribers:
            read_into(conn, acks)
        turn(loop)
        cpu += time.process_time() - started
        if profile is not None:
            profile.disable()
    delivered = broker.messages_sent - delivered_before
    if delivered != rounds * PAIRS * per_read:
        raise SystemExit(f"{delivered} deliveries, expected {rounds * PAIRS * per_read}")
    if any(conn.session.inflight for conn in subscribers):   # type: ignore[union-attr]
        raise SystemExit("messages left in flight: the PUBACKs did not match")
    loop.close()
    return cpu / delivered * 1e6, delivered


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000, help="deliveries (about)")
    parser.add_argument("--per-read", type=int, default=8,
                        help="PUBLISH packets a publisher's socket holds when it is read")
    parser.add_argument("--cprofile", action="store_true", help="print the top functions (cProfile)")
    args = parser.parse_args()
    us, delivered = measure(args.messages, args.per_read, None)
    print(f"S6 replay: {us:.2f} us CPU per delivered message ({delivered:,} deliveries, "
          f"{args.per_read} per read)")
    if args.cprofile:
        profile = cProfile.Profile()
        measure(args.messages, args.per_read, profile)
        pstats.Stats(profile, stream=sys.stdout).sort_stats("tottime").print_stats(25)
    return 0


if __name__ == "__main__":
    sys.exit(main())
