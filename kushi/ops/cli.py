"""The ``kushi`` command: ``kushi serve`` runs a broker from flags and/or a YAML config file.

    kushi serve                                   # TCP :1883, WebSocket :1882, metrics :8080
    kushi serve --tcp 127.0.0.1:0 --ws none --http 127.0.0.1:0
    kushi serve --config kushi.yaml --log-level debug
    kushi serve --password-file /etc/mosquitto/passwd --acl-file /etc/mosquitto/acl
    kushi serve --storage /var/lib/kushi/kushi.db     # sessions and retained survive restarts

Flags override the file: a listener flag (``--tcp``, ``--ws``, ...) replaces
the listeners of that kind from the file or the defaults, ``--ws none`` or
``--no-ws`` removes them. Each open listener is logged with its real bound
address, ``kushi: listening tcp 127.0.0.1:PORT``, so a ``:0`` port can be found.

Every ``kushi serve`` runs the supervisor (``kushi.cluster.supervisor``),
which forks ``--workers N`` worker processes (default: one per CPU; one
worker takes the same path) and serves /metrics, /healthz and $SYS itself.

Signals: SIGTERM stops gracefully (listeners close first, v5 clients get
DISCONNECT 0x8B "server shutting down", with ``--storage`` every session is
saved); SIGINT and SIGQUIT stop at once;
SIGHUP reads the config file (and the flags) again and changes the options in
place in every worker, and reloads the password, ACL and ledger files, without
dropping a connection; SIGTTIN/SIGTTOU add or retire a worker.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import signal
import sys
import time
from dataclasses import replace
from typing import Any, Callable, Sequence

from ..errors import ConfigurationError
from ..hooks.base import Hook
from . import bench
from .config import (
    DEFAULT_HTTP, LISTENER_KINDS, AuthFiles, ListenerConfig, ServeConfig, StorageConfig,
    listener_kind, load_config_file, parse_address, reload_changes,
)
from .logging import LEVELS, configure_logging
from .metrics import MetricsServer
from .sys_topics import SysTopics, kushi_version

log = logging.getLogger("kushi")

EXIT_OK = 0
EXIT_FAILED = 1        # the broker could not start or stopped on an error
EXIT_USAGE = 2         # bad flags or configuration (argparse uses 2 as well)
NONE = "none"          # "--ws none" turns a listener kind off
BARRIER_TIMEOUT = 10.0 # seconds for every worker to have the first $SYS messages


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``kushi`` command and its subcommands."""
    version = f"kushi {kushi_version()}"
    parser = argparse.ArgumentParser(prog="kushi", description="kushi, an MQTT 3.1/3.1.1/5.0 broker.")
    parser.add_argument("--version", action="version", version=version)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser("serve", help="run the broker",
                                description="Run the broker. Flags override the config file.")
    serve.add_argument("--version", action="version", version=version)
    serve.add_argument("--config", metavar="FILE", help="YAML config file (see docs/kushi.example.yaml)")

    listeners = serve.add_argument_group("listeners (repeatable; ADDR is HOST:PORT or :PORT, port 0 = any)")
    listeners.add_argument("--tcp", action="append", metavar="ADDR",
                           help="MQTT over TCP (default :1883; 'none' for no TCP listener)")
    listeners.add_argument("--ws", action="append", metavar="ADDR",
                           help="MQTT over WebSocket, any path (default :1882; 'none' to disable)")
    listeners.add_argument("--tls", action="append", metavar="ADDR", help="MQTT over TLS (needs --cert, --key)")
    listeners.add_argument("--wss", action="append", metavar="ADDR",
                           help="MQTT over secure WebSocket (needs --cert, --key)")
    listeners.add_argument("--unix", action="append", metavar="PATH", help="MQTT over a Unix socket")
    listeners.add_argument("--no-tcp", action="store_true", help="no TCP listener")
    listeners.add_argument("--no-ws", action="store_true", help="no WebSocket listener")
    listeners.add_argument("--cert", metavar="FILE", help="certificate (PEM) for --tls and --wss")
    listeners.add_argument("--key", metavar="FILE", help="private key (PEM) for --tls and --wss")
    listeners.add_argument("--cafile", metavar="FILE",
                           help="CA bundle: clients must present a certificate it signed")
    serve.add_argument("--http", metavar="ADDR",
                       help=f"HTTP listener for /metrics and /healthz (default {DEFAULT_HTTP}; 'none' to disable)")
    serve.add_argument("--no-http", action="store_true", help="no HTTP listener")

    auth = serve.add_argument_group("authentication (none given: every client is allowed)")
    auth.add_argument("--password-file", metavar="FILE", help="Mosquitto password file (mosquitto_passwd)")
    auth.add_argument("--acl-file", metavar="FILE", help="Mosquitto ACL file")
    auth.add_argument("--ledger", metavar="FILE", help="Mochi MQTT auth ledger (YAML or JSON)")
    auth.add_argument("--allow-anonymous", action="store_true", default=None,
                      help="with --password-file, also let in clients that give no username")

    storage = serve.add_argument_group("storage (off by default)")
    storage.add_argument("--storage", metavar="FILE",
                         help="SQLite file keeping persistent sessions and retained messages across "
                              "restarts and worker crashes ('none' to turn off the file's storage)")
    storage.add_argument("--autosave-interval", type=_positive_float, metavar="SECONDS",
                         help="seconds between two saves of the sessions' queued and in-flight "
                              "messages (default 1)")

    serve.add_argument("--workers", type=_positive_int, metavar="N",
                       help="worker processes (default: the number of CPUs)")
    serve.add_argument("--log-level", choices=LEVELS, type=str.lower, help="default info")

    bench_parser = commands.add_parser(
        "bench", help="load-test an MQTT broker (slower than mqbench: measures up to its own speed)",
        description=bench.DESCRIPTION)
    bench.add_arguments(bench_parser)
    bench_parser.set_defaults(handler=bench.main)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``kushi`` console script; returns the process exit code."""
    args = build_parser().parse_args(argv)
    if args.command == "bench":
        return args.handler(args)
    def read_config() -> ServeConfig:
        config = load_config_file(args.config) if args.config else ServeConfig()
        return apply_flags(config, args)

    try:
        config = read_config()
    except ConfigurationError as exc:
        print(f"kushi: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(config.log_level, worker_id="sup")
    try:   # SIGHUP: the file and the flags read again, compared with what runs
        return run_workers(config, reload_config=lambda: reload_changes(config, read_config()))
    except ConfigurationError as exc:   # e.g. an auth file that cannot be read
        log.error("%s", exc)
        return EXIT_USAGE


def apply_flags(config: ServeConfig, args: argparse.Namespace) -> ServeConfig:
    """The config from the file (or the defaults) with the command line's flags laid over it."""
    listeners = _listeners_from_flags(config.listeners, args)
    if not listeners:
        raise ConfigurationError("no MQTT listener left: give at least one of --tcp, --ws, --tls, --wss, --unix")
    http = config.http
    if args.http is not None:
        http = None if args.http.lower() == NONE else args.http
    if args.no_http:
        http = None
    if http is not None:
        parse_address(http)
    auth = AuthFiles(
        password_file=args.password_file or config.auth.password_file,
        acl_file=args.acl_file or config.auth.acl_file,
        ledger=args.ledger or config.auth.ledger,
        allow_anonymous=args.allow_anonymous or config.auth.allow_anonymous,
    )
    options = config.options
    if args.workers is not None:
        options = replace(options, workers=args.workers)
    return ServeConfig(options=options, listeners=listeners, http=http, auth=auth,
                       storage=_storage_from_flags(config.storage, args),
                       log_level=args.log_level or config.log_level)


