"""on_sys_info_tick (kushi.worker.sys_info): the statistics a one-process server hands its hooks.

The multi-worker case (the supervisor sends the whole broker's figures to every
worker) is in tests/cluster/test_sys_info_across_workers.py.
"""

from __future__ import annotations

from typing import Any

from kushi import __version__
from kushi.hooks.base import Hook
from kushi.worker.sys_info import SysInfoTicker
from support.waiting import wait_until


def test_the_ticker_is_due_once_per_interval_counted_from_the_start() -> None:
    ticker = SysInfoTicker(interval=10, started=1000.0)
    assert not ticker.due(1009.9)
    assert ticker.due(1010.0)
    assert not ticker.due(1015.0)       # the next one is 10 s after the last
    assert ticker.due(1020.0)


def test_an_interval_of_zero_never_ticks() -> None:
    ticker = SysInfoTicker(interval=0, started=0.0)
    assert not any(ticker.due(now) for now in (0.0, 1.0, 1e9))


def test_info_is_the_statistics_with_uptime_version_and_worker() -> None:
    info = SysInfoTicker(interval=10, started=1000.0).info({"clients_connected": 3}, 1042.7, 2)
    assert info == {"clients_connected": 3, "uptime": 42, "version": __version__, "worker_id": 2}


class TickRecorder(Hook):
    id = "ticks"

    def __init__(self) -> None:
        self.ticks: list[dict[str, Any]] = []

    def on_sys_info_tick(self, info: dict[str, Any]) -> None:
        self.ticks.append(info)


def test_a_server_fires_on_sys_info_tick_every_interval_with_its_statistics(make_broker, paho) -> None:
    """Fired by the server itself, without $SYS being published by anyone."""
    recorder = TickRecorder()
    broker = make_broker(hooks=[recorder], sys_interval=1)
    paho.connected(broker, "counted", 5)
    wait_until(lambda: len(recorder.ticks) >= 2, timeout=6, message="two sys info ticks")
    first, second = recorder.ticks[:2]
    assert second["uptime"] > first["uptime"] >= 1
    assert second["clients_connected"] == 1
    assert (second["worker_id"], second["version"]) == (0, __version__)


def test_no_tick_when_sys_interval_is_zero(make_broker, paho) -> None:
    recorder = TickRecorder()
    witness = TickRecorder()
    make_broker(hooks=[recorder], sys_interval=0)
    make_broker(hooks=[witness], sys_interval=1)  # a second server, ticking: time has passed
    wait_until(lambda: witness.ticks, timeout=4, message="the witness server's tick")
    assert recorder.ticks == []
