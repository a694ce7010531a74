"""AllowAllHook: every client may connect, publish and subscribe.

A broker with no authentication or ACL hook already behaves so, which is how
``kushi serve`` runs when no authentication is configured (it logs a warning
then, and adds no hook: this one would only cost calls per CONNECT and per
message). Use it where a hook list must say so explicitly, in development, or
behind a network that already decides who may reach the broker.
"""

from __future__ import annotations

from ..protocol.packets import Connect
from .base import ClientInfo, Hook


class AllowAllHook(Hook):
    """Lets every client in, and allows every topic for reading and writing."""

    id = "allow-all"

    def on_connect_authenticate(self, client: ClientInfo, packet: Connect) -> bool:
        return True

    def on_acl_check(self, client: ClientInfo, topic: str, write: bool) -> bool:
        return True