def _storage_from_flags(storage: StorageConfig, args: argparse.Namespace) -> StorageConfig:
    """``--storage FILE`` (or ``none``) and ``--autosave-interval`` over the file's ``storage``."""
    if args.storage is not None:
        storage = replace(storage, path=None if args.storage.lower() == NONE else args.storage)
    if args.autosave_interval is not None:
        if not storage.configured:
            raise ConfigurationError("--autosave-interval needs --storage FILE (or storage.path)")
        storage = replace(storage, autosave_interval=args.autosave_interval)
    return storage


def _listeners_from_flags(current: list[ListenerConfig], args: argparse.Namespace) -> list[ListenerConfig]:
    """Replace each listener kind given on the command line; keep the others."""
    if (args.cert or args.key) and not (args.tls or args.wss):
        raise ConfigurationError("--cert and --key are for --tls and --wss listeners")
    listeners: list[ListenerConfig] = []
    for kind, cls in LISTENER_KINDS.items():
        addresses = getattr(args, kind)
        if getattr(args, f"no_{kind}", False):
            addresses = [NONE]
        if addresses is None:
            listeners.extend(listener for listener in current if listener_kind(listener) == kind)
            continue
        if any(address.lower() == NONE for address in addresses):
            if len(addresses) > 1:
                raise ConfigurationError(f"--{kind} none cannot be combined with --{kind} addresses")
            continue
        for index, address in enumerate(addresses):
            listeners.append(_listener_from_flag(kind, cls, f"{kind}{index}", address, args))
    return listeners


