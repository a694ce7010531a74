"""An edge gateway that embeds kushi: the broker is part of the program, not a separate daemon.

What it shows, all in one hook (``GatewayHook``) and a short ``main``:

* authentication against a device table in SQLite: a device connects with
  client id = username = its device id and its secret as password; anything
  else is refused (CONNACK 0x86 in MQTT 5, return code 4 in 3.1.1);
* online/offline status: when a device's session is established, and when its
  connection ends, the table is updated and ``devices/<id>/status`` is
  published *retained* by the inline client (no network client involved);
* every message a client publishes is logged (``on_published``);
* the inline client subscribes to ``devices/+/status`` and logs
  ``status <id> <state> (worker <n>)`` for each status it sees;
* every ``--command-interval`` seconds the gateway publishes a command to each
  online device on ``devices/<id>/cmd`` (QoS 1).

Usage::

    python examples/edge_gateway.py --db devices.db --add-device sensor-1 s3cret
    python examples/edge_gateway.py --db devices.db --tcp :1883
    mosquitto_sub -h 127.0.0.1 -i sensor-1 -u sensor-1 -P s3cret -t 'devices/sensor-1/cmd'

The program prints ``kushi: listening tcp HOST:PORT`` once the listener is open
(``--tcp 127.0.0.1:0`` picks a free port) and stops gracefully on SIGINT/SIGTERM.

With ``--workers N`` kushi's supervisor forks N worker processes sharing the
port. The one ``GatewayHook`` object is created here, before the fork; each
worker runs its ``init`` (its own SQLite connection) and ``on_started`` (its own
inline subscription, which sees statuses published on every worker). Only
worker 0 sends the commands; the cluster delivers them to devices on any worker.

The SQLite connection is opened in the hook's ``init``, which runs in the process
that serves (with several workers, in each worker after the fork), never in
``__init__``: a database connection must not cross a fork.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import logging
import signal
import sqlite3
import sys
import time
from typing import Any

import kushi
from kushi.hooks.base import ClientInfo
from kushi.protocol.packets import Connect, Publish

log = logging.getLogger("gateway")

SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    id          TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL,           -- sha256 hex of the device's secret
    status      TEXT NOT NULL DEFAULT 'offline',
    changed_at  REAL                     -- time.time() of the last status change
)
"""


def hash_secret(secret: str | bytes) -> str:
    """The stored form of a device secret (secrets are long random tokens, so one sha256 suffices)."""
    if isinstance(secret, str):
        secret = secret.encode()
    return hashlib.sha256(secret).hexdigest()


def open_database(path: str) -> sqlite3.Connection:
    """Open (and if needed create) the device table."""
    db = sqlite3.connect(path, isolation_level=None)  # autocommit: each statement is durable at once
    db.execute("PRAGMA journal_mode=WAL")             # readers (a dashboard, a test) never block us
    db.execute(SCHEMA)
    return db


def add_device(path: str, device_id: str, secret: str) -> None:
    """Provision a device (or replace its secret)."""
    db = open_database(path)
    try:
        db.execute("INSERT INTO devices (id, secret_hash) VALUES (?, ?) "
                   "ON CONFLICT(id) DO UPDATE SET secret_hash = excluded.secret_hash",
                   (device_id, hash_secret(secret)))
    finally:
        db.close()


