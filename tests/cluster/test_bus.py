"""The ZeroMQ bus alone: two nodes in two processes (this test is the registrar).

Each test waits on conditions with a deadline, never on a fixed sleep.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from kushi.router.bus import Bus, BusError, make_runtime_dir

PEER = str(Path(__file__).with_name("bus_peer.py"))
DEADLINE = 15.0


class Inbox:
    """Items received by the registrar, by kind, with a way to wait for a count."""

    def __init__(self, bus: Bus, kinds: tuple[str, ...]) -> None:
        self.items: dict[str, list[tuple[str, bytes]]] = {kind: [] for kind in kinds}
        self.changed = asyncio.Event()
        for kind in kinds:
            bus.on(kind, self._receiver(kind))

    def _receiver(self, kind: str):
        def receive(sender: str, payload: bytes) -> None:
            self.items[kind].append((sender, payload))
            self.changed.set()
        return receive

    async def wait_for(self, kind: str, count: int) -> list[tuple[str, bytes]]:
        async def reached() -> None:
            while len(self.items[kind]) < count:
                self.changed.clear()
                await self.changed.wait()
        await asyncio.wait_for(reached(), DEADLINE)
        return self.items[kind]


@asynccontextmanager
async def registrar_and_peer() -> AsyncIterator[tuple[Bus, Inbox, subprocess.Popen]]:
    runtime_dir = make_runtime_dir()
    bus = Bus("reg", runtime_dir)
    inbox = Inbox(bus, ("first", "n", "skipped"))
    await bus.start()
    peer = subprocess.Popen([sys.executable, PEER, runtime_dir, "p1", "reg"])
    try:
        yield bus, inbox, peer
    finally:
        if peer.poll() is None:
            bus.send("p1", "cmd", b"stop")
            bus.flush()
            try:
                peer.wait(DEADLINE)
            except subprocess.TimeoutExpired:
                peer.kill()
                peer.wait()
        await bus.close()
        shutil.rmtree(runtime_dir, ignore_errors=True)


def run(coroutine) -> None:
    asyncio.run(asyncio.wait_for(coroutine, DEADLINE * 2))


def test_join_handshake_loses_not_even_the_first_message() -> None:
    """A node sends at the instant its join returns; the handshake guarantees it arrives."""
    async def scenario() -> None:
        async with registrar_and_peer() as (bus, inbox, peer):
            first = await inbox.wait_for("first", 1)
            assert first == [("p1", b"p1")]
            assert "p1" in bus.peers
            assert bus.stats.gaps == 0
    run(scenario())


def test_items_arrive_in_order_without_gaps() -> None:
    """5,000 items over many batches arrive all, in the order sent, with no gap counted."""
    async def scenario() -> None:
        async with registrar_and_peer() as (bus, inbox, peer):
            await inbox.wait_for("first", 1)
            bus.send("p1", "cmd", b"send 5000")
            items = await inbox.wait_for("n", 5000)
            assert [int(payload) for _, payload in items] == list(range(5000))
            assert bus.stats.gaps == 0
            assert bus.stats.batches_received > 1  # batched per loop iteration, not one big message
    run(scenario())


def test_sequence_gap_is_detected_and_counted() -> None:
    """When the sender's sequence jumps by 7 (7 batches lost), the receiver counts 7 gaps."""
    async def scenario() -> None:
        async with registrar_and_peer() as (bus, inbox, peer):
            await inbox.wait_for("first", 1)
            bus.send("p1", "cmd", b"skip 7")
            await inbox.wait_for("skipped", 1)
            assert bus.stats.gaps == 7
    run(scenario())


def test_request_reply_answers_and_unknown_service_fails() -> None:
    """Requests get their own answer back; asking for a service nobody offers is an error."""
    async def scenario() -> None:
        async with registrar_and_peer() as (bus, inbox, peer):
            await inbox.wait_for("first", 1)
            answers = await asyncio.gather(*(bus.request("p1", "echo", str(i).encode()) for i in range(20)))
            assert answers == [f"echo:{i}".encode() for i in range(20)]
            with pytest.raises(BusError):
                await bus.request("p1", "no-such-service", b"", timeout=5)
    run(scenario())