def _listener_from_flag(kind: str, cls: type, listener_id: str, address: str,
                        args: argparse.Namespace) -> ListenerConfig:
    if kind == "unix":
        return cls(listener_id, address)
    parse_address(address)
    if kind in ("tls", "wss"):
        if not (args.cert and args.key):
            raise ConfigurationError(f"--{kind} {address} needs --cert FILE and --key FILE")
        return cls(listener_id, address, args.cert, args.key, args.cafile)
    return cls(listener_id, address)


def run_workers(config: ServeConfig, reload_config: Callable[[], Any] | None = None) -> int:
    """Run the broker as ``config.options.workers`` processes under the supervisor; the exit code.

    One worker takes the same path as several (issue 3): the supervisor forks
    it, restarts it if it dies, and serves the HTTP listener (/metrics,
    /healthz) and $SYS (``SupervisorServices``) with the whole broker's
    figures. Without the supervisor (``kushi.cluster`` cannot be imported,
    e.g. pyzmq is missing) this is an error rather than a different broker.
    """
    try:   # import_module honours a failed import recorded in sys.modules (the tests use that)
        supervisor = importlib.import_module("kushi.cluster.supervisor")
    except ImportError as exc:
        log.error("kushi serve needs the supervisor (kushi.cluster), which cannot be loaded: %s", exc)
        return EXIT_USAGE
    services = SupervisorServices(config)
    hooks = build_auth_hooks(config.auth) + build_storage_hooks(config.storage)
    code = int(supervisor.serve(config, hooks, on_ready=[services.start], on_stop=[services.stop],
                                reload_config=reload_config))
    log.info("stopped")
    return code


class SupervisorServices:
    """Metrics and $SYS of a multi-worker broker, run in the supervisor process.

    The supervisor's ``stats()`` adds up the snapshots every worker sends each
    second, so /metrics and $SYS show the whole broker (up to a second late);
    its ``publish()`` reaches the subscribers on every worker.
    """

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.metrics: MetricsServer | None = None
        self.sys_topics: SysTopics | None = None

    async def start(self, supervisor: Any) -> None:
        """``on_ready`` of the supervisor: every worker listens; the supervisor logs the
        ``listening`` lines once this returns.

        The first $SYS tick is published and handed to every worker before,
        so a client that connects once the log says "listening" finds it.
        """
        options = self.config.options
        if options.inline_client and options.sys_interval > 0:
            self.sys_topics = SysTopics(supervisor, options.sys_interval)
            await self.sys_topics.tick(time.monotonic())
            await asyncio.wait_for(supervisor.fabric.barrier(), BARRIER_TIMEOUT)
            self.sys_topics.start()
        if self.config.http:
            metrics = MetricsServer(self.config.http, supervisor.stats, supervisor.worker_stats)
            try:
                await metrics.start()
            except OSError as exc:
                log.error("cannot open a listener: http %s: %s", self.config.http, exc)
                supervisor.exit_code = EXIT_FAILED
                supervisor.stop(signal.SIGTERM)
                return
            self.metrics = metrics
            log_http_listener(metrics)

    async def stop(self) -> None:
        """``on_stop`` of the supervisor."""
        if self.sys_topics is not None:
            await self.sys_topics.stop()
        if self.metrics is not None:
            await self.metrics.close()


def log_http_listener(metrics: MetricsServer) -> None:
    log.info("listening http %s", _host_port(metrics.host, metrics.port))


def build_auth_hooks(auth: AuthFiles) -> list[Hook]:
    """The hooks for the configured auth files; none (with a warning) when there are none.

    With no authentication hook the broker lets every client in and allows every topic,
    exactly as ``AllowAllHook`` would; leaving that hook out spares its calls on every
    CONNECT and its two ACL calls per message or run (the ACL checks are skipped when no
    hook provides them).
    """
    if not auth.configured:
        log.warning("no authentication configured: every client is allowed")
        return []
    hooks: list[Hook] = []
    if auth.password_file or auth.acl_file:
        from ..hooks.mosquitto import MosquittoHook
        hooks.append(MosquittoHook(password_file=auth.password_file, acl_file=auth.acl_file,
                                   allow_anonymous=auth.allow_anonymous))
    if auth.ledger:
        from ..hooks.ledger import LedgerHook
        hooks.append(LedgerHook(auth.ledger))
    return hooks


def build_storage_hooks(storage: StorageConfig) -> list[Hook]:
    """The storage hook when a storage file is configured (every worker opens the same file)."""
    if not storage.configured:
        return []
    from ..hooks.storage import SqliteStorage
    log.info("storage: %s (autosave every %g s)", storage.path, storage.autosave_interval)
    return [SqliteStorage(storage.path, storage.autosave_interval)]


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {value}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


if __name__ == "__main__":
    sys.exit(main())
