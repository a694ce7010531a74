"""QoS 2 exactly once while a session hops between workers (invariant 1 with invariant 2).

When a client moves from worker A to worker B, A forwards for a while what
still reaches it for the client ("pub-for"), and other workers already send
B the same messages directly: B must deliver each one to the client once
(``kushi.cluster.handover``). These tests hop a persistent QoS 2 subscriber
over the workers of a real ``kushi serve --workers 3`` while messages stream.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from cluster_support import hop_while_streaming

from kushi.protocol.packets import Publish, Pubcomp, Pubrec, Pubrel
from tests.support.rawclient import NoPacket

pytestmark = pytest.mark.timeout(180)


class Qos2Receiver:
    """The receiving side of QoS 2 as a client must keep it across its connections [MQTT-4.3.3].

    A message counts when first received; its packet id is kept until PUBREL, and a
    PUBLISH with a kept id (a resend after a reconnect) is acknowledged, not counted.
    Whatever is counted twice is a duplicate the broker sent.
    """

    def __init__(self) -> None:
        self.counted: Counter[int] = Counter()
        self.awaiting_release: set[int] = set()

    def read(self, client, timeout: float, until: set[int] | None = None) -> None:
        """Handle packets until none comes for ``timeout`` s (or ``until`` is all counted)."""
        while until is None or not until <= set(self.counted):
            try:
                packet = client.recv_packet(timeout=timeout)
            except NoPacket:
                return
            if isinstance(packet, Publish):
                assert packet.qos == 2, packet
                if packet.packet_id not in self.awaiting_release:
                    self.counted[int(packet.payload)] += 1
                    self.awaiting_release.add(packet.packet_id)
                client.send(Pubrec(packet.packet_id))
            elif isinstance(packet, Pubrel):
                self.awaiting_release.discard(packet.packet_id)
                client.send(Pubcomp(packet.packet_id))


def test_qos2_subscriber_hopping_between_workers_gets_every_message_exactly_once(tmp_path) -> None:
    """[invariant 1, issue 3] 20 reconnects onto other workers while QoS 2 messages stream:
    every message arrives, none twice, and no PUBREL stays owed."""
    count = 3000
    receiver = Qos2Receiver()

    def read(client, last: bool) -> None:
        if last:
            receiver.read(client, timeout=10, until=set(range(count)))
        receiver.read(client, timeout=1 if last else 0.1)   # at the end: a late duplicate shows here

    hops = hop_while_streaming(tmp_path, "once/t", 2, "qos2-hopper", count, read)
    assert not receiver.awaiting_release, "PUBREL still owed after the last message"
    missing = sorted(set(range(count)) - set(receiver.counted))
    twice = sorted(value for value, times in receiver.counted.items() if times > 1)
    assert not missing and not twice, (
        f"after {hops} hops: {len(missing)} lost (e.g. {missing[:10]}), "
        f"{len(twice)} delivered twice (e.g. {twice[:10]})")


def test_qos2_exactly_once_across_hand_overs_when_a_coroutine_acl_routes_later(tmp_path) -> None:
    """[invariant 1] The same with a coroutine ACL: each worker routes a message in a task, after
    the bus call that brought it (kushi.worker.async_filters), and the new holder still skips
    the copies its session had."""
    count = 1500
    receiver = Qos2Receiver()

    def read(client, last: bool) -> None:
        if last:
            receiver.read(client, timeout=10, until=set(range(count)))
        receiver.read(client, timeout=1 if last else 0.1)

    hops = hop_while_streaming(tmp_path, "slow/t", 2, "slow-hopper", count, read,
                               program=str(Path(__file__).with_name("async_acl_program.py")))
    missing = sorted(set(range(count)) - set(receiver.counted))
    twice = sorted(value for value, times in receiver.counted.items() if times > 1)
    assert not missing and not twice, (
        f"after {hops} hops: {len(missing)} lost (e.g. {missing[:10]}), "
        f"{len(twice)} delivered twice (e.g. {twice[:10]})")
