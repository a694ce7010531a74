"""The supervisor: one broker as N worker processes on one host.

    Supervisor(options, listeners, hooks, workers=3).run()   # blocks; returns the exit code

What it does, in order:

1. Reserves each port-0 listener's port: binds a SO_REUSEPORT socket to port
   0 to learn a free port and keeps it bound but NOT listening (a listening
   socket here would queue connections nobody accepts once its worker died;
   a bound one only holds the number). The workers bind the same port.
2. Creates the private runtime directory of the bus and joins it as the
   registrar node "sup" (it serialises the joins of the workers).
3. Forks the workers. Each creates its own event loop, ZeroMQ context and
   listeners after the fork (``kushi.cluster.worker``). At first boot no
   worker opens its listeners until every worker has synced with the bus.
4. Awaits the ``on_ready`` callbacks (metrics, $SYS), then logs
   ``listening KIND HOST:PORT`` once per listener, with the real port.
5. Watches: a worker that dies is restarted with back-off (0.1 s doubling to
   10 s; reset once a worker has run 30 s); the others drop its interest
   entries. A worker that fails at boot (a configuration error, a port in
   use...) stops the whole server with its message: no fork loop.

Signals: SIGTERM graceful (workers close listeners, v5 clients get 0x8B,
within ``grace`` seconds, then they are killed); SIGINT/SIGQUIT fast;
SIGHUP reloads the configuration (options changed in place in every worker,
see ``reload``) and the auth files (forwarded: each worker reloads its hooks); SIGTTIN adds a worker,
SIGTTOU retires the newest (its clients get 0x9C, use another server).

The supervisor is a node on the bus with its own fabric, so its inline
client (``publish``/``subscribe``) reaches every worker; it keeps the
session directory (``directory_node``) and publishes the wills of a worker
that died; ``stats()`` adds up the snapshots the workers send every second.
Workers get SIGTERM from the kernel if the supervisor itself dies.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import shutil
import signal
import socket
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

from ..errors import ConfigurationError
from ..hooks.base import Hook
from ..protocol.packets import Publish
from ..protocol.properties import NO_PROPERTIES, Properties
from ..protocol.topics import parse_shared, topic_matches, validate_topic_filter
from ..router.bus import Bus, make_runtime_dir
from ..worker.listeners import Unix, bind_socket, parse_address
from ..worker.options import Options
from ..worker.sys_info import SYS_INFO, SysInfoTicker
from .client_limit import CONNECTED_COUNTS
from .directory_node import DirectoryNode
from .fabric import BusFabric
from .worker import (
    CONTROL, EXIT_BOOT_FAILED, OPTIONS, RETIRE, STATS, SUPERVISOR, WorkerSpec, node_name, worker_main,
)

log = logging.getLogger("kushi")

ReloadConfig = Callable[[], tuple[Options, "str | None", list[str]]]
"""SIGHUP's source of truth: the options read again, the log level, and the names of the other
settings that changed and wait for a restart (listeners, storage, ...). Raises ConfigurationError."""

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2
RESTART_DELAY_FIRST = 0.1
RESTART_DELAY_MAX = 10.0
STABLE_AFTER = 30.0          # a worker up this long resets the back-off
DEFAULT_GRACE = 10.0
PR_SET_PDEATHSIG = 1
REPLICATED_STATS = frozenset({"retained"})          # the same on every worker: not summed
COUNTER_PREFIXES = ("messages_", "bytes_", "slow_", "bus_")   # totals kept when a worker exits


@dataclass
class _Worker:
    """What the supervisor knows of one worker slot."""

    worker_id: int
    pid: int = 0
    started_at: float = 0.0
    ready: bool = False
    failures: int = 0           # consecutive short-lived runs, for the back-off
    retired: bool = False
    boot_error: str | None = None
    restart: asyncio.TimerHandle | None = field(default=None, repr=False)


class InlineSink:
    """The supervisor's own subscribers: callbacks by filter (the inline client)."""

    def __init__(self) -> None:
        self.subscriptions: dict[tuple[str, int], Callable[..., Any]] = {}

    def deliver_remote(self, message: Publish) -> None:
        for (filter, _), callback in list(self.subscriptions.items()):
            if topic_matches(filter, message.topic):
                self.call(callback, message)

    @staticmethod
    def call(callback: Callable[..., Any], message: Publish) -> None:
        """Hand ``message`` to one subscription's callback (a coroutine one runs as a task)."""
        result = callback(message.topic, bytes(message.payload), message)
        if asyncio.iscoroutine(result):
            asyncio.get_running_loop().create_task(result)

    def apply_retained(self, message: Publish) -> None:
        """The supervisor's fabric keeps the retained table itself; nothing more to store."""


