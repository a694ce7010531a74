"""/metrics and /healthz served by kushi.ops.metrics on a real socket, from a stats function."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from kushi.ops.metrics import MetricsServer


def fetch(url: str, method: str = "GET") -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read().decode()


def samples(text: str) -> dict[str, float]:
    return {sample.name: sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


async def scrape(stats: dict[str, int], *paths: str, method: str = "GET") -> list[tuple[int, str, str]]:
    """Start a MetricsServer on port 0, fetch each path in turn (stats may change in between)."""
    server = MetricsServer("127.0.0.1:0", lambda: dict(stats))
    await server.start()
    try:
        assert server.port != 0
        results = []
        for path in paths:
            results.append(await asyncio.to_thread(fetch, f"http://127.0.0.1:{server.port}{path}", method))
            stats["messages_received"] = stats.get("messages_received", 0) + 1
        return results
    finally:
        await server.close()


def test_metrics_are_read_from_the_stats_at_scrape_time() -> None:
    stats = {"messages_received": 7, "clients_connected": 2, "retained": 3, "bytes_sent": 100,
             "some_new_statistic": 4}
    (status, content_type, first), (_, _, second) = asyncio.run(scrape(stats, "/metrics", "/metrics"))
    assert status == 200 and content_type.startswith("text/plain")
    values = samples(first)
    assert values["kushi_messages_received_total"] == 7
    assert values["kushi_bytes_sent_total"] == 100
    assert values["kushi_clients_connected"] == 2
    assert values["kushi_retained"] == 3
    assert values["kushi_some_new_statistic"] == 4, "an unknown statistic is exported as a gauge"
    assert "kushi_process_resident_memory_bytes" in values
    assert samples(second)["kushi_messages_received_total"] == 8


def test_healthz_and_unknown_paths() -> None:
    (health, _, body), (missing, _, _) = asyncio.run(scrape({}, "/healthz", "/nothing"))
    assert (health, body) == (200, "ok\n")
    assert missing == 404


def test_methods_other_than_get_and_head_are_refused() -> None:
    server = MetricsServer("127.0.0.1:0", dict)
    assert server.respond(b"POST /metrics HTTP/1.1")[0].startswith("405")
    assert server.respond(b"garbage")[0].startswith("405")


def test_head_answers_like_get_without_a_body() -> None:
    [(status, _, body)] = asyncio.run(scrape({}, "/healthz", method="HEAD"))
    assert (status, body) == (200, "")
