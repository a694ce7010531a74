"""SqliteStorage: persistent sessions and retained messages in one SQLite file.

    server.add_hook(SqliteStorage("/var/lib/kushi/kushi.db", autosave_interval=1.0))
    # kushi serve --storage /var/lib/kushi/kushi.db     (YAML: storage: {path: ...})

Off unless added, as Mosquitto's ``persistence``. What is kept, and when
(in the manner of Mosquitto's ``persistence true`` + ``autosave_interval``):

- **At once** (the event's own transaction): a persistent session (Session
  Expiry Interval > 0; a 3.1.1 client with clean session 0) when it is
  established, its subscriptions on each SUBACK/UNSUBACK, its end (clean
  start, disconnect with expiry 0, expiry: its rows are deleted), a
  disconnect (when it happened, the will still waiting); retained messages
  when set, cleared or expired. ``$SYS`` topics are never kept: the server
  publishes them afresh.
- **Every ``autosave_interval`` seconds** (default 1 s): the queued and
  in-flight messages of the sessions whose messages changed since the last
  save (``Server.message_state_versions``: an idle session costs nothing but
  one comparison). One second bounds what a crash (kill -9, power loss) can
  lose to the last second of message traffic, for at most one transaction
  per second per worker; a longer interval writes less under heavy traffic.
- **In ``stop()``** (SIGTERM, ``Server.close()``): everything, after the
  clients were disconnected, so a graceful restart loses nothing.

At start, the four loaders give the rows back as ``kushi.hooks.records``
(the broker restores them, see ``kushi.worker.restore``). Sessions that
expired while the broker was down are deleted, not returned; a retained
message comes back with what is left of its Message Expiry Interval.

Several worker processes share one file: it is opened in ``init`` (which
runs in each worker, after the fork) in WAL mode with a busy timeout, so
readers never wait and writers wait for each other instead of failing.
Each session is written by the worker holding it. Every worker writes the
retained messages it applies (the same rows: the writes are idempotent).

Schema (``PRAGMA user_version`` = ``SCHEMA_VERSION``); times are wall-clock
seconds; messages and wills are MQTT 5 PUBLISH bytes
(``records.message_to_bytes``):

    clients(client_id PK, protocol_version, username, expiry_interval, will, will_delay,
            will_due_at, disconnected_at, inbound_qos2 (JSON list), last_packet_id)
    subscriptions(client_id, filter, qos, no_local, retain_as_published, retain_handling,
                  identifier; PK client_id, filter)
    messages(client_id, position, state, packet_id, sent, stored_at, message,
             shared (JSON [group, filter] or NULL); PK client_id, position)
    retained(topic PK, message, stored_at)
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError
from ..protocol.packets import Connect, Publish, Subscribe, Unsubscribe
from .base import ClientInfo, Hook
from .records import (
    SessionRecords, StoredClient, StoredMessage, StoredSubscription, message_from_bytes,
    message_to_bytes, publish_as_will, will_as_publish,
)

log = logging.getLogger("kushi.storage")

SCHEMA_VERSION = 2   # 2: messages.shared
DEFAULT_AUTOSAVE_INTERVAL = 1.0
BUSY_TIMEOUT_MS = 5000
OPEN_RETRY_SECONDS = 0.02
NEVER = 0xFFFFFFFF

SCHEMA = """
CREATE TABLE IF NOT EXISTS clients (
    client_id TEXT PRIMARY KEY, protocol_version INTEGER NOT NULL, username TEXT,
    expiry_interval INTEGER NOT NULL, will BLOB, will_delay INTEGER NOT NULL,
    will_due_at REAL, disconnected_at REAL, inbound_qos2 TEXT NOT NULL,
    last_packet_id INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS subscriptions (
    client_id TEXT NOT NULL, filter TEXT NOT NULL, qos INTEGER NOT NULL, no_local INTEGER NOT NULL,
    retain_as_published INTEGER NOT NULL, retain_handling INTEGER NOT NULL, identifier INTEGER,
    PRIMARY KEY (client_id, filter));
CREATE TABLE IF NOT EXISTS messages (
    client_id TEXT NOT NULL, position INTEGER NOT NULL, state TEXT NOT NULL,
    packet_id INTEGER NOT NULL, sent INTEGER NOT NULL, stored_at REAL NOT NULL, message BLOB NOT NULL,
    shared TEXT, PRIMARY KEY (client_id, position));
CREATE TABLE IF NOT EXISTS retained (
    topic TEXT PRIMARY KEY, message BLOB NOT NULL, stored_at REAL NOT NULL);
"""


class SqliteStorage(Hook):
    """Keeps persistent sessions and retained messages in the SQLite file ``path``."""

    id = "storage"

    def __init__(self, path: str | Path, autosave_interval: float = DEFAULT_AUTOSAVE_INTERVAL) -> None:
        if autosave_interval <= 0:
            raise ConfigurationError(f"storage autosave_interval must be > 0, got {autosave_interval!r}")
        self.path = str(path)
        self.autosave_interval = autosave_interval
        self.db: sqlite3.Connection | None = None
        self.server: Any = None
        self._saved: dict[str, Any] = {}     # client id -> message state version last written
        self._autosave: asyncio.Task[None] | None = None

    # ---- lifecycle ----------------------------------------------------------------------
    def init(self, config: Any) -> None:
        """Open (or create) the file; runs in each worker process, after the fork.

        The workers open the file at the same moment. Switching a new file to WAL
        needs it to itself, and SQLite answers "database is locked" at once, without
        the busy timeout, when another worker holds it meanwhile: so the opening is
        tried again for up to the busy timeout before it counts as a failure.
        """
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                self.db = _open(self.path)
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise ConfigurationError(f"cannot open the storage file {self.path}: {exc}") from exc
                time.sleep(OPEN_RETRY_SECONDS)   # another worker is setting the file up: try again
            except sqlite3.Error as exc:
                raise ConfigurationError(f"cannot open the storage file {self.path}: {exc}") from exc

    def on_started(self, server: Any) -> None:
        """Keep the server (its sessions are read from it) and start the autosave."""
        self.server = server
        self._autosave = asyncio.get_running_loop().create_task(self._autosave_loop())

    def stop(self) -> None:
        """The server stops: save every persistent session, then close the file."""
        if self._autosave is not None:
            self._autosave.cancel()
            self._autosave = None
        if self.db is None:
            return
        try:
            if self.server is not None:
                self.save_messages(force=True)
        finally:
            self.db.close()
            self.db = None

    async def _autosave_loop(self) -> None:
        while True:
            await asyncio.sleep(self.autosave_interval)
            try:
                self.save_messages()
            except sqlite3.Error:
                log.exception("storage autosave failed")

    def save_messages(self, force: bool = False) -> int:
        """Write the messages (and client row) of each persistent session whose messages
        changed since the last save (all of them with ``force``); the number written."""
        versions = self.server.message_state_versions()
        changed = [client_id for client_id, version in versions.items()
                   if force or self._saved.get(client_id) != version]
        for client_id in list(self._saved):
            if client_id not in versions:   # ended (rows deleted then) or moved to another worker
                del self._saved[client_id]
        if not changed:
            return 0
        with _transaction(self.db):
            for client_id in changed:
                records = self.server.session_records(client_id)
                if records is not None:
                    self._write_client(records.client)
                    self._write_messages(client_id, records.messages)
                    self._saved[client_id] = versions[client_id]
        return len(changed)

    # ---- session events ---------------------------------------------------------------
    def on_session_established(self, client: ClientInfo, packet: Connect) -> None:
        """A new or resumed session: written whole if persistent; a clean start ends the old one."""
        records = self._records(client.client_id, messages=True)
        with _transaction(self.db):
            if packet.clean_start or records is None or not records.client.expiry_interval:
                self._delete_session(client.client_id)
            if records is not None and records.client.expiry_interval:
                self._write_session(records)

    def on_subscribed(self, client: ClientInfo, packet: Subscribe, reason_codes: Any) -> None:
        self._write_subscriptions(client.client_id)

    def on_unsubscribed(self, client: ClientInfo, packet: Unsubscribe) -> None:
        self._write_subscriptions(client.client_id)

    def on_disconnect(self, client: ClientInfo, error: BaseException | None, expire: bool) -> None:
        """Expire: the session ends and its rows go. Otherwise the client row notes the disconnect."""
        client_id = client.client_id
        if expire:
            with _transaction(self.db):
                self._delete_session(client_id)
            return
        records = self._records(client_id, messages=False)
        if records is not None and records.client.expiry_interval:
            with _transaction(self.db):
                self._write_client(records.client)

    def on_client_expired(self, client_id: str) -> None:
        with _transaction(self.db):
            self._delete_session(client_id)

    # ---- retained events --------------------------------------------------------------
    def on_retain_message(self, client: ClientInfo, packet: Publish, result: int) -> None:
        """Stored (1) or cleared (-1) on any worker: the row follows."""
        if packet.topic.startswith("$SYS") or self.db is None:
            return
        with _transaction(self.db):
            if result > 0:
                self.db.execute("INSERT OR REPLACE INTO retained VALUES (?, ?, ?)",
                                (packet.topic, message_to_bytes(packet), time.time()))
            else:
                self.db.execute("DELETE FROM retained WHERE topic = ?", (packet.topic,))

    def on_retained_expired(self, topic: str) -> None:
        if self.db is not None:
            with _transaction(self.db):
                self.db.execute("DELETE FROM retained WHERE topic = ?", (topic,))

    # ---- loaders ---------------------------------------------------------------------
    def stored_clients(self) -> list[StoredClient]:
        """The persistent sessions; those expired while the broker was down are deleted."""
        now = time.time()
        with _transaction(self.db):
            expired = [row[0] for row in self.db.execute(
                "SELECT client_id FROM clients WHERE disconnected_at IS NOT NULL AND expiry_interval < ?"
                " AND disconnected_at + expiry_interval <= ?", (NEVER, now))]
            for client_id in expired:
                self._delete_session(client_id)
        return self._clients("")

    def stored_subscriptions(self) -> list[StoredSubscription]:
        return self._subscriptions("")

    def stored_inflight(self) -> list[StoredMessage]:
        """Every session's messages, in flight first, then queued, in their order."""
        return self._messages("")

    def stored_session(self, client_id: str) -> SessionRecords | None:
        """One client's stored session, or None (not a loader event: ``Server`` asks the hooks
        that have it when a client with clean start 0 finds no session on any worker)."""
        where = ("WHERE client_id = ?", (client_id,))
        clients = self._clients(*where)
        if not clients:
            return None
        return SessionRecords(clients[0], tuple(self._subscriptions(*where)), tuple(self._messages(*where)))

    def write_session(self, records: SessionRecords) -> None:
        """Write one session whole (its client row, subscriptions and messages), replacing what was kept."""
        with _transaction(self.db):
            self._write_session(records)

    def _clients(self, where: str, args: tuple[Any, ...] = ()) -> list[StoredClient]:
        return [
            StoredClient(client_id, version, username, expiry,
                         None if will is None else publish_as_will(message_from_bytes(will), will_delay),
                         will_delay, will_due_at, disconnected_at, tuple(json.loads(inbound)), last_id)
            for (client_id, version, username, expiry, will, will_delay, will_due_at, disconnected_at,
                 inbound, last_id) in self.db.execute(f"SELECT * FROM clients {where}", args)
        ]

    def _subscriptions(self, where: str, args: tuple[Any, ...] = ()) -> list[StoredSubscription]:
        return [
            StoredSubscription(client_id, filter, qos, bool(no_local), bool(rap), handling, identifier)
            for client_id, filter, qos, no_local, rap, handling, identifier
            in self.db.execute(f"SELECT * FROM subscriptions {where}", args)
        ]

    def _messages(self, where: str, args: tuple[Any, ...] = ()) -> list[StoredMessage]:
        return [
            StoredMessage(client_id, message_from_bytes(body), stored_at, state, packet_id, bool(sent),
                          None if shared is None else tuple(json.loads(shared)))
            for client_id, state, packet_id, sent, stored_at, body, shared in self.db.execute(
                "SELECT client_id, state, packet_id, sent, stored_at, message, shared FROM messages"
                f" {where} ORDER BY client_id, position", args)
        ]

    def stored_retained(self) -> list[Publish]:
        """Retained messages, each with what is left of its expiry; expired ones are deleted."""
        now = time.time()
        kept: list[Publish] = []
        expired: list[str] = []
        for topic, body, stored_at in self.db.execute("SELECT topic, message, stored_at FROM retained"):
            message = replace(message_from_bytes(body), retain=True)
            interval = message.properties.message_expiry_interval
            if interval is not None:
                remaining = interval - int(now - stored_at)
                if remaining <= 0:
                    expired.append(topic)
                    continue
                message = replace(message, properties=replace(
                    message.properties, message_expiry_interval=remaining))
            kept.append(message)
        if expired:
            with _transaction(self.db):
                self.db.executemany("DELETE FROM retained WHERE topic = ?", [(t,) for t in expired])
        return kept

    # ---- writing ------------------------------------------------------------------------
    def _records(self, client_id: str, messages: bool) -> SessionRecords | None:
        if self.server is None or self.db is None:
            return None
        return self.server.session_records(client_id, messages)

    def _write_subscriptions(self, client_id: str) -> None:
        records = self._records(client_id, messages=False)
        if records is None or not records.client.expiry_interval:
            return
        with _transaction(self.db):
            self.db.execute("DELETE FROM subscriptions WHERE client_id = ?", (client_id,))
            self._insert_subscriptions(records.subscriptions)

    def _write_session(self, records: SessionRecords) -> None:
        self._write_client(records.client)
        self.db.execute("DELETE FROM subscriptions WHERE client_id = ?", (records.client.client_id,))
        self._insert_subscriptions(records.subscriptions)
        self._write_messages(records.client.client_id, records.messages)

    def _write_client(self, client: StoredClient) -> None:
        will = None if client.will is None else message_to_bytes(will_as_publish(client.will))
        self.db.execute(
            "INSERT OR REPLACE INTO clients VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (client.client_id, client.protocol_version, client.username, client.expiry_interval, will,
             client.will_delay, client.will_due_at, client.disconnected_at,
             json.dumps(list(client.inbound_qos2)), client.last_packet_id))

    def _insert_subscriptions(self, subscriptions: Iterable[StoredSubscription]) -> None:
        self.db.executemany(
            "INSERT OR REPLACE INTO subscriptions VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(s.client_id, s.filter, s.qos, int(s.no_local), int(s.retain_as_published),
              s.retain_handling, s.identifier) for s in subscriptions])

    def _write_messages(self, client_id: str, messages: Iterable[StoredMessage]) -> None:
        self.db.execute("DELETE FROM messages WHERE client_id = ?", (client_id,))
        self.db.executemany(
            "INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(client_id, position, m.state, m.packet_id, int(m.sent), m.stored_at,
              message_to_bytes(m.message), None if m.shared is None else json.dumps(m.shared))
             for position, m in enumerate(messages)])

    def _delete_session(self, client_id: str) -> None:
        self._saved.pop(client_id, None)
        for table in ("clients", "subscriptions", "messages"):
            self.db.execute(f"DELETE FROM {table} WHERE client_id = ?", (client_id,))


def _open(path: str) -> sqlite3.Connection:
    """A connection in WAL mode with the schema in place; closed again if a step fails."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        with _transaction(db):
            _create_schema(db)
    except BaseException:
        db.close()
        raise
    return db


def _create_schema(db: sqlite3.Connection) -> None:
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version not in (0, 1, SCHEMA_VERSION):
        raise sqlite3.DatabaseError(f"schema version {version}, this kushi knows {SCHEMA_VERSION}")
    for statement in SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)
    if version == 1:   # a file of the first schema: messages had no shared column
        db.execute("ALTER TABLE messages ADD COLUMN shared TEXT")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


class _transaction:
    """``with _transaction(db):`` one BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error); nestable."""

    def __init__(self, db: sqlite3.Connection | None) -> None:
        self.db = db
        self.outer = False

    def __enter__(self) -> None:
        if self.db is None:
            raise sqlite3.ProgrammingError("the storage file is not open (init() not called, or stopped)")
        self.outer = not self.db.in_transaction
        if self.outer:
            self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: Any, error: Any, traceback: Any) -> None:
        if not self.outer:
            return
        self.db.execute("COMMIT" if kind is None else "ROLLBACK")
