"""A program embedding kushi.Server(Options(workers=2, sys_interval=1)) (run by
test_sys_info_across_workers.py).

Its hook writes "TICK <json>" for each ``on_sys_info_tick`` it gets, from the
worker that runs it (workers inherit stdout), and "PORT <port>" once serving.
SIGTERM stops it.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

import kushi


class PrintTicks(kushi.Hook):
    id = "print-ticks"

    def on_sys_info_tick(self, info: dict) -> None:
        # one write(2) per line: both workers share this stdout, and print() may write in pieces
        line = "TICK " + json.dumps({**info, "pid": os.getpid()}, sort_keys=True) + "\n"
        os.write(1, line.encode())


async def main() -> None:
    server = kushi.Server(kushi.Options(workers=2, sys_interval=1))
    server.add_hook(PrintTicks())
    server.add_listener(kushi.TCP("t", "127.0.0.1:0"))
    await server.start()
    print("PORT", server.listeners["t"].port, json.dumps(server.supervisor.worker_pids()), flush=True)
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
