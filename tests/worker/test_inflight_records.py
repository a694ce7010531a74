"""The in-flight record ``write_qos1_run`` makes without calling its class
(``kushi.worker.delivery.new_outbound``): the same as ``Outbound(...)`` makes."""

from __future__ import annotations

from typing import Any

from kushi.protocol.packets import Publish
from kushi.worker.delivery import new_outbound
from kushi.worker.session import Outbound


def slot_values(record: Any) -> dict[tuple[str, str], Any]:
    """Every slot of ``record``'s classes, read through the slot itself ("<unset>" if never set)."""
    values = {}
    for cls in type(record).__mro__:
        for name in getattr(cls, "__slots__", ()):
            try:
                values[(cls.__name__, name)] = cls.__dict__[name].__get__(record)
            except AttributeError:
                values[(cls.__name__, name)] = "<unset>"
    return values


def test_new_outbound_sets_every_field_as_the_class_does() -> None:
    message = Publish("t", b"x", qos=1, packet_id=3)
    for args in [(message, 5.0), (message, 5.0, 7, False, True), (message, 5.0, 9, True, False)]:
        record = new_outbound(*args)
        assert type(record) is Outbound
        assert slot_values(record) == slot_values(Outbound(*args))
        assert record == Outbound(*args)
