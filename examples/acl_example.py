"""Access control with a custom hook: each client may use only its own subtree.

A client may publish to, and subscribe within, ``clients/<its client id>/#``
and nothing else. A refused PUBLISH is acknowledged with reason code 0x87
(Not authorized) in MQTT 5 and not delivered; a refused subscription gets 0x87
in its SUBACK (0x80 in 3.1.1).

The whole policy is one method, ``on_acl_check(client, topic, write)``: the
broker asks it for each PUBLISH (``topic`` is the topic name, ``write`` True)
and for each filter of a SUBSCRIBE (``topic`` is the filter, ``write`` False).
A filter is inside the subtree exactly when it starts with ``clients/<id>/``
(its wildcards can then only reach deeper) or is ``clients/<id>`` itself.

Usage::

    python examples/acl_example.py --tcp :1883

The broker logs ``listening tcp HOST:PORT`` once it is open (``--tcp
127.0.0.1:0`` picks a free port) and stops gracefully on SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import logging

import kushi
from kushi.hooks.base import ClientInfo
from kushi.protocol.topics import parse_shared

log = logging.getLogger("acl")

#: Characters that would let a client id reach outside its subtree (``clients/#/...``).
UNSAFE_IN_CLIENT_ID = frozenset("+#/")


class OwnSubtreeOnly(kushi.Hook):
    """Allow a client ``clients/<client_id>/#`` only."""

    id = "own-subtree"

    def on_acl_check(self, client: ClientInfo, topic: str, write: bool) -> bool:
        client_id = client.client_id
        if UNSAFE_IN_CLIENT_ID.intersection(client_id):
            return False
        _, topic = parse_shared(topic)   # "$share/group/clients/a/#" is checked as "clients/a/#"
        own = f"clients/{client_id}"
        allowed = topic == own or topic.startswith(own + "/")
        if not allowed:
            log.info("refused %s %s %s", client_id, "publish to" if write else "subscribe to", topic)
        return allowed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--tcp", default=":1883", help="listen address HOST:PORT (port 0: any free port)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")

    server = kushi.Server(kushi.Options(sys_interval=0))
    server.add_hook(OwnSubtreeOnly())
    server.add_listener(kushi.TCP("tcp", args.tcp))
    server.run()   # blocks; SIGINT or SIGTERM closes it gracefully


if __name__ == "__main__":
    main()
