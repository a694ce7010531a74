"""kushi bench against a real kushi broker: messages flow, nothing is lost at QoS 1, the summary says so."""

from __future__ import annotations

import asyncio
import io

import pytest

from kushi.ops.bench import NOT_AS_FAST, BenchConfig, run_bench, summary
from kushi.protocol.packets import MQTT_5


@pytest.mark.parametrize(("scenario", "qos", "version"), [
    ("pairs", 1, 4), ("fanin", 0, 4), ("fanout", 1, MQTT_5),
])
def test_bench_runs_a_second_and_reports_what_arrived(broker, scenario: str, qos: int, version: int) -> None:
    config = BenchConfig(host=broker.host, port=broker.port, scenario=scenario, clients=3, qos=qos,
                         duration=1.0, version=version)
    progress = io.StringIO()
    result = asyncio.run(run_bench(config, progress))
    assert result.received > 0
    subscribers_per_message = 3 if scenario == "fanout" else 1
    assert result.expected == result.sent * subscribers_per_message
    if qos:
        assert result.lost == 0
        assert result.received == result.expected
    assert 0 <= result.percentile(0.5) <= result.percentile(0.99)
    assert "received" in progress.getvalue()  # one plain progress line per second (not a TTY)
    table = summary(config, result)
    assert f"received       {result.received:,}" in table
    assert "lost" in table and "latency p99" in table
    assert NOT_AS_FAST in table


def test_bench_refuses_a_payload_too_small_for_its_stamp(broker) -> None:
    config = BenchConfig(host=broker.host, port=broker.port, size=8, duration=0.1)
    with pytest.raises(ValueError, match="--size"):
        asyncio.run(run_bench(config, io.StringIO()))
