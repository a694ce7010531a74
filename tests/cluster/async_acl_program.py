"""A broker of 3 workers whose ACL is a coroutine (run by test_handover_qos2.py).

    python async_acl_program.py

With a coroutine ``on_acl_check`` the workers route every message in a task,
after awaiting the read ACL (``kushi.worker.async_filters``): later than the
bus call that brought it, which a session hand-over must cope with. The ACL
allows everything after a wait of up to a millisecond. It logs as ``kushi
serve`` does (``KushiCluster`` reads the lines); SIGTERM stops it.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import kushi
from kushi.ops.logging import configure_logging


class SlowAcl(kushi.Hook):
    id = "slow-acl"

    async def on_acl_check(self, client: Any, topic: str, write: bool) -> bool:
        await asyncio.sleep(random.uniform(0, 0.001))   # an ACL service, imagined
        return True


async def main() -> None:
    configure_logging("info", "sup")
    server = kushi.Server(kushi.Options(workers=3, sys_interval=0, max_queued_messages=100_000))
    server.add_hook(SlowAcl())
    server.add_listener(kushi.TCP("t", "127.0.0.1:0"))
    await server.start()
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
