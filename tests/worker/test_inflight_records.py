"""The in-flight records ``write_qos1_run`` makes without calling their classes
(``kushi.worker.delivery.sent_outbound`` / ``sent_run_outbound``): the same as the classes make."""

from __future__ import annotations

from typing import Any

from kushi.protocol.packets import Publish
from kushi.worker.delivery import sent_outbound, sent_run_outbound
from kushi.worker.session import Outbound, RunOutbound


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


def test_sent_outbound_sets_every_field_as_the_class_does() -> None:
    message = Publish("t", b"x", qos=1, packet_id=3)
    record = sent_outbound(message, 5.0, 7)
    assert type(record) is Outbound
    assert slot_values(record) == slot_values(Outbound(message, 5.0, 7, False, True))
    assert record == Outbound(message, 5.0, 7, sent=True)


def test_sent_run_outbound_sets_every_field_as_the_class_does() -> None:
    source = (object(), 2)
    record = sent_run_outbound(source, 5.0, 7)
    assert type(record) is RunOutbound
    assert slot_values(record) == slot_values(RunOutbound(source, 5.0, 7, False, True))
