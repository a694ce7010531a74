"""AllowAllHook: every client may connect, publish and subscribe.

The default of ``kushi serve`` when no authentication is configured (the
server logs a warning then). Use it in development, or behind a network that
already decides who may reach the broker.
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
