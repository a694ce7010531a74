"""$SYS topic payloads (kushi.ops.sys_topics); the end-to-end check is in test_serve.py."""

from __future__ import annotations

import asyncio

from kushi.ops.sys_topics import SysTopics, sys_messages


def test_sys_messages_follow_mosquitto_names() -> None:
    stats = {"clients_connected": 3, "messages_received": 10, "messages_sent": 20,
             "bytes_received": 300, "bytes_sent": 400, "subscriptions": 5, "retained": 6}
    messages = sys_messages(stats, now=1065.5, started=1000.0, worker_id=2, version="0.1.0")
    assert messages == {
        "$SYS/broker/version": "kushi 0.1.0",
        "$SYS/broker/uptime": "65 seconds",
        "$SYS/broker/worker": "2",
        "$SYS/broker/clients/connected": "3",
        "$SYS/broker/messages/received": "10",
        "$SYS/broker/messages/sent": "20",
        "$SYS/broker/bytes/received": "300",
        "$SYS/broker/bytes/sent": "400",
        "$SYS/broker/subscriptions/count": "5",
        "$SYS/broker/retained messages/count": "6",
    }


def test_a_statistic_the_broker_lacks_is_left_out_not_zero() -> None:
    messages = sys_messages({}, now=0.0, started=0.0, worker_id=0, version="x")
    assert "$SYS/broker/clients/connected" not in messages


class RecordingServer:
    """Stands in for kushi.Server's stats() and inline publish(), to see what one tick sends."""

    worker_id = 0

    def __init__(self) -> None:
        self.counters = {"clients_connected": 1}
        self.published: list[tuple[str, str, bool]] = []

    def stats(self) -> dict[str, int]:
        return dict(self.counters)

    async def publish(self, topic: str, payload: str, retain: bool = False) -> None:
        self.published.append((topic, payload, retain))


def test_a_tick_publishes_retained_and_only_what_changed() -> None:
    server = RecordingServer()
    sys_topics = SysTopics(server, interval=10)
    start = sys_topics.started

    async def two_ticks() -> tuple[int, int]:
        first = await sys_topics.tick(start)
        server.counters["clients_connected"] = 2
        return first, await sys_topics.tick(start)   # same uptime: only the client count changed

    first, second = asyncio.run(two_ticks())
    assert first == 4 and second == 1
    assert all(retain for _, _, retain in server.published)
    assert server.published[-1] == ("$SYS/broker/clients/connected", "2", True)
