"""Sessions across workers: the directory, the takeover protocol, session transfer, wills of a dead worker.

The broker's side (closing the old connection with 0x8E, installing the
session it gets back) is stood in for by ``RecordingSink``; the protocol
between the nodes and the transfer format are real.
"""

from __future__ import annotations

import asyncio

from fabric_support import DEADLINE, Cluster, run, until

from kushi.cluster.directory import SessionDirectory
from kushi.cluster.directory_node import DirectoryNode
from kushi.cluster.session_link import CLAIM, WILL_CLEARED
from kushi.cluster.session_transfer import session_from_wire, session_to_wire
from kushi.protocol.packets import Publish, Will
from kushi.protocol.properties import Properties
from kushi.worker.session import Outbound, Session, SubscriptionEntry


def sample_session(now: float) -> Session:
    session = Session("c1", 5, max_queued_messages=50)
    session.expiry_interval = 300
    session.subscriptions["a/#"] = SubscriptionEntry("c1", "a/#", 1, True, True, 2, 7)
    session.subscriptions["$share/g/b"] = SubscriptionEntry("c1", "$share/g/b", 2)
    session.inflight[5] = Outbound(Publish("a/1", b"one", qos=1), now - 2.0, 5, False, True)
    session.inflight[6] = Outbound(Publish("a/2", b"two", qos=2), now - 1.0, 6, True, True)
    session.enqueue(Outbound(Publish("a/3", b"three", qos=1,
                                     properties=Properties(message_expiry_interval=60)), now - 0.5))
    session.enqueue(Outbound(Publish("b", b"four", qos=2), now - 0.25))
    session.queue[-1].shared = ("g", "b")   # chosen by the shared group: kushi.worker.shared_pass_on
    session.inbound_qos2 = {3, 9}
    session.will = Will("will/t", b"bye", 1, True, Properties(will_delay_interval=30, content_type="x"))
    session.will_delay = 30
    session.disconnected_at = now - 4.0
    session.will_due_at = now + 26.0
    session.send_quota_limit = 20
    session._last_packet_id = 6
    return session


async def directory_and_two_workers(cluster: Cluster):
    """The supervisor's directory and workers w1, w2: their (bus, fabric, sink)."""
    sup_bus, _, _ = await cluster.add("sup", -1)
    DirectoryNode(sup_bus, lambda message: None)
    return await cluster.add("w1", 1), await cluster.add("w2", 2)


def test_session_state_survives_the_transfer() -> None:
    """Everything a resumed session needs moves: subscriptions, inflight, queue, QoS 2 ids, will, expiry."""
    sent = sample_session(1000.0)
    got = session_from_wire(session_to_wire(sent, now=1000.0), now=50.0)  # another process's clock
    assert got.subscriptions == sent.subscriptions
    assert {pid: (o.message.topic, bytes(o.message.payload), o.message.qos, o.released, o.sent,
                  o.received_at) for pid, o in got.inflight.items()} == \
        {5: ("a/1", b"one", 1, False, True, 48.0), 6: ("a/2", b"two", 2, True, True, 49.0)}
    assert [(o.message.topic, o.message.properties.message_expiry_interval, o.received_at, o.shared)
            for o in got.queue] == [("a/3", 60, 49.5, None), ("b", None, 49.75, ("g", "b"))]
    assert got.inbound_qos2 == {3, 9}
    assert got.will == sent.will and got.will_delay == 30 and got.will_due_at == 76.0
    assert (got.expiry_interval, got.disconnected_at, got.send_quota_limit, got._last_packet_id) == \
        (300, 46.0, 20, 6)


def test_directory_later_claim_wins_and_release_of_an_older_claim_is_ignored() -> None:
    """Two claims of one client id: the second names the first holder; its stale release changes nothing."""
    directory = SessionDirectory()
    first, previous = directory.claim("c", "w1")
    assert previous is None
    second, previous = directory.claim("c", "w2")
    assert previous == "w1" and second > first
    assert not directory.release("c", "w1", first)
    assert directory.owner("c").node == "w2"
    assert directory.release("c", "w2", second) and directory.owner("c") is None


def test_directory_claim_only_if_free_records_nothing_while_another_worker_holds_the_id() -> None:
    """A claim that did not wait (clean start, no will) takes a free client id, or learns who holds it."""
    directory = SessionDirectory()
    first, previous = directory.claim("c", "w1", only_if_free=True)
    assert first > 0 and previous is None
    assert directory.claim("c", "w2", only_if_free=True) == (0, "w1")
    assert directory.owner("c").node == "w1" and directory.owner("c").generation == first
    again, previous = directory.claim("c", "w1", only_if_free=True)   # its own: a reconnect there
    assert again > first and previous is None


