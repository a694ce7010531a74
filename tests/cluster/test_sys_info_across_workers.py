"""on_sys_info_tick with several workers: the supervisor's whole-broker figures reach every worker's hooks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from test_embedded import Program

pytestmark = pytest.mark.timeout(60)


def test_every_worker_hook_gets_the_whole_broker_statistics_each_interval() -> None:
    """[issue 4, on_sys_info_tick] The hooks run in the workers, the figures come from the
    supervisor: each worker's hook gets ``workers == 2`` and its own worker id, and the
    supervisor (where no hook was initialised) fires nothing itself."""
    program = Program(str(Path(__file__).with_name("sys_info_program.py")))
    try:
        _port, pids_text = program.next_line("PORT").split(" ", 1)
        pids = {int(k): v for k, v in json.loads(pids_text).items()}
        ticks_by_worker: dict[int, list[dict]] = {}
        while not all(len(ticks_by_worker.get(w, [])) >= 2 for w in pids):
            tick = json.loads(program.next_line("TICK", timeout=10))
            ticks_by_worker.setdefault(tick["worker_id"], []).append(tick)
        assert set(ticks_by_worker) == set(pids)
        for worker_id, ticks in ticks_by_worker.items():
            assert {tick["pid"] for tick in ticks} == {pids[worker_id]}   # run in that worker
            assert all(tick["workers"] == 2 for tick in ticks)            # the whole broker's figures
            assert ticks[1]["uptime"] > ticks[0]["uptime"]
        assert os.getpid() not in {tick["pid"] for ticks in ticks_by_worker.values() for tick in ticks}
    finally:
        assert program.stop() == 0
