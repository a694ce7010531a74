"""A program that embeds kushi.Server(Options(workers=2)) (run by test_embedded_server.py).

    python embedded_server.py

It adds a hook that refuses the user name its config names, "intruder" (so the
test can see the hook and its config in the workers), starts the server, subscribes the inline client to
"to-server/#" (printing "INLINE topic payload"), publishes a retained
"from-server/hello", prints "INTROSPECTION <number of clients()>" (asked of the
workers: tests/cluster/test_introspection.py covers the rest) and "PORT <port>".
SIGTERM stops it.
"""

from __future__ import annotations

import asyncio
import json
import sys

import kushi


def say(*words: object) -> None:
    print(*words, flush=True)


class RefuseIntruder(kushi.Hook):
    """Refuses the user name its config names: the config must reach each worker's init()."""

    id = "refuse-intruder"
    refused: str | None = None

    def init(self, config: dict[str, str]) -> None:
        self.refused = config["refuse"]

    def on_connect_authenticate(self, client, packet) -> bool:
        return packet.username != self.refused


async def main() -> None:
    server = kushi.Server(kushi.Options(workers=2, sys_interval=0))
    server.add_hook(RefuseIntruder(), {"refuse": "intruder"})
    server.add_listener(kushi.TCP("t", "127.0.0.1:0"))
    await server.start()
    await server.subscribe("to-server/#", 1, lambda topic, payload, packet: say("INLINE", topic, payload.decode()))
    await server.publish("from-server/hello", b"hi", retain=True, qos=1)
    say("INTROSPECTION", len(await server.clients()))   # answered by the workers (none connected yet)
    say("PORT", server.listeners["t"].port, json.dumps(server.supervisor.worker_pids()))
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
