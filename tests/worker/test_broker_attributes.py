"""Every attribute a Broker sets is a slot, so the interpreter reads it the fast way.

Without slots, CPython keeps the attributes of a class's instances as values beside keys the
class shares, up to 30 keys (fewer once instances exist); an attribute past that turns the
instance's attributes into a plain dict, and every ``self.options``, ``self.connections``,
``self.hooks`` of the message and connect paths gets dearer (a Broker at 30 attributes cost a
connect 1.8k instructions more than at 28: callgrind, benchmarks/profile_connect.py).
Nothing fails when that happens, so these tests hold every attribute to a slot. What
replaces a method for a while (the async filters, a hand-over's ``deliver``) goes to the
instance's ``__dict__``, as any instance attribute would.
"""

from __future__ import annotations

import asyncio

import kushi
from kushi.worker.broker import Broker


def test_a_new_broker_keeps_its_attributes_in_slots():
    loop = asyncio.new_event_loop()
    try:
        broker = Broker(kushi.Options(), loop=loop)
        assert vars(broker) == {}
        assert all(hasattr(broker, name) for name in Broker.__slots__)
    finally:
        loop.close()


def test_a_serving_broker_keeps_its_attributes_in_slots(broker, paho):
    """After clients connected, subscribed and published at QoS 0, 1 and 2, and one was taken
    over: what the message and connect paths set stays in slots."""
    subscriber = paho.connected(broker, "sub", 5)
    subscriber.subscribe("slots/#", 2)
    publisher = paho.connected(broker, "pub", 4)
    for qos in (0, 1, 2):
        publisher.publish("slots/a", b"m", qos=qos)
        subscriber.expect_message("slots/a", b"m")
    paho.connected(broker, "pub", 4)
    assert broker.sync(lambda: dict(vars(broker.server.broker))) == {}


def test_a_method_can_still_be_replaced_on_one_broker():
    """The async filters and a hand-over replace methods of one instance (its ``__dict__``)."""
    loop = asyncio.new_event_loop()
    try:
        broker = Broker(kushi.Options(), loop=loop)
        broker.deliver = print   # type: ignore[method-assign]
        assert broker.deliver is print
        del broker.deliver
        assert broker.deliver.__func__ is Broker.deliver   # the class's method again
    finally:
        loop.close()