def test_a_client_reconnecting_on_another_worker_takes_its_session_over() -> None:
    """[invariant 2] w2's claim makes w1 give the session up; w2 gets it back whole."""
    async def scenario(cluster: Cluster) -> None:
        (_, w1, sink1), (_, w2, sink2) = await directory_and_two_workers(cluster)
        assert await w1.sessions.claim("c1", clean_start=False) is None   # nobody held it
        sink1.sessions["c1"] = sample_session(asyncio.get_running_loop().time())
        taken = await w2.sessions.claim("c1", clean_start=False)
        assert sink1.exported == ["c1"] and "c1" not in sink1.sessions
        assert taken is not None and taken.node == "w1"
        moved = taken.session
        assert moved is not None and set(moved.subscriptions) == {"a/#", "$share/g/b"}
        assert set(moved.inflight) == {5, 6} and len(moved.queue) == 2
        assert await w2.sessions.claim("c1", clean_start=False) is None   # already here: no takeover
        assert sink2.exported == []
    run(scenario)


def test_claims_made_together_go_in_few_requests_and_each_gets_its_own_answer() -> None:
    """A storm of CONNECTs: the claims made while one is answered wait and go as one request
    (not one each), in order; each claimer gets its own answer (a takeover included)."""
    async def scenario(cluster: Cluster) -> None:
        (w1_bus, w1, _), (_, w2, sink2) = await directory_and_two_workers(cluster)
        await w2.sessions.claim("moved", clean_start=True)
        before = w1_bus.stats.requests_sent
        names = [f"c{n}" for n in range(20)] + ["moved"]
        answers = await asyncio.gather(*(w1.sessions.claim(name, clean_start=True) for name in names))
        assert w1_bus.stats.requests_sent - before <= 3   # 2 batches of claims, 1 takeover
        assert answers[:-1] == [None] * 20
        assert sink2.exported == ["moved"] and answers[-1] is None   # clean start: nothing comes
        generations = [w1.sessions._claims[name] for name in names]
        assert generations == sorted(generations) and len(set(generations)) == len(names)
    run(scenario)


def test_wills_of_a_dead_worker_are_published_unless_the_client_came_back() -> None:
    """[invariant 6] The directory publishes a dead worker's wills when due; a resumed client's is not sent."""
    async def scenario(cluster: Cluster) -> None:
        published: list[Publish] = []
        sup_bus, sup, _ = await cluster.add("sup", -1)
        DirectoryNode(sup_bus, published.append)
        _, w1, _ = await cluster.add("w1", 1)
        _, w2, _ = await cluster.add("w2", 2)
        await w1.sessions.claim("now", False, Will("will/now", b"a"), session_expiry=0)
        delayed = Properties(will_delay_interval=1)
        await w1.sessions.claim("later", False, Will("will/later", b"b", properties=delayed), 60)
        await w1.sessions.claim("back", False, Will("will/back", b"c", properties=delayed), 60)
        await w1.sessions.claim("clean", False, Will("will/clean", b"d"), 60)
        w1.sessions.will_cleared("clean")    # e.g. a normal DISCONNECT: no will
        await asyncio.wait_for(w1.barrier(), DEADLINE)
        sup_bus.forget("w1")        # the supervisor saw w1's process die
        await until(lambda: len(published) == 1)
        assert published[0].topic == "will/now"
        await w2.sessions.claim("back", clean_start=False)   # "back" reconnects within its will delay
        await until(lambda: len(published) == 2)             # "later" is due after its 1 s delay
        assert [m.topic for m in published] == ["will/now", "will/later"]
    run(scenario)


