"""The ``kushi`` command: ``kushi serve`` runs a broker from flags and/or a YAML config file.

    kushi serve                                   # TCP :1883, WebSocket :1882, metrics :8080
    kushi serve --tcp 127.0.0.1:0 --ws none --http 127.0.0.1:0
    kushi serve --config kushi.yaml --log-level debug
    kushi serve --password-file /etc/mosquitto/passwd --acl-file /etc/mosquitto/acl

Flags override the file: a listener flag (``--tcp``, ``--ws``, ...) replaces
the listeners of that kind from the file or the defaults, ``--ws none`` or
``--no-ws`` removes them. Each open listener is logged with its real bound
address, ``kushi: listening tcp 127.0.0.1:PORT``, so a ``:0`` port can be found.

Signals: SIGINT and SIGTERM stop gracefully (listeners close first, v5
clients get DISCONNECT 0x8B "server shutting down"); SIGHUP reloads the
password, ACL and ledger files in place without dropping a connection.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from dataclasses import replace
from typing import Any, Sequence

from ..errors import ConfigurationError
from ..hooks.base import Hook
from . import bench
from .config import (
    DEFAULT_HTTP, LISTENER_KINDS, AuthFiles, ListenerConfig, ServeConfig, listener_kind,
    load_config_file, parse_address,
)
from .logging import LEVELS, configure_logging
from .metrics import MetricsServer
from .sys_topics import SysTopics, kushi_version

log = logging.getLogger("kushi")

EXIT_OK = 0
EXIT_FAILED = 1        # the broker could not start or stopped on an error
EXIT_USAGE = 2         # bad flags or configuration (argparse uses 2 as well)
NONE = "none"          # "--ws none" turns a listener kind off


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

    serve.add_argument("--workers", type=_positive_int, metavar="N",
                       help="worker processes (default 1; N > 1 needs the multi-process supervisor)")
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
    try:
        config = load_config_file(args.config) if args.config else ServeConfig()
        config = apply_flags(config, args)
    except ConfigurationError as exc:
        print(f"kushi: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(config.log_level, worker_id="sup" if config.options.workers > 1 else 0)
    try:
        return run_workers(config) if config.options.workers > 1 else run(config)
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
                       log_level=args.log_level or config.log_level)


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


def run_workers(config: ServeConfig) -> int:
    """Run the broker as ``config.options.workers`` processes under the supervisor.

    The HTTP listener (/metrics, /healthz) and $SYS run in the supervisor
    (``SupervisorServices``) with the whole broker's figures. Running one
    worker when N were asked for would hide a wrong deployment, so without
    ``kushi.cluster.supervisor.serve`` this is an error.
    """
    try:
        from ..cluster import supervisor
    except ImportError:
        supervisor = None
    serve = getattr(supervisor, "serve", None)
    if serve is None:
        log.error("--workers %d needs the multi-process supervisor (kushi.cluster), which is "
                  "not built yet; run with --workers 1", config.options.workers)
        return EXIT_USAGE
    services = SupervisorServices(config)
    return int(serve(config, build_auth_hooks(config.auth), on_ready=[services.start],
                     on_stop=[services.stop]))


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
        """``on_ready`` of the supervisor: every worker listens."""
        options = self.config.options
        if self.config.http:
            metrics = MetricsServer(self.config.http, supervisor.stats, supervisor.worker_stats)
            try:
                await metrics.start()
            except OSError as exc:
                log.error("cannot open the HTTP listener %s: %s", self.config.http, exc)
                supervisor.exit_code = EXIT_FAILED
                supervisor.stop(signal.SIGTERM)
                return
            self.metrics = metrics
            log_http_listener(metrics)
        if options.inline_client:
            self.sys_topics = SysTopics(supervisor, options.sys_interval)
            self.sys_topics.start()

    async def stop(self) -> None:
        """``on_stop`` of the supervisor."""
        if self.sys_topics is not None:
            await self.sys_topics.stop()
        if self.metrics is not None:
            await self.metrics.close()


def log_http_listener(metrics: MetricsServer) -> None:
    log.info("listening http %s", _host_port(metrics.host, metrics.port))


def run(config: ServeConfig) -> int:
    """Run one broker process until SIGINT/SIGTERM; returns the exit code."""
    try:
        import uvloop
        loop_factory: Any = uvloop.new_event_loop
    except ImportError:  # uvloop is not built for every platform; asyncio's loop works too
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(_serve(config))


async def _serve(config: ServeConfig) -> int:
    # built inside the loop: the server and its hooks may bind to the running loop
    return await Service(config).run()


def build_auth_hooks(auth: AuthFiles) -> list[Hook]:
    """The hooks for the configured auth files; allow-all (with a warning) when there are none."""
    if not auth.configured:
        from ..hooks.allow_all import AllowAllHook
        log.warning("no authentication configured: every client is allowed")
        return [AllowAllHook()]
    hooks: list[Hook] = []
    if auth.password_file or auth.acl_file:
        from ..hooks.mosquitto import MosquittoHook
        hooks.append(MosquittoHook(password_file=auth.password_file, acl_file=auth.acl_file,
                                   allow_anonymous=auth.allow_anonymous))
    if auth.ledger:
        from ..hooks.ledger import LedgerHook
        hooks.append(LedgerHook(auth.ledger))
    return hooks


class Service:
    """One broker process as ``kushi serve`` runs it: server, auth, metrics, $SYS and signals."""

    def __init__(self, config: ServeConfig) -> None:
        from ..worker.server import Server

        self.config = config
        self.server = Server(config.options)
        self.auth_hooks = build_auth_hooks(config.auth)
        for hook in self.auth_hooks:
            self.server.add_hook(hook)
        for listener in config.listeners:
            self.server.add_listener(listener)
        self.metrics = MetricsServer(config.http, self.server.stats) if config.http else None
        self.sys_topics = SysTopics(self.server, config.options.sys_interval)
        self.stop_requested = asyncio.Event()

    async def run(self) -> int:
        """Start, serve until a stop signal, stop gracefully."""
        # Signals first: a stop requested while the listeners open is honoured once they are
        # open, and a signal right after the "listening" lines never meets Python's default.
        self.install_signal_handlers()
        try:
            await self.server.start()
            if self.metrics is not None:
                await self.metrics.start()
        except OSError as exc:
            log.error("cannot open a listener: %s", exc)
            await self.server.close()
            return EXIT_FAILED
        self.log_listeners()
        if self.config.options.inline_client:
            self.sys_topics.start()
        serving = asyncio.ensure_future(self.server.serve_forever())
        stopping = asyncio.ensure_future(self.stop_requested.wait())
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        failed = serving.done() and not serving.cancelled() and serving.exception() is not None
        if failed:
            log.error("the broker stopped on an error", exc_info=serving.exception())
        await self.stop()
        for task in (serving, stopping):
            task.cancel()
        await asyncio.gather(serving, stopping, return_exceptions=True)
        return EXIT_FAILED if failed else EXIT_OK

    async def stop(self) -> None:
        log.info("stopping")
        await self.sys_topics.stop()
        if self.metrics is not None:
            await self.metrics.close()
        await self.server.close()
        log.info("stopped")

    def log_listeners(self) -> None:
        """``kushi: listening KIND HOST:PORT`` per listener, with the real bound address."""
        for handle in self.server.listeners.values():
            kind = listener_kind(handle.config)
            where = handle.config.path if kind == "unix" else _host_port(handle.host, handle.port)
            log.info("listening %s %s", kind, where)
        if self.metrics is not None:
            log_http_listener(self.metrics)

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self.request_stop, signum)
        loop.add_signal_handler(signal.SIGHUP, self.reload)

    def request_stop(self, signum: int) -> None:
        log.info("%s: shutting down gracefully", signal.Signals(signum).name)
        self.stop_requested.set()

    def reload(self) -> None:
        """SIGHUP: re-read the auth files in place; connected clients stay connected.

        A hook that cannot read its file keeps its old rules and logs why
        (it never opens access), so a bad edit does not take the broker down.
        """
        for hook in self.auth_hooks:
            reload = getattr(hook, "reload", None)
            if reload is None:
                continue
            name = getattr(hook, "id", type(hook).__name__)
            try:
                reloaded = reload() is not False
            except Exception:
                log.exception("SIGHUP: reloading %s failed", name)
                reloaded = False
            if reloaded:
                log.info("SIGHUP: reloaded %s", name)
            else:
                log.error("SIGHUP: %s kept its previous rules (see the error above)", name)


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


if __name__ == "__main__":
    sys.exit(main())
