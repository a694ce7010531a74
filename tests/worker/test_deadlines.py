"""DeadlineBuckets (kushi.worker.deadlines): the tick's connection timers, without a network.

The broker's keep-alive and connect-timeout tests (test_mqtt_connect.py,
test_mqtt_bad_input.py) check the timers over real sockets; these pin down the
invariant they rest on: a tick at ``now`` gets every item whose deadline has
passed, and no item whose second has not come.
"""

from __future__ import annotations

from kushi.worker.deadlines import DeadlineBuckets


class Item:
    """What the broker files is a connection; here, a name."""

    def __init__(self, name: str) -> None:
        self.name = name


def names(items: list[Item]) -> list[str]:
    return sorted(item.name for item in items)


def test_take_due_gives_what_was_filed_up_to_now_and_only_that() -> None:
    buckets: DeadlineBuckets[Item] = DeadlineBuckets()
    a, b, c = Item("a"), Item("b"), Item("c")
    buckets.file(a, 100.2)
    buckets.file(b, 100.9)
    buckets.file(c, 101.5)
    assert buckets.take_due(99.9) == []
    assert names(buckets.take_due(100.5)) == ["a", "b"], "the whole second 100 comes out"
    assert buckets.take_due(100.99) == [], "taken out once; the caller files again"
    assert names(buckets.take_due(103.0)) == ["c"]
    assert len(buckets) == 0


def test_a_later_deadline_keeps_the_earlier_filing() -> None:
    """A packet moves keep alive on: the item stays where it was and is asked then (lazily)."""
    buckets: DeadlineBuckets[Item] = DeadlineBuckets()
    conn = Item("conn")
    buckets.file(conn, 110.0)
    buckets.file(conn, 190.0)
    assert names(buckets.take_due(110.0)) == ["conn"]


def test_an_earlier_deadline_moves_the_item_so_none_passes_unseen() -> None:
    """Keep alive 1 s after a connect timeout of 10 s: the item is moved to the earlier second."""
    buckets: DeadlineBuckets[Item] = DeadlineBuckets()
    conn = Item("conn")
    buckets.file(conn, 110.0)
    buckets.file(conn, 101.5)
    assert names(buckets.take_due(101.6)) == ["conn"]
    assert buckets.take_due(200.0) == [], "and no longer in the later bucket"


def test_removed_items_never_come_out() -> None:
    buckets: DeadlineBuckets[Item] = DeadlineBuckets()
    closed, still_open = Item("closed"), Item("open")
    buckets.file(closed, 100.0)
    buckets.file(still_open, 100.0)
    buckets.remove(closed)
    buckets.remove(Item("never filed"))
    assert names(buckets.take_due(100.0)) == ["open"]


def test_filed_again_in_the_current_second_comes_out_at_the_next_tick() -> None:
    """A deadline still ahead within this second: filed again, it is not lost nor taken twice."""
    buckets: DeadlineBuckets[Item] = DeadlineBuckets()
    conn = Item("conn")
    buckets.file(conn, 100.7)
    assert names(buckets.take_due(100.3)) == ["conn"]
    buckets.file(conn, 100.7)
    assert names(buckets.take_due(100.5)) == ["conn"]
