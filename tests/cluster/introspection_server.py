"""A program embedding kushi.Server(Options(workers=N)) that answers introspection commands
(run by test_introspection.py).

    python introspection_server.py WORKERS TIMEOUT

It prints "PORT <port> <pids>" (pids: worker id -> pid, JSON) once the workers listen,
then reads one command per line on stdin and prints one "ANSWER <json>" line for each
(or "ERROR <error class> <message>"):

    clients | client ID | subscriptions ID | disconnect ID REASON | retained FILTER

``server.introspection_timeout`` is TIMEOUT seconds. Only the supervisor (this process)
prints; SIGTERM stops it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
from typing import Any

import kushi


def say(*words: object) -> None:
    print(*words, flush=True)


async def answer(server: kushi.Server, command: str, args: list[str]) -> Any:
    if command == "clients":
        return [dataclasses.asdict(client) for client in await server.clients()]
    if command == "client":
        client = await server.client(args[0])
        return dataclasses.asdict(client) if client is not None else None
    if command == "subscriptions":
        subscriptions = await server.subscriptions(args[0])
        return {filter: dataclasses.asdict(record) for filter, record in subscriptions.items()}
    if command == "disconnect":
        return await server.disconnect_client(args[0], int(args[1], 0))
    if command == "retained":
        return [[message.topic, bytes(message.payload).decode(), message.qos, message.retain]
                for message in await server.retained(args[0])]
    raise ValueError(f"unknown command {command!r}")


async def main(workers: int, timeout: float) -> None:
    server = kushi.Server(kushi.Options(workers=workers, sys_interval=0))
    server.introspection_timeout = timeout
    server.add_listener(kushi.TCP("t", "127.0.0.1:0"))
    await server.start()
    say("PORT", server.listeners["t"].port, json.dumps(server.supervisor.worker_pids()))
    commands = asyncio.ensure_future(answer_commands(server))
    await server.serve_forever()   # until SIGTERM
    commands.cancel()


async def answer_commands(server: kushi.Server) -> None:
    """Answer each command line on stdin with one ANSWER (or ERROR) line."""
    stdin = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    while line := await stdin.readline():
        command, *args = line.decode().split()
        try:
            say("ANSWER", json.dumps(await answer(server, command, args)))
        except kushi.errors.KushiError as exc:
            say("ERROR", type(exc).__name__, exc)

if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), float(sys.argv[2])))
    sys.exit(0)
