"""BusFabric over a real bus: three nodes in one process (each with its own ZeroMQ context).

The multi-process behaviour is covered by the supervisor tests; here the
fabric's routing, last-writer-wins and snapshot logic are checked directly.
"""

from __future__ import annotations

import asyncio

from fabric_support import DEADLINE, Cluster, after_handling, before_handling, run, until

from kushi.cluster.fabric import BARRIER, BARRIER_ACK
from kushi.cluster.wire import decode_message, encode_message
from kushi.protocol.packets import Publish
from kushi.protocol.properties import Properties


def test_bus_form_keeps_every_property() -> None:
    """A message crosses the bus as MQTT 5 bytes: topic, payload, QoS, retain and properties survive."""
    properties = Properties(user_properties=(("k", "v"), ("k", "w")), content_type="text/plain",
                            response_topic="r/t", correlation_data=b"\x00\x01",
                            message_expiry_interval=30, payload_format_indicator=1)
    message = Publish("a/b", b"payload", qos=2, retain=True, packet_id=7, properties=properties)
    back = decode_message(encode_message(message))
    assert (back.topic, bytes(back.payload), back.qos, back.retain, back.properties) == \
        ("a/b", b"payload", 2, True, properties)


def test_publish_goes_once_to_each_interested_node_only() -> None:
    """Interest gossip routes a publish to the nodes with matching filters, once each."""
    async def scenario(cluster: Cluster) -> None:
        _, w0, sink0 = await cluster.add("w0", 0)
        _, w1, sink1 = await cluster.add("w1", 1)
        _, w2, sink2 = await cluster.add("w2", 2)
        w1.interest_added("a/+")
        w1.interest_added("a/#")          # overlapping filters: still one copy for w1
        w2.interest_added("other/#")
        await until(lambda: len(w0.interest) == 3)
        w0.forward(Publish("a/b", b"1", qos=1, packet_id=3))
        w0.forward(Publish("a/b", b"2", qos=0))
        await until(lambda: len(sink1.delivered) == 2)
        assert [bytes(m.payload) for m in sink1.delivered] == [b"1", b"2"]
        assert sink2.delivered == [] and w0.stats.forwarded == 2
        w1.interest_removed("a/+")
        w1.interest_removed("a/#")
        await until(lambda: len(w0.interest) == 1)
        w0.forward(Publish("a/b", b"3"))
        w0.forward(Publish("other/x", b"4"))
        await until(lambda: len(sink2.delivered) == 1)
        assert len(sink1.delivered) == 2
    run(scenario)


def test_concurrent_retains_converge_and_clear_deletes_everywhere() -> None:
    """[invariant 3] Writes to one topic on different nodes resolve the same way on every node."""
    async def scenario(cluster: Cluster) -> None:
        nodes = [await cluster.add(f"w{i}", i) for i in range(3)]
        for round_ in range(20):  # all three write the same topic in the same loop iteration
            for bus, fabric, sink in nodes:
                message = Publish("r/t", f"{bus.name}:{round_}".encode(), retain=True)
                sink.apply_retained(message)   # what the broker does before telling the fabric
                fabric.retained_changed(message)
        await until(lambda: all(f.stats.retained_applied + f.stats.retained_ignored == 40
                                for _, f, _ in nodes))
        finals = {bytes(sink.retained["r/t"].payload) for _, _, sink in nodes}
        assert len(finals) == 1, finals
        assert finals.pop().endswith(b":19")  # the last round wins; which node's depends on the clock
        bus, fabric, sink = nodes[1]
        clear = Publish("r/t", b"", retain=True)
        sink.apply_retained(clear)
        fabric.retained_changed(clear)
        await until(lambda: all("r/t" not in s.retained for _, _, s in nodes))
    run(scenario)


def test_joining_node_takes_a_snapshot_of_interest_and_retained() -> None:
    """[invariant 5] A node that joins late learns the interest table and retained messages first."""
    async def scenario(cluster: Cluster) -> None:
        _, w0, sink0 = await cluster.add("w0", 0)
        _, w1, sink1 = await cluster.add("w1", 1)
        w1.interest_added("x/#")
        w1.interest_added("$share/g/y/#")
        kept = Publish("keep/me", b"v", retain=True, properties=Properties(message_expiry_interval=100))
        w0.retained_changed(kept)
        w0.retained_changed(Publish("gone", b"v", retain=True))
        w0.retained_changed(Publish("gone", b"", retain=True))
        await until(lambda: "keep/me" in sink1.retained and len(w0.interest) == 2)
        _, w2, sink2 = await cluster.add("w2", 2)
        assert set(sink2.retained) == {"keep/me"}
        assert 0 < sink2.retained["keep/me"].properties.message_expiry_interval <= 100
        w2.forward(Publish("x/1", b"a"))
        w2.forward(Publish("y/1", b"b"))
        await until(lambda: len(sink1.delivered) == 2)
    run(scenario)


