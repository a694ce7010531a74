"""A bus node in its own process, driven by the tests of test_bus.py.

    python bus_peer.py RUNTIME_DIR NAME REGISTRAR

It joins the bus, at once sends "first" to the registrar (a join that leaves
a slow-joiner gap would lose it), answers "echo" requests, and obeys "cmd"
items from the registrar:
    send N      N items "n" to the registrar, payloads "0".."N-1", over several loop iterations
    skip K      advance its sequence to the registrar by K (as if K batches were lost), send one item
    stop        leave and exit 0
"""

from __future__ import annotations

import asyncio
import sys

import uvloop

from kushi.router.bus import Bus, prefix_of


async def main(runtime_dir: str, name: str, registrar: str) -> None:
    bus = Bus(name, runtime_dir, registrar=registrar)
    stopped = asyncio.Event()

    def on_cmd(sender: str, payload: bytes) -> None:
        command, _, argument = payload.decode().partition(" ")
        if command == "send":
            asyncio.get_running_loop().create_task(send_many(sender, int(argument)))
        elif command == "skip":
            prefix = prefix_of(sender)
            bus._sent_seq[prefix] = bus._sent_seq.get(prefix, 0) + int(argument)
            bus.send(sender, "skipped", b"")
        elif command == "stop":
            stopped.set()

    async def send_many(recipient: str, count: int) -> None:
        for index in range(count):
            bus.send(recipient, "n", str(index).encode())
            if index % 100 == 99:
                await asyncio.sleep(0)  # let a flush happen: many batches, not one

    bus.on("cmd", on_cmd)
    bus.serve("echo", lambda sender, payload: b"echo:" + payload)
    await bus.start()
    bus.send(registrar, "first", name.encode())
    await stopped.wait()
    await bus.close()


if __name__ == "__main__":
    uvloop.run(main(*sys.argv[1:4]))
