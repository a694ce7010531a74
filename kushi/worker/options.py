"""Options: every setting of one kushi server, each with a default.

One flat dataclass so that a config file, CLI flags and an embedding program
all fill the same record. The limits here are what keeps memory bounded
(architecture invariant 8): packet size, inflight, queued messages, write
buffers, connections.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from ..errors import ConfigurationError


RESTART_ONLY = frozenset({"workers", "inline_client", "sys_interval", "maximum_packet_size"})
"""Options a running server cannot change in place (SIGHUP): the number of processes, what
the supervisor started, and the packet size the WebSocket listeners were opened with."""


@dataclass
class Options:
    """The settings of a kushi server; the defaults serve a typical broker."""

    workers: int = 1
    inline_client: bool = True
    max_clients: int = 0                  # 0 = unlimited
    maximum_session_expiry: int = 0xFFFFFFFF
    maximum_message_expiry: int = 0       # 0 = no cap
    receive_maximum: int = 1024           # ours, advertised in CONNACK
    maximum_inflight: int = 1024          # cap on what we send in flight to one client
    maximum_qos: int = 2
    retain_available: bool = True
    wildcard_subscriptions_available: bool = True
    subscription_identifiers_available: bool = True
    shared_subscriptions_available: bool = True
    maximum_packet_size: int = 1_048_576  # inbound limit, advertised in CONNACK (v5)
    topic_alias_maximum: int = 65535      # inbound aliases we accept
    minimum_protocol_version: int = 3
    max_queued_messages: int = 1000       # per offline/slow session; oldest dropped & counted
    write_buffer_limit: int = 8_388_608   # bytes buffered for one slow client before it is disconnected
    server_keep_alive: int | None = None  # if set, overrides the client's keep alive (v5 property)
    connect_timeout: float = 10.0
    sys_interval: float = 10.0            # $SYS publish interval, 0 = off
    allow_empty_client_id: bool = True

    def __post_init__(self) -> None:
        """Refuse values the protocol cannot carry, with the name of the setting at fault."""
        ranges = {
            "workers": (1, 1024),
            "receive_maximum": (1, 65535),
            "maximum_inflight": (1, 65535),
            "maximum_qos": (0, 2),
            "topic_alias_maximum": (0, 65535),
            "maximum_packet_size": (16, 268_435_460),
            "minimum_protocol_version": (3, 5),
            "maximum_session_expiry": (0, 0xFFFFFFFF),
            "maximum_message_expiry": (0, 0xFFFFFFFF),
            "max_clients": (0, 1 << 62),
            "max_queued_messages": (0, 1 << 62),
            "write_buffer_limit": (1, 1 << 62),
        }
        for name, (low, high) in ranges.items():
            value = getattr(self, name)
            if not isinstance(value, int) or not low <= value <= high:
                raise ConfigurationError(f"option {name}={value!r} is outside {low}..{high}")
        if self.server_keep_alive is not None and not 0 <= self.server_keep_alive <= 65535:
            raise ConfigurationError(f"option server_keep_alive={self.server_keep_alive!r} is outside 0..65535")
        if self.connect_timeout <= 0:
            raise ConfigurationError("option connect_timeout must be positive")

    def changes_to(self, new: Options) -> tuple[dict[str, object], list[str]]:
        """What a reload from ``self`` to ``new`` changes: (the fields that change in place, with
        their new values; the names of changed fields that wait for a restart).

        In place is enough because the broker reads its options when it uses them: a new
        limit applies from the next CONNECT, message or session on, and no connection drops.
        """
        in_place: dict[str, object] = {}
        restart: list[str] = []
        for field in fields(self):
            value = getattr(new, field.name)
            if value != getattr(self, field.name):
                if field.name in RESTART_ONLY:
                    restart.append(field.name)
                else:
                    in_place[field.name] = value
        return in_place, restart

    def change(self, values: dict[str, object]) -> None:
        """Set fields in place (values checked by building the new Options first)."""
        for name, value in values.items():
            if name in RESTART_ONLY or not hasattr(self, name):
                raise ConfigurationError(f"option {name} cannot change while the server runs")
            setattr(self, name, value)
