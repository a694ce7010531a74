"""The configuration of ``kushi serve``: a YAML file turned into Options, listeners and auth files.

A file has up to six top-level keys, every one optional (see
``docs/kushi.example.yaml``)::

    options:          # any fields of kushi.Options; the ones left out keep their defaults
      max_clients: 10000
    listeners:        # replaces the default listeners (tcp :1883, ws :1882)
      - {type: tcp, address: ":1883"}
      - {type: ws, address: ":1882", path: /mqtt}
      - {type: tls, address: ":8883", certfile: server.crt, keyfile: server.key}
    http: ":8080"     # metrics and health; null turns it off
    auth:
      password_file: /etc/mosquitto/passwd
      acl_file: /etc/mosquitto/acl
      ledger: ledger.yaml
    storage:          # persistent sessions and retained messages (off when left out)
      path: /var/lib/kushi/kushi.db
      autosave_interval: 1.0
    log_level: info

A partial ``options`` block never zeroes the rest: each field left out keeps
the default of the ``Options`` dataclass. An unknown key anywhere, or a value
of the wrong type, raises ``ConfigurationError`` naming the key and what is
allowed, so a typo fails loudly at start instead of being ignored.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from ..errors import ConfigurationError
from ..worker.listeners import TCP, TLS, WSS, Unix, WebSocket, parse_address
from ..worker.options import Options
from .logging import LEVELS

ListenerConfig = TCP | WebSocket | TLS | WSS | Unix

#: the ``type`` of a listener entry (``tcp``, ``ws``, ...) -> its config class; also the word used in logs
LISTENER_KINDS: dict[str, type] = {cls.kind: cls for cls in (TCP, WebSocket, TLS, WSS, Unix)}
DEFAULT_TCP = ":1883"
DEFAULT_WS = ":1882"
DEFAULT_HTTP = ":8080"
TLS_FILES = frozenset({"certfile", "keyfile", "cafile"})


def listener_kind(listener: ListenerConfig) -> str:
    """The short name of a listener config's kind: ``tcp``, ``ws``, ``tls``, ``wss`` or ``unix``."""
    return listener.kind


def default_listeners() -> list[ListenerConfig]:
    """What ``kushi serve`` listens on when neither the file nor the flags say: TCP :1883, WebSocket :1882."""
    return [TCP("tcp0", DEFAULT_TCP), WebSocket("ws0", DEFAULT_WS)]


@dataclass(frozen=True)
class AuthFiles:
    """Paths of the authentication files; none set means every client is allowed."""

    password_file: str | None = None
    acl_file: str | None = None
    ledger: str | None = None
    allow_anonymous: bool = False     # with a password file: let in clients without a username

    @property
    def configured(self) -> bool:
        return any((self.password_file, self.acl_file, self.ledger))


@dataclass(frozen=True)
class StorageConfig:
    """Where ``SqliteStorage`` keeps sessions and retained messages; no path: no storage."""

    path: str | None = None
    autosave_interval: float = 1.0    # seconds between two saves of the sessions' messages

    @property
    def configured(self) -> bool:
        return self.path is not None


def default_workers() -> int:
    """``kushi serve``'s number of worker processes when neither flag nor file sets it: one per CPU."""
    return os.cpu_count() or 1


def serve_options(**values: Any) -> Options:
    """Options for ``kushi serve``: ``workers`` defaults to the number of CPUs (``Options`` says 1,
    which is right for an embedded ``kushi.Server``: one process unless asked)."""
    values.setdefault("workers", default_workers())
    return Options(**values)


@dataclass
class ServeConfig:
    """Everything ``kushi serve`` needs to start one broker."""

    options: Options = field(default_factory=serve_options)
    listeners: list[ListenerConfig] = field(default_factory=default_listeners)
    http: str | None = DEFAULT_HTTP
    auth: AuthFiles = field(default_factory=AuthFiles)
    storage: StorageConfig = field(default_factory=StorageConfig)
    log_level: str = "info"


def reload_changes(running: ServeConfig, new: ServeConfig) -> tuple[Options, str, list[str]]:
    """What a SIGHUP reload hands the supervisor: the new options, the log level, and the names
    of the other parts that changed but need new sockets or processes (a restart).

    The auth files are not in the list: the hooks re-read the same paths on SIGHUP. A changed
    path is a restart, as the hooks were built with the old one.
    """
    waiting = [name for name in ("listeners", "http", "storage")
               if getattr(running, name) != getattr(new, name)]
    waiting += [f"auth.{name}" for name in ("password_file", "acl_file", "ledger", "allow_anonymous")
                if getattr(running.auth, name) != getattr(new.auth, name)]
    return new.options, new.log_level, waiting