def test_interest_of_a_node_that_left_is_dropped() -> None:
    """[invariant 6] When a node is forgotten, no interest entry of it remains anywhere."""
    async def scenario(cluster: Cluster) -> None:
        bus0, w0, _ = await cluster.add("w0", 0)
        _, w1, _ = await cluster.add("w1", 1)
        bus2, w2, _ = await cluster.add("w2", 2)
        w1.interest_added("a/#")
        w1.interest_added("$share/g/a/#")
        await until(lambda: len(w0.interest) == 2 and len(w2.interest) == 2)
        bus0.forget("w1")  # the registrar saw w1 die: it forgets it and tells the others
        assert len(w0.interest) == 0
        await until(lambda: len(w2.interest) == 0)
        assert "w1" not in bus2.peers
    run(scenario)


def test_barrier_returns_once_every_node_has_applied_earlier_gossip() -> None:
    """After ``await barrier()`` the interest just added is known on every other node."""
    async def scenario(cluster: Cluster) -> None:
        nodes = [await cluster.add(f"w{i}", i) for i in range(3)]
        _, w1, _ = nodes[1]
        for round_ in range(5):
            w1.interest_added(f"t/{round_}")
            await asyncio.wait_for(w1.barrier(), DEADLINE)
            for _, other, _ in (nodes[0], nodes[2]):
                assert {key for key, _ in other.interest.match(f"t/{round_}")} == {"w1"}
    run(scenario)


def test_a_barrier_answer_comes_after_the_answering_nodes_earlier_gossip() -> None:
    """When w0 handles w1's answer to its barrier, it has handled what w1 queued before
    answering: here a message forwarded to w0, then a retained change (a broadcast, which the
    bus batches apart from what goes to w0 alone). A new subscription looks its retained
    messages up then (kushi.worker.subscriptions)."""
    async def scenario(cluster: Cluster) -> None:
        bus0, w0, sink0 = await cluster.add("w0", 0)
        bus1, w1, _ = await cluster.add("w1", 1)
        w0.interest_added("x/#")
        await asyncio.wait_for(w0.barrier(), DEADLINE)

        def publish_on_w1() -> None:
            w1.forward(Publish("x/1", b"live"))
            w1.retained_changed(Publish("r/t", b"retained", retain=True))
        before_handling(bus1, BARRIER, publish_on_w1)
        retained_at_answer: list[bool] = []
        after_handling(bus0, BARRIER_ACK, lambda: retained_at_answer.append("r/t" in sink0.retained))
        await asyncio.wait_for(w0.barrier(), DEADLINE)
        assert retained_at_answer == [True]
        assert [bytes(message.payload) for message in sink0.delivered] == [b"live"]
    run(scenario)


def test_live_retained_topics_are_those_routed_here_while_watched() -> None:
    """``watch_live_retained`` notes the topics of the retained messages this node routes live
    (changed here, or forwarded here), not those only gossiped, nor any after ``close()``."""
    async def scenario(cluster: Cluster) -> None:
        _, w0, sink0 = await cluster.add("w0", 0)
        _, w1, _ = await cluster.add("w1", 1)
        w0.interest_added("a/#")
        await asyncio.wait_for(w0.barrier(), DEADLINE)
        live = w0.watch_live_retained()
        w0.retained_changed(Publish("local/t", b"v", retain=True))
        forwarded = Publish("a/forwarded", b"v", retain=True)
        w1.retained_changed(forwarded)
        w1.forward(forwarded)
        w1.retained_changed(Publish("b/gossiped", b"v", retain=True))   # no interest of w0
        w1.forward(Publish("a/not-retained", b"v"))
        await asyncio.wait_for(w0.barrier(), DEADLINE)
        assert "b/gossiped" in sink0.retained and len(sink0.delivered) == 2
        live.close()
        w0.retained_changed(Publish("local/after", b"v", retain=True))
        assert live.topics == {"local/t", "a/forwarded"}
    run(scenario)


