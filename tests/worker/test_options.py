"""Options (kushi.worker.options): what a SIGHUP reload may change in place, and what it may not."""

from __future__ import annotations

import pytest

from kushi.errors import ConfigurationError
from kushi.worker.options import RESTART_ONLY, Options


def test_changes_split_into_in_place_and_waiting_for_a_restart() -> None:
    running = Options(workers=2, maximum_qos=2, max_clients=10)
    new = Options(workers=4, maximum_qos=1, max_clients=10, sys_interval=3)
    assert running.changes_to(new) == ({"maximum_qos": 1}, ["workers", "sys_interval"])


def test_no_change_is_empty() -> None:
    assert Options().changes_to(Options()) == ({}, [])


def test_change_sets_fields_in_place_so_every_holder_of_the_options_sees_them() -> None:
    options = Options()
    held_by_the_broker = options
    options.change({"maximum_qos": 1, "max_queued_messages": 5})
    assert (held_by_the_broker.maximum_qos, held_by_the_broker.max_queued_messages) == (1, 5)


@pytest.mark.parametrize("name", sorted(RESTART_ONLY))
def test_a_restart_only_option_is_refused_in_place(name: str) -> None:
    with pytest.raises(ConfigurationError, match=name):
        Options().change({name: 1})