def load_config_file(path: str | Path) -> ServeConfig:
    """Read a YAML config file; raises ConfigurationError if it is unreadable or wrong."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"config file {path} is not valid YAML: {exc}") from exc
    return parse_config(data or {}, source=str(path), base_dir=Path(path).parent)


def parse_config(data: Any, source: str = "config", base_dir: Path | None = None) -> ServeConfig:
    """A parsed YAML document -> ServeConfig; keys left out keep their defaults.

    Relative paths of files to read (auth files, TLS certificate, key and CA)
    are taken from ``base_dir``, the config file's directory, so a file works
    the same whatever directory kushi is started from.
    """
    data = _mapping(data, source)
    _reject_unknown(data, {f.name for f in dataclasses.fields(ServeConfig)}, source)
    config = ServeConfig()
    if "options" in data:
        config.options = options_from_mapping(data["options"] or {}, f"{source}: options")
    if "listeners" in data:
        entries = data["listeners"] or []
        if not isinstance(entries, list):
            raise ConfigurationError(f"{source}: listeners must be a list")
        config.listeners = [
            listener_from_mapping(entry, index, f"{source}: listeners[{index}]", base_dir)
            for index, entry in enumerate(entries)
        ]
    if "http" in data:
        config.http = data["http"] or None
        if config.http is not None:
            parse_address(str(config.http))
            config.http = str(config.http)
    if "auth" in data:
        auth = _mapping(data["auth"] or {}, f"{source}: auth")
        _reject_unknown(auth, {f.name for f in dataclasses.fields(AuthFiles)}, f"{source}: auth")
        config.auth = AuthFiles(
            password_file=_file_path(auth.get("password_file"), base_dir),
            acl_file=_file_path(auth.get("acl_file"), base_dir),
            ledger=_file_path(auth.get("ledger"), base_dir),
            allow_anonymous=_typed(auth.get("allow_anonymous", False), bool, f"{source}: auth.allow_anonymous"),
        )
    if "storage" in data:
        config.storage = storage_from_mapping(data["storage"] or {}, f"{source}: storage", base_dir)
    if "log_level" in data:
        config.log_level = str(data["log_level"]).lower()
        if config.log_level not in LEVELS:
            raise ConfigurationError(f"{source}: log_level must be one of {', '.join(LEVELS)}, "
                                     f"got {data['log_level']!r}")
    return config


def options_from_mapping(data: Any, source: str = "options") -> Options:
    """A mapping of some Options fields -> Options; the others keep ``serve_options``' defaults."""
    data = _mapping(data, source)
    hints = typing.get_type_hints(Options)
    _reject_unknown(data, set(hints), source)
    values = {name: _typed(value, hints[name], f"{source}.{name}") for name, value in data.items()}
    return serve_options(**values)


def storage_from_mapping(data: Any, source: str = "storage", base_dir: Path | None = None) -> StorageConfig:
    """``{path: kushi.db, autosave_interval: 1}`` -> StorageConfig (a relative path from ``base_dir``)."""
    data = _mapping(data, source)
    _reject_unknown(data, {f.name for f in dataclasses.fields(StorageConfig)}, source)
    interval = _typed(data.get("autosave_interval", StorageConfig.autosave_interval), float,
                      f"{source}.autosave_interval")
    if interval <= 0:
        raise ConfigurationError(f"{source}.autosave_interval must be > 0, got {interval!r}")
    return StorageConfig(_file_path(data.get("path"), base_dir), interval)


def listener_from_mapping(entry: Any, index: int, source: str, base_dir: Path | None = None) -> ListenerConfig:
    """``{type: tcp, address: ":1883"}`` -> ``TCP("tcp<index>", ":1883")``."""
    entry = dict(_mapping(entry, source))
    kind = entry.pop("type", None)
    if kind not in LISTENER_KINDS:
        raise ConfigurationError(
            f"{source}: type must be one of {', '.join(LISTENER_KINDS)}, got {kind!r}")
    cls = LISTENER_KINDS[kind]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    _reject_unknown(entry, set(fields), source)
    entry.setdefault("id", f"{kind}{index}")
    missing = [name for name, f in fields.items()
               if name not in entry and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigurationError(f"{source}: a {kind} listener needs {', '.join(missing)}")
    if "address" in entry:
        entry["address"] = str(entry["address"])
        parse_address(entry["address"])
    for name in TLS_FILES & entry.keys():
        entry[name] = _file_path(entry[name], base_dir)
    return cls(**entry)


def _file_path(value: Any, base_dir: Path | None) -> str | None:
    """A path from the file, relative ones taken from ``base_dir``; empty -> None."""
    if not value:
        return None
    path = Path(str(value)).expanduser()
    return str(base_dir / path if base_dir is not None and not path.is_absolute() else path)


def _mapping(data: Any, source: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise ConfigurationError(f"{source}: expected a mapping of keys to values, got {data!r}")
    return data


def _reject_unknown(data: Mapping[str, Any], allowed: set[str], source: str) -> None:
    unknown = sorted(str(key) for key in data if key not in allowed)
    if unknown:
        raise ConfigurationError(
            f"{source}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
            f"allowed: {', '.join(sorted(allowed))}")


def _typed(value: Any, hint: Any, source: str) -> Any:
    """Check ``value`` against a field's type hint (bool, int, float, str, X | None)."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        for option in typing.get_args(hint):
            try:
                return _typed(value, option, source)
            except ConfigurationError:
                continue
        raise ConfigurationError(f"{source}: expected {hint}, got {value!r}")
    if hint is type(None) and value is None:
        return None
    if hint is bool and isinstance(value, bool):
        return value
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is str and isinstance(value, str):
        return value
    if hint in (type(None), bool, int, float, str):
        name = getattr(hint, "__name__", str(hint))
        raise ConfigurationError(f"{source}: expected {name}, got {value!r}")
    return value