def test_interest_is_known_everywhere_after_its_barrier_or_the_one_under_way() -> None:
    """``known_everywhere``: a filter told since the last barrier gets a new barrier; asked again
    while that one is under way, the same; once it is done, nothing to wait for."""
    async def scenario(cluster: Cluster) -> None:
        _, w0, _ = await cluster.add("w0", 0)
        _, w1, _ = await cluster.add("w1", 1)
        assert w0.known_everywhere(["a/#"]) is None          # no local interest
        w0.interest_added("a/#")
        first = w0.known_everywhere(["a/#"])
        assert first is not None and not first.done()
        assert w0.known_everywhere(["b", "a/#"]) is first    # the barrier under way
        w0.interest_added("c")
        second = w0.known_everywhere(["a/#", "c"])
        assert second is not first                           # "c" needs a barrier of its own
        assert w0.known_everywhere(["a/#"]) is first
        await asyncio.wait_for(second, DEADLINE)
        assert first.done()                                  # answered in order
        assert w0.known_everywhere(["a/#", "c"]) is None
        assert {key for key, _ in w1.interest.match("c")} == {"w0"}
    run(scenario)


def test_shared_group_turns_go_round_the_workers_with_members() -> None:
    """[invariant 4, fabric side] Each message of a group goes to one worker with members, in turn."""
    async def scenario(cluster: Cluster) -> None:
        _, w0, _ = await cluster.add("w0", 0)
        _, w1, _ = await cluster.add("w1", 1)
        _, w2, _ = await cluster.add("w2", 2)
        w1.interest_added("$share/g/a/#")
        w2.interest_added("$share/g/a/#")
        w2.interest_added("$share/other/a/#")
        await asyncio.wait_for(w2.barrier(), DEADLINE)
        await asyncio.wait_for(w1.barrier(), DEADLINE)
        picks = [w0.pick_shared("g", "a/#", has_local_member=True) for _ in range(6)]
        assert picks == ["w1", "w2", None, "w1", "w2", None]
        assert w0.pick_shared("nobody", "a/#", has_local_member=False) is None
        w1.interest_removed("$share/g/a/#")
        await asyncio.wait_for(w1.barrier(), DEADLINE)
        assert {w0.pick_shared("g", "a/#", has_local_member=False) for _ in range(4)} == {"w2"}
        cluster.nodes["w0"][0].forget("w2")
        assert w0.pick_shared("g", "a/#", has_local_member=False) is None
        assert w0.pick_shared("other", "a/#", has_local_member=False) is None
    run(scenario)


def test_a_message_keeps_its_bus_id_whichever_comes_first_routing_or_forwarding() -> None:
    """[invariant 1] A hand-over's forwarder asks the id of the message it forwards; the direct
    copies carry the same one, whether the local routing ran before ``forward`` (the plain
    broker), after it or after the remote delivery call (coroutine filters route in a task)."""
    async def scenario(cluster: Cluster) -> None:
        _, w0, _ = await cluster.add("w0", 0)
        _, w1, sink1 = await cluster.add("w1", 1)
        _, w2, _ = await cluster.add("w2", 2)
        w2.interest_added("t/#")
        await asyncio.wait_for(w2.barrier(), DEADLINE)
        routed_first = Publish("t/1", b"routed first")
        early_id = w1.message_id(routed_first)       # the forwarder, then forward
        w1.forward(routed_first)
        w1.keep_ids = True                            # forwarders are on w1 now
        forwarded_first = Publish("t/2", b"forwarded first")
        w1.forward(forwarded_first)                   # forward, then (later) the forwarder
        assert w1.message_id(forwarded_first) == ("w1", early_id[1] + 1)
        seen_on_w1: list = []
        sink1.deliver_remote = seen_on_w1.append      # a delivery that routes later
        w1.interest_added("t/#")
        await asyncio.wait_for(w1.barrier(), DEADLINE)
        w0.forward(Publish("t/3", b"from w0"))
        await until(lambda: bool(seen_on_w1))
        assert w1.message_id(seen_on_w1[0])[0] == "w0"   # its origin's id, not a new one of w1
        w1.forget_ids()
        assert w1.message_id(Publish("t/4", b"x"))[0] == "w1"
    run(scenario)