class GatewayHook(kushi.Hook):
    """Device authentication, status tracking, message log and the gateway's own traffic."""

    id = "gateway"

    def __init__(self, db_path: str, command_interval: float) -> None:
        # Only plain settings here: this object is created before any fork.
        self.db_path = db_path
        self.command_interval = command_interval
        self.db: sqlite3.Connection | None = None
        self.server: Any = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # ---- lifecycle ---------------------------------------------------------------
    def init(self, config: Any) -> None:
        """Runs in the serving process before any client is accepted: open the database."""
        self.db = open_database(self.db_path)

    def on_started(self, server: Any) -> None:
        """Listeners are open: subscribe the inline client, start the command timer."""
        self.server = server
        self._spawn(server.subscribe("devices/+/status", 1, self.on_status))
        if server.worker_id == 0:  # with several workers, one of them sends the commands
            self._spawn(self.send_commands())

    def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self.db is not None:
            self.db.close()
            self.db = None

    # ---- authentication --------------------------------------------------------------
    def on_connect_authenticate(self, client: ClientInfo, packet: Connect) -> bool:
        """Only a known device, connecting as itself, with its secret."""
        device_id = packet.username
        if device_id is None or packet.client_id != device_id or packet.password is None:
            return False
        row = self.db.execute("SELECT secret_hash FROM devices WHERE id = ?", (device_id,)).fetchone()
        if row is None:
            log.info("refused unknown device %s", device_id)
            return False
        return hmac.compare_digest(row[0], hash_secret(packet.password))

    # ---- status ----------------------------------------------------------------------
    def on_session_established(self, client: ClientInfo, packet: Connect) -> None:
        self.set_status(client.client_id, "online")

    def on_disconnect(self, client: ClientInfo, error: BaseException | None, expire: bool) -> None:
        self.set_status(client.client_id, "offline")

    def set_status(self, device_id: str, state: str) -> None:
        """Record the state in the table now; publish it retained through the inline client."""
        if self.db is not None:
            self.db.execute("UPDATE devices SET status = ?, changed_at = ? WHERE id = ?",
                            (state, time.time(), device_id))
        log.info("%s %s (worker %d)", state, device_id, self.server.worker_id)
        self._spawn(self.server.publish(f"devices/{device_id}/status", state, retain=True, qos=1))

    def on_status(self, topic: str, payload: bytes, packet: Publish) -> None:
        """The inline subscription to ``devices/+/status``."""
        device_id = topic.split("/")[1]
        log.info("status %s %s (worker %d)", device_id, payload.decode(errors="replace"),
                 self.server.worker_id)

    # ---- messages --------------------------------------------------------------------
    def on_published(self, client: ClientInfo, packet: Publish) -> None:
        log.info("published by %s on %s: %d bytes", client.client_id, packet.topic, len(packet.payload))

    async def send_commands(self) -> None:
        """Every ``command_interval`` seconds, ask each online device for a report."""
        while True:
            await asyncio.sleep(self.command_interval)
            online = self.db.execute("SELECT id FROM devices WHERE status = 'online'").fetchall()
            for (device_id,) in online:
                await self.server.publish(f"devices/{device_id}/cmd", b'{"cmd": "report"}', qos=1)
                log.info("command %s report", device_id)

    def _spawn(self, coroutine: Any) -> None:
        """Run a coroutine on the server's loop, keeping a reference until it ends."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


async def serve(server: kushi.Server) -> None:
    """start / announce / serve_forever, closed gracefully by SIGINT or SIGTERM."""
    await server.start()
    for handle in server.listeners.values():
        logging.getLogger("kushi").info("listening %s %s", handle.config.kind, handle.address)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, lambda: loop.create_task(server.close()))
    await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--db", required=True, help="SQLite file holding the device table")
    parser.add_argument("--tcp", default=":1883", help="listen address HOST:PORT (port 0: any free port)")
    parser.add_argument("--command-interval", type=float, default=30.0,
                        help="seconds between commands to the online devices")
    parser.add_argument("--workers", type=int, default=1,
                        help="worker processes (> 1: forked by kushi's supervisor, hooks run in each)")
    parser.add_argument("--add-device", nargs=2, metavar=("ID", "SECRET"), action="append",
                        help="provision a device in the table and exit (may be repeated)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")

    if args.add_device:
        for device_id, secret in args.add_device:
            add_device(args.db, device_id, secret)
        return
    options = kushi.Options(workers=args.workers, sys_interval=0)
    hook = GatewayHook(args.db, args.command_interval)
    listener = kushi.TCP("tcp", args.tcp)
    if args.workers > 1:
        # The supervisor forks the workers; each runs the hook (init, on_started ...) itself.
        from kushi.cluster.supervisor import run_cluster
        sys.exit(run_cluster(options, [listener], [hook]))
    server = kushi.Server(options)
    server.add_hook(hook)
    server.add_listener(listener)
    asyncio.run(serve(server))


if __name__ == "__main__":
    main()