def test_a_clean_start_of_a_dead_workers_client_sends_its_delayed_will_at_once() -> None:
    """[MQTT-3.1.3-9] A client of a dead worker connects again with a clean start before its
    will delay is over: the old session ends now, so its will goes now, for a claim without
    waiting (a client id alone) as for a waiting one."""
    async def scenario(cluster: Cluster) -> None:
        published: list[Publish] = []
        sup_bus, _, _ = await cluster.add("sup", -1)
        DirectoryNode(sup_bus, published.append)
        (_, w1, _), (_, w2, _) = await cluster.add("w1", 1), await cluster.add("w2", 2)
        delayed = Properties(will_delay_interval=60)   # far beyond the test's deadline
        await w1.sessions.claim("bare", False, Will("will/bare", b"a", properties=delayed), 300)
        await w1.sessions.claim("waiting", False, Will("will/waiting", b"b", properties=delayed), 300)
        await asyncio.wait_for(w1.barrier(), DEADLINE)
        sup_bus.forget("w1")        # the supervisor saw w1's process die
        w2.sessions.claim_without_waiting("bare", lambda taken: None)
        assert await w2.sessions.claim("waiting", clean_start=True) is None
        await until(lambda: len(published) == 2)
        assert sorted(message.topic for message in published) == ["will/bare", "will/waiting"]
    run(scenario)


def test_an_arriving_session_gets_each_message_once_and_its_window_is_forgotten() -> None:
    """[invariant 1] During a hand-over w2 gets a message forwarded by w1 and directly, in either
    order: the session gets it once. Once w1 has stopped forwarding, the window (and its ids) goes."""
    async def scenario(cluster: Cluster) -> None:
        (_, w1, sink1), (_, w2, sink2) = await directory_and_two_workers(cluster)
        await w1.sessions.claim("c1", clean_start=False)
        sink1.sessions["c1"] = sample_session(asyncio.get_running_loop().time())
        taken = await w2.sessions.claim("c1", clean_start=False)
        assert taken is not None and set(w2.sessions.windows) == {"c1"}
        arrived = taken.session
        first, second = Publish("a/1", b"first", qos=2), Publish("a/2", b"second", qos=2)
        w1.sessions.forward_to_client("w2", "c1", 2, False, (), ("w0", 1), first)
        w1.sessions.forward_to_client("w2", "c1", 2, False, (), ("w0", 1), first)   # a second forwarder
        await until(lambda: len(sink2.to_sessions) == 1)
        assert not w2.sessions.first_delivery(arrived, ("w0", 1))   # its direct copy: skipped
        assert w2.sessions.first_delivery(arrived, ("w0", 2))       # direct first this time ...
        w1.sessions.forward_to_client("w2", "c1", 2, False, (), ("w0", 2), second)  # ... then forwarded
        assert w2.sessions.first_delivery(sample_session(0.0), ("w0", 1))   # another session: not its
        await asyncio.wait_for(w1.barrier(), DEADLINE)
        assert [bytes(m.payload) for _, m in sink2.to_sessions] == [b"first"]
        assert w2.sessions.stats.duplicates_dropped == 3
        w1.sessions.forwarding_ended("w2", "c1")
        await until(lambda: not w2.sessions.windows)
        w1.sessions.forward_to_client("w2", "c1", 2, False, (), ("w0", 4), second)   # too late
        await until(lambda: w2.sessions.stats.stale_dropped == 1)
        assert len(sink2.to_sessions) == 1
    run(scenario)


async def session_held_on_w2(cluster: Cluster, client_id: str):
    """The directory, w1, w2 and w2's sink, with ``client_id``'s session held on w2."""
    sup_bus, _, _ = await cluster.add("sup", -1)
    directory = DirectoryNode(sup_bus, lambda message: None).directory
    (_, w1, _), (_, w2, sink2) = await cluster.add("w1", 1), await cluster.add("w2", 2)
    await w2.sessions.claim(client_id, clean_start=False)
    sink2.sessions[client_id] = sample_session(asyncio.get_running_loop().time())
    return directory, w1, sink2


def test_a_claim_without_waiting_takes_the_session_over_once_the_answer_names_its_holder() -> None:
    """A clean start without a will gets its CONNACK at once (``claim_without_waiting`` returns
    nothing to await); when the directory's answer names another worker, the session there is
    taken over (0x8E there) and handed to the callback, which ends it."""
    async def scenario(cluster: Cluster) -> None:
        directory, w1, sink2 = await session_held_on_w2(cluster, "c1")
        taken: list = []
        assert w1.sessions.claim_without_waiting("c1", taken.append) is None
        await until(lambda: taken)
        assert sink2.exported == ["c1"]
        assert taken[0].node == "w2" and taken[0].session.client_id == "c1"
        assert directory.owner("c1").node == "w1"
        assert not w1.sessions.windows   # a clean start keeps no hand-over window
    run(scenario)