def test_ask_calls_back_once_with_the_answer_the_error_the_timeout_or_the_close() -> None:
    """ask() is request() without a coroutine: each on_answer is called once, with the reply, or
    with a BusError for an unknown service, for no answer within the timeout (the peer has
    stopped), and for the bus closing while a request is open."""
    async def scenario() -> None:
        async with registrar_and_peer() as (bus, inbox, peer):
            await inbox.wait_for("first", 1)
            calls: list[tuple[int, bytes | None, BusError | None]] = []
            called = asyncio.Event()

            def on_answer(number: int):
                def answered(answer: bytes | None, error: BusError | None) -> None:
                    calls.append((number, answer, error))
                    called.set()
                return answered

            async def calls_reach(count: int) -> None:
                while len(calls) < count:
                    called.clear()
                    await called.wait()

            for number in range(20):
                bus.ask("p1", "echo", str(number).encode(), on_answer(number))
            bus.ask("p1", "no-such-service", b"", on_answer(20))
            await asyncio.wait_for(calls_reach(21), DEADLINE)
            assert sorted((n, a) for n, a, e in calls if e is None) == \
                [(n, f"echo:{n}".encode()) for n in range(20)]
            assert [(n, a, type(e)) for n, a, e in calls if e is not None] == [(20, None, BusError)]
            bus.send("p1", "cmd", b"stop")
            await asyncio.get_running_loop().run_in_executor(None, peer.wait, DEADLINE)
            bus.ask("p1", "echo", b"late", on_answer(21), timeout=0.2)
            await asyncio.wait_for(calls_reach(22), DEADLINE)
            assert calls[21][0] == 21 and "no answer" in str(calls[21][2])
            bus.ask("p1", "echo", b"open", on_answer(22))
            await bus.close()
            assert calls[22][0] == 22 and "closed" in str(calls[22][2])
            assert len(calls) == 23   # once each
    run(scenario())


def test_peer_left_is_forgotten() -> None:
    """forget() drops a peer and runs the on_peer_left callbacks."""
    async def scenario() -> None:
        async with registrar_and_peer() as (bus, inbox, peer):
            await inbox.wait_for("first", 1)
            left: list[str] = []
            bus.on_peer_left.append(left.append)
            bus.send("p1", "cmd", b"stop")
            await asyncio.get_running_loop().run_in_executor(None, peer.wait, DEADLINE)
            bus.forget("p1")
            assert left == ["p1"] and "p1" not in bus.peers
    run(scenario())


def test_a_restarted_node_is_heard_once_not_twice() -> None:
    """A node that leaves and joins again under its name: each of its items arrives exactly once."""
    async def scenario() -> None:
        async with registrar_and_peer() as (bus, inbox, peer):
            await inbox.wait_for("first", 1)
            bus.send("p1", "cmd", b"stop")
            await asyncio.get_running_loop().run_in_executor(None, peer.wait, DEADLINE)
            bus.forget("p1")
            again = subprocess.Popen([sys.executable, PEER, bus.runtime_dir, "p1", "reg"])
            try:
                await inbox.wait_for("first", 2)
                bus.send("p1", "cmd", b"send 300")
                await inbox.wait_for("n", 300)
                bus.send("p1", "cmd", b"skip 0")          # sent after the 300: a positive control
                await inbox.wait_for("skipped", 1)
                assert [int(payload) for _, payload in inbox.items["n"]] == list(range(300))
                assert len(inbox.items["first"]) == 2
                assert bus.stats.out_of_order == 0   # no batch even reached us twice
            finally:
                bus.send("p1", "cmd", b"stop")
                bus.flush()
                await asyncio.get_running_loop().run_in_executor(None, again.wait, DEADLINE)
    run(scenario())
