"""A program that embeds kushi.Server(Options(workers=2)) with coroutine message-path filters
(run by test_async_filters_workers.py).

    python async_hooks_program.py

Its hook's ACL and on_publish are coroutines that await a random few milliseconds (an async
database, imagined): the ACL refuses publishing to "denied/#" and refuses topics with a
"private" level to the clients whose id starts with "outsider"; on_publish appends "!" to
every payload. Each worker prints "SESSION <client id> <pid>" when a client's session is
established, so the test knows which worker holds whom. The program prints "PORT <port> <worker pids as JSON>"; SIGTERM stops it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import random
import sys
from typing import Any

import kushi


def say(*words: object) -> None:
    """One line in one write(2): both workers share this stdout."""
    os.write(1, (" ".join(map(str, words)) + "\n").encode())


class AsyncRules(kushi.Hook):
    id = "async-rules"

    async def on_acl_check(self, client: Any, topic: str, write: bool) -> bool:
        await asyncio.sleep(random.uniform(0, 0.002))
        if write:
            return not topic.startswith("denied/")
        return not ("private" in topic.split("/") and client.client_id.startswith("outsider"))

    async def on_publish(self, client: Any, packet: Any) -> Any:
        await asyncio.sleep(random.uniform(0, 0.002))
        return dataclasses.replace(packet, payload=bytes(packet.payload) + b"!")

    def on_session_established(self, client: Any, packet: Any) -> None:
        say("SESSION", client.client_id, os.getpid())


async def main() -> None:
    server = kushi.Server(kushi.Options(workers=2, sys_interval=0))
    server.add_hook(AsyncRules())
    server.add_listener(kushi.TCP("t", "127.0.0.1:0"))
    await server.start()
    say("PORT", server.listeners["t"].port, json.dumps(server.supervisor.worker_pids()))
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