def test_a_claim_without_waiting_of_a_connection_gone_before_the_answer_takes_nothing_over() -> None:
    """The connection that claimed without waiting closed before the answer, which names another
    worker (the client may be connected there now, having reached the directory first): nothing
    is taken over and the directory still names that worker."""
    async def scenario(cluster: Cluster) -> None:
        directory, w1, sink2 = await session_held_on_w2(cluster, "c2")
        taken: list = []
        w1.sessions.claim_without_waiting("c2", taken.append)
        w1.sessions.session_ended("c2")
        await until(lambda: not w1.sessions._release_when_answered and not w1.sessions._claim_tasks)
        await asyncio.wait_for(w1.barrier(), DEADLINE)
        assert (taken, sink2.exported) == ([], [])
        assert directory.owner("c2").node == "w2"
    run(scenario)


def test_a_session_ended_before_its_claim_was_answered_is_released_after_the_answer() -> None:
    """A client that connects (clean start, not waiting) and ends its session at once: the
    release must not overtake the claim (they travel on different sockets), or the directory
    would name this worker for that client id for good. The directory here takes up each
    claim request only once everything w1 sent over PUB/SUB before has been handled (a
    barrier), so a release sent before the answer would be handled first."""
    async def scenario(cluster: Cluster) -> None:
        sup_bus, _, _ = await cluster.add("sup", -1)
        node = DirectoryNode(sup_bus, lambda message: None)
        directory = node.directory
        (_, w1, _), _ = await cluster.add("w1", 1), await cluster.add("w2", 2)

        async def claims_after_what_w1_sent(sender: str, payload: bytes) -> bytes:
            await until(lambda: not w1.sessions._releases)   # gathered releases went out
            await asyncio.wait_for(w1.barrier(), DEADLINE)   # and were handled here
            return node._serve_claim(sender, payload)

        sup_bus.serve(CLAIM, claims_after_what_w1_sent)
        names = [f"brief-{n}" for n in range(50)]
        for name in names:
            w1.sessions.claim_without_waiting(name, lambda taken: None)
            w1.sessions.session_ended(name)
        w1.sessions.claim_without_waiting("stays", lambda taken: None)
        await until(lambda: "stays" in w1.sessions._claims and not w1.sessions._releases)
        await asyncio.wait_for(w1.barrier(), DEADLINE)   # the releases sent are handled by now
        assert [name for name in names if directory.owner(name) is not None] == []
        assert "stays" in w1.sessions._claims
    run(scenario)


def test_only_a_will_the_directory_keeps_is_cleared_over_the_bus() -> None:
    """A client whose claim carried no will leaves nothing to clear: its disconnect sends the
    directory nothing (a connection storm's every DISCONNECT did); a kept will is cleared once."""
    async def scenario(cluster: Cluster) -> None:
        sup_bus, _, _ = await cluster.add("sup", -1)
        DirectoryNode(sup_bus, lambda message: None)
        cleared: list[bytes] = []
        sup_bus.on(WILL_CLEARED, lambda sender, payload: cleared.append(payload))
        _, w1, _ = await cluster.add("w1", 1)
        w1.sessions.claim_without_waiting("plain", lambda taken: None)
        await w1.sessions.claim("persistent", clean_start=False)
        await w1.sessions.claim("willing", False, Will("will/w", b"w"), session_expiry=60)
        for client_id in ("plain", "persistent", "willing", "willing"):
            w1.sessions.will_cleared(client_id)
        await asyncio.wait_for(w1.barrier(), DEADLINE)
        assert cleared == [b"willing"]
    run(scenario)


def test_claims_no_connect_waits_for_gather_before_they_go() -> None:
    """Claims without waiting (a storm of clean starts) made over several loop iterations go as one
    request after a short gathering, not one request per iteration; a waiting claim goes at once."""
    async def scenario(cluster: Cluster) -> None:
        (w1_bus, w1, _), _ = await directory_and_two_workers(cluster)
        before = w1_bus.stats.requests_sent
        for n in range(3):
            w1.sessions.claim_without_waiting(f"gathered-{n}", lambda taken: None)
            await asyncio.sleep(0)
        assert w1_bus.stats.requests_sent == before   # still gathering
        await until(lambda: all(f"gathered-{n}" in w1.sessions._claims for n in range(3)))
        assert w1_bus.stats.requests_sent == before + 1
        w1.sessions.claim_without_waiting("gathered-3", lambda taken: None)
        assert await asyncio.wait_for(w1.sessions.claim("awaited", clean_start=False), 1.0) is None
        assert "gathered-3" in w1.sessions._claims   # it went with the awaited claim, at once
        assert w1_bus.stats.requests_sent == before + 2
    run(scenario)
