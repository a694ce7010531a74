"""Prometheus metrics and a health check on the HTTP listener of ``kushi serve``.

``GET /metrics`` serves the broker's statistics in the Prometheus text format,
``GET /healthz`` answers 200 while the broker serves. Nothing is counted per
message here: ``StatsCollector`` reads ``server.stats()`` (plain integers the
broker keeps anyway) when Prometheus scrapes, so a scrape costs one dict copy.

The HTTP server is a few lines of asyncio on the broker's own event loop:
requests are tiny and rare, so it needs no thread and never blocks the loop
for longer than rendering the metrics text.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.process_collector import ProcessCollector

from .config import parse_address

log = logging.getLogger("kushi")

StatsSource = Callable[[], Mapping[str, int | float]]
#: worker label -> that worker's own stats (a multi-worker broker's supervisor has them)
PerWorkerSource = Callable[[], Mapping[str, Mapping[str, int | float]]]

#: stats keys that only grow -> help text; exported as kushi_<key>_total
COUNTERS: dict[str, str] = {
    "connections": "Connections accepted since start.",
    "messages_received": "PUBLISH packets received from clients.",
    "messages_sent": "PUBLISH packets sent to clients.",
    "messages_dropped": "Messages dropped (queue full, too large for the client, expired).",
    "bytes_received": "Bytes received from clients.",
    "bytes_sent": "Bytes sent to clients.",
    "slow_consumers_disconnected": "Clients disconnected because they did not read fast enough.",
}
#: stats keys that go up and down -> help text; exported as kushi_<key>
GAUGES: dict[str, str] = {
    "clients_connected": "Clients connected now (CONNECT accepted).",
    "connections_open": "Network connections open now, connected or not yet.",
    "sessions": "Sessions held, connected or not.",
    "retained": "Retained messages stored.",
    "subscriptions": "Subscriptions held.",
}
#: stats also exported per worker (kushi_worker_<key>{worker="w0"}): where the load sits
PER_WORKER: tuple[str, ...] = ("clients_connected", "messages_received", "messages_sent")
_NOT_A_NAME = re.compile(r"[^a-zA-Z0-9_]")


class StatsCollector:
    """A Prometheus collector that reads the broker's stats at scrape time.

    Keys it knows become counters or gauges with help text; any other numeric
    key the broker adds later is exported as a gauge, so new statistics show
    up without a change here.

    With several workers ``stats`` is the whole broker's (the supervisor adds
    the workers up) and ``per_worker`` gives each worker's own figures: the
    ``PER_WORKER`` keys are exported once more as ``kushi_worker_<key>`` with
    a ``worker`` label. They have their own names so that summing a
    ``kushi_<key>`` series never counts a message twice.
    """

    def __init__(self, stats: StatsSource, per_worker: PerWorkerSource | None = None) -> None:
        self.stats = stats
        self.per_worker = per_worker

    def collect(self) -> Iterator[Metric]:
        for key, value in sorted(self.stats().items()):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            name = "kushi_" + _NOT_A_NAME.sub("_", key)
            if key in COUNTERS:
                yield CounterMetricFamily(name, COUNTERS[key], value=value)
            else:
                yield GaugeMetricFamily(name, GAUGES.get(key, f"Broker statistic {key}."), value=value)
        if self.per_worker is not None:
            yield from self._collect_per_worker(self.per_worker())

    def _collect_per_worker(self, workers: Mapping[str, Mapping[str, int | float]]) -> Iterator[Metric]:
        for key in PER_WORKER:
            name = "kushi_worker_" + key
            if key in COUNTERS:
                family: Metric = CounterMetricFamily(name, f"{COUNTERS[key]} Per worker.", labels=["worker"])
            else:
                family = GaugeMetricFamily(name, f"{GAUGES[key]} Per worker.", labels=["worker"])
            for worker, stats in sorted(workers.items()):
                if key in stats:
                    family.add_metric([worker], stats[key])
            yield family


def metrics_registry(stats: StatsSource, per_worker: PerWorkerSource | None = None) -> CollectorRegistry:
    """A registry of its own (not the global one) with the broker's stats and the process's CPU/memory."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(StatsCollector(stats, per_worker))
    ProcessCollector(namespace="kushi", registry=registry)
    return registry


class MetricsServer:
    """A minimal HTTP/1.0 server for ``/metrics`` and ``/healthz`` on the running event loop."""

    def __init__(self, address: str, stats: StatsSource, per_worker: PerWorkerSource | None = None) -> None:
        self.address = address
        self.registry = metrics_registry(stats, per_worker)
        self.host = ""
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Bind the address; afterwards ``host`` and ``port`` hold the real bound address."""
        host, port = parse_address(self.address)
        self._server = await asyncio.start_server(self._handle, host or None, port)
        self.host, self.port = self._server.sockets[0].getsockname()[:2]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
            request_line = request.split(b"\r\n", 1)[0]
            status, content_type, body = self.respond(request_line)
            head = (f"HTTP/1.0 {status}\r\nContent-Type: {content_type}\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
            if request_line.startswith(b"HEAD "):
                body = b""
            writer.write(head.encode("latin-1") + body)
            await writer.drain()
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ConnectionError):
            pass
        finally:
            writer.close()

    def respond(self, request_line: bytes) -> tuple[str, str, bytes]:
        """``b"GET /metrics HTTP/1.1"`` -> (status, content type, body); HEAD answers as GET."""
        parts = request_line.split()
        method, path = (parts[0], parts[1].split(b"?", 1)[0]) if len(parts) >= 2 else (b"", b"")
        if method not in (b"GET", b"HEAD"):
            return "405 Method Not Allowed", "text/plain", b"only GET and HEAD\n"
        if path == b"/metrics":
            return "200 OK", CONTENT_TYPE_LATEST, generate_latest(self.registry)
        if path == b"/healthz":
            return "200 OK", "text/plain", b"ok\n"
        return "404 Not Found", "text/plain", b"try /metrics or /healthz\n"
