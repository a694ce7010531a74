"""[issue 5, S5] The garbage collector of a worker process is set for connection storms
(``kushi.cluster.worker.tune_garbage_collector``); a program that embeds a one-process
``kushi.Server`` keeps its own settings. Each check runs in a fresh interpreter, so
that no other test's collector settings are seen."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from kushi.cluster.worker import GC_YOUNG_THRESHOLD


def run_python(code: str) -> list[int]:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    return [int(word) for word in out.split()]


def test_a_worker_freezes_start_up_objects_and_collects_its_young_generation_less_often() -> None:
    threshold, frozen = run_python("""
        import gc
        from kushi.cluster.worker import tune_garbage_collector
        tune_garbage_collector()
        print(gc.get_threshold()[0], gc.get_freeze_count())
    """)
    assert threshold == GC_YOUNG_THRESHOLD
    assert frozen > 0, "start-up objects are out of the collector's sight"


def test_an_embedded_server_leaves_its_program_s_collector_alone() -> None:
    before_threshold, before_frozen, threshold, frozen = run_python("""
        import asyncio, gc
        import kushi
        before = gc.get_threshold()[0], gc.get_freeze_count()
        async def main():
            server = kushi.Server(kushi.Options())
            server.add_listener(kushi.TCP("t", "127.0.0.1:0"))
            await server.start()
            await server.close()
        asyncio.run(main())
        print(*before, gc.get_threshold()[0], gc.get_freeze_count())
    """)
    assert (threshold, frozen) == (before_threshold, before_frozen)
