"""An embedding program with a multi-worker broker (run by test_embedded.py).

    python embedded_supervisor.py

The supervisor subscribes its inline client to "to-sup/#" and prints what it
gets; it publishes a retained "from-sup/hello" once the workers listen. On
"to-sup/stats" it prints its aggregated statistics. It prints "PORT <n> <pids>"
when ready (pids: worker id -> pid, JSON) and stops on SIGTERM. A line
"SUB <filter>" on its stdin subscribes the inline client to <filter> too: it
prints "LATE <topic> <payload> <retain>" for each message that subscription
gets, and "SUBSCRIBED <filter>" when the call returned.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys

from kushi.cluster.supervisor import Supervisor
from kushi.protocol.packets import Publish
from kushi.worker.listeners import TCP
from kushi.worker.options import Options


def say(*words: object) -> None:
    print(*words, flush=True)


async def ready(supervisor: Supervisor) -> None:
    def on_message(topic: str, payload: bytes, packet: object) -> None:
        say("INLINE", topic, payload.decode())
        if topic == "to-sup/stats":
            say("STATS", json.dumps(supervisor.stats(), sort_keys=True))

    await supervisor.subscribe("to-sup/#", 1, on_message)
    await supervisor.publish("from-sup/hello", b"hi", retain=True, qos=1)
    kind, host, port = supervisor.listeners["t"]
    asyncio.get_running_loop().add_reader(sys.stdin.fileno(), read_command, supervisor)
    say("PORT", port, json.dumps(supervisor.worker_pids()))


def read_command(supervisor: Supervisor) -> None:
    """One line of stdin: "SUB <filter>" subscribes the inline client to it (id 2)."""
    line = sys.stdin.readline().split()
    if line[:1] == ["SUB"]:
        asyncio.get_running_loop().create_task(subscribe_late(supervisor, line[1]))


async def subscribe_late(supervisor: Supervisor, filter: str) -> None:
    def on_message(topic: str, payload: bytes, packet: Publish) -> None:
        say("LATE", topic, payload.decode(), int(packet.retain))

    await supervisor.subscribe(filter, 2, on_message)
    say("SUBSCRIBED", filter)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    sys.exit(Supervisor(Options(sys_interval=0), [TCP("t", "127.0.0.1:0")], workers=2,
                        on_ready=[ready]).run())