class Supervisor:
    """Forks, watches and restarts the workers of one broker (see the module docstring)."""

    def __init__(self, options: Options | None = None, listeners: Sequence[Any] = (),
                 hooks: Sequence[Hook | tuple[Hook, object | None]] = (), workers: int | None = None, *,
                 grace: float = DEFAULT_GRACE,
                 on_ready: Sequence[Callable[[Supervisor], Awaitable[None]]] = (),
                 on_stop: Sequence[Callable[[], Awaitable[None]]] = (),
                 reload_config: ReloadConfig | None = None) -> None:
        self.options = options if options is not None else Options()
        self.reload_config = reload_config   # SIGHUP: the configuration read again (see reload())
        self.workers_wanted = workers or self.options.workers or os.cpu_count() or 1
        # (hook, config) pairs: each worker calls add_hook(hook, config), so init(config) runs there
        self.hook_entries = [entry if isinstance(entry, tuple) else (entry, None) for entry in hooks]
        self.hooks = [hook for hook, _ in self.hook_entries]
        self.grace = grace
        self.on_ready = list(on_ready)   # awaited once every worker listens (metrics, $SYS...)
        self.on_stop = list(on_stop)     # awaited when the supervisor stops, before the bus closes
        self.listener_configs = list(listeners)
        self.listeners: dict[str, tuple[str, str, int | None]] = {}   # id -> (kind, host, port)
        self.exit_code = EXIT_OK
        self.runtime_dir = ""
        self.bus: Bus | None = None
        self.fabric: BusFabric | None = None
        self.inline = InlineSink()
        self.directory: DirectoryNode | None = None
        self._workers: dict[int, _Worker] = {}
        self._worker_stats: dict[str, dict[str, int]] = {}    # node -> its latest snapshot
        self._exited_totals: dict[str, int] = {}              # counters of workers that exited
        self._reserved: list[socket.socket] = []
        self._initial_synced: set[int] = set()
        self._open = asyncio.Event()
        self._all_ready = asyncio.Event()
        self._done: asyncio.Future[int] | None = None
        self._stopping = False
        self._sys_info_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ running

    def run(self) -> int:
        """Run until stopped (signal or fatal boot error); returns the exit code."""
        try:
            import uvloop
            runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
        except ImportError:
            runner = asyncio.Runner()
        with runner:
            return runner.run(self._main())

    async def _main(self) -> int:
        try:
            await self.start()
        except ConfigurationError as exc:
            log.error("%s", exc)
            await self.close()
            return EXIT_CONFIG
        return await self.wait()

    async def start(self) -> None:
        """Reserve ports, join the bus, fork the workers, wait until they all listen."""
        loop = asyncio.get_running_loop()
        self._done = loop.create_future()
        _relabel_log_records(SUPERVISOR)
        self.listener_configs = self._reserve_ports(self.listener_configs)
        self.runtime_dir = make_runtime_dir()
        self.bus = Bus(SUPERVISOR, self.runtime_dir)
        self.fabric = BusFabric(self.bus, worker_id=-1)
        self.fabric.attach(self.inline)
        self.directory = DirectoryNode(self.bus, self._publish_message)
        self.bus.serve("synced", self._serve_synced)
        self.bus.serve("ready", self._serve_ready)
        self.bus.serve("boot_failed", self._serve_boot_failed)
        self.bus.on(STATS, self._on_stats)
        await self.bus.start()
        self._install_signal_handlers(loop)
        for worker_id in range(self.workers_wanted):
            self._spawn(self._workers.setdefault(worker_id, _Worker(worker_id)))
        ready = asyncio.ensure_future(self._all_ready.wait())
        await asyncio.wait({ready, self._done}, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if self._done.done():
            return
        for callback in self.on_ready:
            await callback(self)
        if self._stopping:   # a callback could not start its service (e.g. the HTTP port is taken)
            return
        for listener_id, (kind, host, port) in self.listeners.items():
            where = host if port is None else (f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
            log.info("listening %s %s", kind, where)
        log.info("%d workers serving", len(self._workers))
        if self.options.sys_interval > 0 and any(type(hook).on_sys_info_tick is not Hook.on_sys_info_tick for hook in self.hooks):
            self._sys_info_task = loop.create_task(self._send_sys_info(), name="kushi-sys-info")

    async def _send_sys_info(self) -> None:
        """Every ``sys_interval``: the whole broker's statistics to every worker, whose hooks
        get them as ``on_sys_info_tick`` (``kushi.worker.sys_info``)."""
        ticker = SysInfoTicker(self.options.sys_interval, time.monotonic())
        while self.bus is not None:
            await asyncio.sleep(self.options.sys_interval)   # the loop is the interval: always due
            if self.bus is not None:
                info = ticker.info(self.stats(), time.monotonic(), None)
                self.bus.broadcast(SYS_INFO, msgpack.packb(info))

    async def wait(self) -> int:
        """Wait until the supervisor has stopped; returns the exit code."""
        assert self._done is not None
        code = await self._done
        for stop in self.on_stop:
            try:
                await stop()
            except Exception:
                log.exception("stopping a supervisor service failed")
        await self.close()
        return code

    async def close(self) -> None:
        """Release the bus, the reserved ports and the runtime directory."""
        if self._sys_info_task is not None:
            self._sys_info_task.cancel()
            self._sys_info_task = None
        if self.bus is not None:
            await self.bus.close()
            self.bus = None
        for sock in self._reserved:
            sock.close()
        self._reserved.clear()
        if self.runtime_dir:
            shutil.rmtree(self.runtime_dir, ignore_errors=True)

    def _finish(self, code: int) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_result(code)

    # ------------------------------------------------------------ ports

    def _reserve_ports(self, listeners: list[Any]) -> list[Any]:
        """Give each port-0 listener a real port, held by a bound (never listening) socket."""
        resolved = []
        for config in listeners:
            if isinstance(config, Unix):
                resolved.append(config)
                continue
            host, port = parse_address(config.address)
            if port == 0:
                try:
                    sock = bind_socket(host, 0)
                except OSError as exc:
                    raise ConfigurationError(
                        f"listener {config.id}: cannot bind {config.address}: {exc}") from exc
                self._reserved.append(sock)
                port = sock.getsockname()[1]
                shown = "" if host is None else (f"[{host}]" if ":" in host else host)
                config = dataclasses.replace(config, address=f"{shown}:{port}")
            resolved.append(config)
        return resolved

    def _listeners_of(self, worker_id: int) -> list[Any]:
        """A Unix socket path can be held by one process only: worker 0 takes those."""
        return [config for config in self.listener_configs
                if worker_id == 0 or not isinstance(config, Unix)]

    # ------------------------------------------------------------ workers

    def _spawn(self, worker: _Worker) -> None:
        """Fork worker ``worker``; the child never returns from here."""
        worker.restart = None
        worker.ready = False
        spec = WorkerSpec(worker.worker_id, self.runtime_dir, self.options,
                          self._listeners_of(worker.worker_id), self.hook_entries)
        supervisor_pid = os.getpid()
        pid = os.fork()
        if pid == 0:
            os._exit(self._child(spec, supervisor_pid))
        worker.pid = pid
        worker.started_at = time.monotonic()
        self._watch_exit(worker)
        log.info("worker %d started (pid %d)", worker.worker_id, pid)

    def _child(self, spec: WorkerSpec, supervisor_pid: int) -> int:
        """In the forked child: leave the supervisor's loop, signals and sockets alone, run the worker."""
        try:
            signal.set_wakeup_fd(-1)
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP,
                           signal.SIGTTIN, signal.SIGTTOU):
                signal.signal(signum, signal.SIG_DFL)
            _die_with_parent(supervisor_pid)
            asyncio.events._set_running_loop(None)  # the supervisor's loop is not ours to run
            for sock in self._reserved:
                sock.close()
            _relabel_log_records(node_name(spec.worker_id))
            return worker_main(spec)
        except BaseException:
            traceback.print_exc()
            return EXIT_FAILED
        finally:
            sys.stderr.flush()
            sys.stdout.flush()

    def _watch_exit(self, worker: _Worker) -> None:
        """Learn of the worker's exit through a pidfd (uvloop keeps SIGCHLD for itself)."""
        pidfd = os.pidfd_open(worker.pid)
        loop = asyncio.get_running_loop()
        loop.add_reader(pidfd, self._reap, worker, worker.pid, pidfd)

    def _reap(self, worker: _Worker, pid: int, pidfd: int) -> None:
        asyncio.get_running_loop().remove_reader(pidfd)
        os.close(pidfd)
        _, status = os.waitpid(pid, 0)
        if worker.pid == pid:
            self._worker_exited(worker, os.waitstatus_to_exitcode(status))

    def _worker_exited(self, worker: _Worker, code: int) -> None:
        worker.pid = 0
        last = self._worker_stats.pop(node_name(worker.worker_id), {})
        for key, value in last.items():
            if key.startswith(COUNTER_PREFIXES):
                self._exited_totals[key] = self._exited_totals.get(key, 0) + value
        if self.bus is not None:
            self.bus.forget(node_name(worker.worker_id))
        if self._stopping or worker.retired:
            log.info("worker %d exited (%s)", worker.worker_id, _describe(code))
            if worker.retired:
                del self._workers[worker.worker_id]
            if self._stopping and all(w.pid == 0 for w in self._workers.values()):
                self._finish(self.exit_code)
            return
        if code == EXIT_BOOT_FAILED or worker.boot_error is not None:
            why = worker.boot_error or _describe(code)
            log.error("worker %d failed at boot: %s; stopping the server", worker.worker_id, why)
            self.exit_code = EXIT_CONFIG if "ConfigurationError" in why else EXIT_FAILED
            self.stop(signal.SIGTERM)
            return
        uptime = time.monotonic() - worker.started_at
        worker.failures = 0 if uptime > STABLE_AFTER else worker.failures + 1
        delay = min(RESTART_DELAY_FIRST * 2 ** max(worker.failures - 1, 0), RESTART_DELAY_MAX)
        log.warning("worker %d died (%s); restarting in %.1fs", worker.worker_id, _describe(code), delay)
        assert self._done is not None
        worker.restart = asyncio.get_running_loop().call_later(delay, self._respawn, worker)

    def _respawn(self, worker: _Worker) -> None:
        if not self._stopping and worker.pid == 0:
            self._spawn(worker)

    # ------------------------------------------------------------ bus services

    async def _serve_synced(self, sender: str, payload: bytes) -> bytes:
        """A worker joined and synced: answer when it may open its listeners."""
        worker = self._worker_named(sender)
        if worker is not None and not self._open.is_set():
            self._initial_synced.add(worker.worker_id)   # a set: a worker restarted at boot counts once
            if len(self._initial_synced) >= self.workers_wanted:
                self._open.set()
        await self._open.wait()
        return b""

    def _serve_ready(self, sender: str, payload: bytes) -> bytes:
        worker = self._worker_named(sender)
        if worker is not None:
            worker.ready = True
            for listener_id, kind, host, port in msgpack.unpackb(payload):
                self.listeners.setdefault(listener_id, (kind, host, port))
            log.info("worker %d ready", worker.worker_id)
        if all(w.ready for w in self._workers.values()):
            self._all_ready.set()
        return b""

    def _serve_boot_failed(self, sender: str, payload: bytes) -> bytes:
        worker = self._worker_named(sender)
        if worker is not None:
            kind, message = msgpack.unpackb(payload)
            worker.boot_error = f"{kind}: {message}"
        return b""

    def _worker_named(self, name: str) -> _Worker | None:
        for worker in self._workers.values():
            if node_name(worker.worker_id) == name:
                return worker
        return None

    # ------------------------------------------------------------ signals

    def _install_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            loop.add_signal_handler(signum, self.stop, signum)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        loop.add_signal_handler(signal.SIGTTIN, self.add_worker)
        loop.add_signal_handler(signal.SIGTTOU, self.retire_worker)

    def reload(self) -> None:
        """SIGHUP: read the configuration again and change the options in place in every worker
        (and here, so a restarted worker starts with them); then every worker reloads its hooks'
        files. No connection is dropped.

        Options in ``RESTART_ONLY``, listeners and the other parts that need new processes
        or sockets are logged as waiting for a restart. A configuration that cannot be read
        keeps the one in use, with an error in the log.
        """
        if self.reload_config is not None:
            try:
                options, log_level, waiting = self.reload_config()
            except ConfigurationError as exc:
                log.error("SIGHUP: %s; the configuration in use is kept", exc)
            else:
                self._change_options(options, log_level, waiting)
        self._forward_signal(signal.SIGHUP)

    def _change_options(self, options: Options, log_level: str | None, waiting: list[str]) -> None:
        in_place, restart = self.options.changes_to(options)
        for name in [*restart, *waiting]:
            log.warning("SIGHUP: %s changed; that takes effect at the next start", name)
        level_changed = log_level is not None and logging.getLevelName(logging.getLogger().level) \
            != log_level.upper()
        if not in_place and not level_changed:
            log.info("SIGHUP: no option changed")
            return
        self.options.change(in_place)
        if level_changed:
            logging.getLogger().setLevel(log_level.upper())
        changes = ", ".join(f"{name}={value!r}" for name, value in in_place.items())
        log.info("SIGHUP: changed %s", changes + (f" log_level={log_level}" if level_changed else ""))
        if self.bus is not None:
            self.bus.broadcast(OPTIONS, msgpack.packb({"options": in_place,
                                                        "log_level": log_level if level_changed else None}))

    def stop(self, signum: int = signal.SIGTERM) -> None:
        """SIGTERM: graceful (within ``grace`` seconds); SIGINT/SIGQUIT: fast."""
        if self._stopping:
            return
        self._stopping = True
        graceful = signum == signal.SIGTERM
        log.info("%s: stopping %s", signal.Signals(signum).name, "gracefully" if graceful else "now")
        for worker in self._workers.values():
            if worker.restart is not None:
                worker.restart.cancel()
        self._forward_signal(signal.SIGTERM if graceful else signal.SIGQUIT)
        if all(w.pid == 0 for w in self._workers.values()):
            self._finish(self.exit_code)
            return
        asyncio.get_running_loop().call_later(self.grace if graceful else 1.0, self._kill_all)

    def _kill_all(self) -> None:
        self._forward_signal(signal.SIGKILL)

    def _forward_signal(self, signum: int) -> None:
        for worker in self._workers.values():
            if worker.pid:
                try:
                    os.kill(worker.pid, signum)
                except ProcessLookupError:
                    pass

    def add_worker(self) -> None:
        """SIGTTIN: one more worker (it syncs before it listens)."""
        if self._stopping:
            return
        worker_id = next(i for i in range(len(self._workers) + 1) if i not in self._workers)
        log.info("SIGTTIN: adding worker %d", worker_id)
        self._spawn(self._workers.setdefault(worker_id, _Worker(worker_id)))

    def retire_worker(self) -> None:
        """SIGTTOU: retire the newest worker; its clients are told to use another server (0x9C)."""
        live = [w for w in self._workers.values() if w.pid and not w.retired]
        if self._stopping or len(live) <= 1:
            return
        worker = max(live, key=lambda w: w.worker_id)
        worker.retired = True
        log.info("SIGTTOU: retiring worker %d", worker.worker_id)
        assert self.bus is not None
        self.bus.send(node_name(worker.worker_id), CONTROL, RETIRE)

    # ------------------------------------------------------------ inline client

    async def publish(self, topic: str, payload: bytes | str, retain: bool = False, qos: int = 0,
                      properties: Properties | None = None) -> None:
        """Publish from the supervisor: reaches the subscribers on every worker."""
        assert self.fabric is not None
        if isinstance(payload, str):
            payload = payload.encode()
        self._publish_message(Publish(topic, payload, qos, retain, properties=properties or NO_PROPERTIES))

    def _publish_message(self, message: Publish) -> None:
        """A message from the supervisor (inline client, a dead worker's will) to every worker."""
        assert self.fabric is not None
        if message.retain:
            self.fabric.retained_changed(message)
        self.fabric.forward(message)
        self.inline.deliver_remote(message)

    async def subscribe(self, filter: str, subscription_id: int, callback: Callable[..., Any]) -> None:
        """Call ``callback(topic, payload, packet)`` for each message published on any worker;
        the retained messages matching ``filter`` before this returns, as a worker's inline
        client does (``kushi.worker.subscriptions``): once every worker knows the filter
        (``BusFabric.live_retained_until``), so that one set on a worker that did not know it
        yet is among them, and none of a topic routed here live meanwhile."""
        fabric = self.fabric
        assert fabric is not None
        validate_topic_filter(filter)
        self.inline.subscriptions[(filter, subscription_id)] = callback
        fabric.interest_added(filter)
        group, topic_filter = parse_shared(filter)
        if group is not None:
            return   # a shared subscription gets no retained messages (MQTT 5.0, 4.8.2)
        routed_live: set[str] = set()
        known = fabric.known_everywhere([filter])
        if known is not None:
            waited = await fabric.live_retained_until(known, f"the inline subscription to {filter!r}")
            routed_live = waited.topics
        for message in fabric.retained_matching(topic_filter, time.monotonic()):
            if message.topic not in routed_live:
                self.inline.call(callback, message)

    async def unsubscribe(self, filter: str, subscription_id: int) -> None:
        assert self.fabric is not None
        self.inline.subscriptions.pop((filter, subscription_id), None)
        if not any(f == filter for f, _ in self.inline.subscriptions):
            self.fabric.interest_removed(filter)

    def _on_stats(self, sender: str, payload: bytes) -> None:
        self._worker_stats[sender] = msgpack.unpackb(payload)
        if self.options.max_clients and self.bus is not None:   # kushi.cluster.client_limit
            counts = {node: snapshot.get("clients_connected", 0)
                      for node, snapshot in self._worker_stats.items()}
            self.bus.broadcast(CONNECTED_COUNTS, msgpack.packb(counts))

    def stats(self) -> dict[str, int]:
        """The whole broker's counters: the workers' latest snapshots added up (see STATS_INTERVAL).

        Counters of workers that exited are kept, so totals never go back.
        """
        total = dict(self._exited_totals)
        for snapshot in self._worker_stats.values():
            for key, value in snapshot.items():
                if key in REPLICATED_STATS:
                    total[key] = max(total.get(key, 0), value)
                else:
                    total[key] = total.get(key, 0) + value
        total["workers"] = sum(1 for w in self._workers.values() if w.pid and w.ready)
        if self.bus is not None:
            total["bus_gaps"] = total.get("bus_gaps", 0) + self.bus.stats.gaps
        return total

    def worker_stats(self) -> dict[str, dict[str, int]]:
        """Each live worker's latest snapshot by bus name ("w0", ...), for per-worker metrics."""
        return {node: dict(snapshot) for node, snapshot in self._worker_stats.items()}

    def worker_pids(self) -> dict[int, int]:
        """Worker id -> pid of the live workers."""
        return {w.worker_id: w.pid for w in self._workers.values() if w.pid}


def _die_with_parent(parent: int) -> None:
    """Have the kernel send this worker SIGTERM if the supervisor dies (Linux ``PR_SET_PDEATHSIG``).

    A worker orphaned by a killed supervisor would keep its listening sockets
    open with no one to restart or stop it.
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        return  # not Linux: orphans are left to the operator
    if os.getppid() != parent:   # the supervisor died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _describe(code: int) -> str:
    return f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"


def _relabel_log_records(label: str) -> None:
    """Stamp this process's log lines with its worker label (see kushi.ops.logging)."""
    for handler in logging.getLogger().handlers:
        for log_filter in handler.filters:
            if hasattr(log_filter, "worker"):
                log_filter.worker = label


def run_cluster(options: Options, listeners: Sequence[Any], hooks: Sequence[Hook] = (),
                workers: int | None = None, grace: float = DEFAULT_GRACE,
                on_ready: Sequence[Callable[[Supervisor], Awaitable[None]]] = (),
                on_stop: Sequence[Callable[[], Awaitable[None]]] = (),
                reload_config: ReloadConfig | None = None) -> int:
    """``kushi serve --workers N``: run the supervisor until it stops; returns the exit code.

    ``on_ready`` callbacks get the running Supervisor once every worker
    listens: the place to start a metrics endpoint (``supervisor.stats``) or
    $SYS (``supervisor.publish``); ``on_stop`` callbacks stop them.
    """
    return Supervisor(options, listeners, hooks, workers, grace=grace,
                      on_ready=on_ready, on_stop=on_stop, reload_config=reload_config).run()


def serve(config: Any, hooks: Sequence[Hook] | None = None,
          on_ready: Sequence[Callable[[Supervisor], Awaitable[None]]] = (),
          on_stop: Sequence[Callable[[], Awaitable[None]]] = (),
          reload_config: ReloadConfig | None = None) -> int:
    """Entry point for ``kushi.ops.cli.run_workers``: a ServeConfig (duck-typed) -> exit code.

    The auth hooks are built by the CLI (``build_auth_hooks``); refusing to run
    without them when auth files are configured keeps a multi-worker broker
    from silently letting everyone in.
    """
    if hooks is None:
        if getattr(getattr(config, "auth", None), "configured", False):
            log.error("auth files are configured but no hooks were passed to the supervisor")
            return EXIT_CONFIG
        hooks = ()
    return run_cluster(config.options, config.listeners, hooks, config.options.workers,
                       on_ready=on_ready, on_stop=on_stop, reload_config=reload_config)
