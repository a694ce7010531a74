"""examples/acl_example.py, run as a user runs it: each client only in ``clients/<its id>/#``.

A refused PUBLISH gets PUBACK 0x87 (v5) and reaches nobody; a refused filter
gets 0x87 in the SUBACK (0x80 in 3.1.1). Every refusal is checked beside an
allowed action of the same client, so the test cannot pass by refusing all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from acks import NOT_AUTHORIZED, puback_reason
from example_process import ExampleProcess


@pytest.fixture
def broker(run_example: Callable[..., ExampleProcess]) -> ExampleProcess:
    """The ACL example on a free port: the broker under test."""
    return run_example("acl_example.py", "--tcp", "127.0.0.1:0")


def test_subscribe_inside_the_own_subtree_only(broker: ExampleProcess, paho: Any) -> None:
    alice = paho.connected(broker, "alice", version=5)
    assert alice.subscribe("clients/alice/#", qos=1) == [1]
    assert alice.subscribe("clients/alice/+/temperature", qos=0) == [0]
    for outside in ("clients/bob/#", "clients/+/inbox", "clients/#", "#", "$share/g/clients/bob/x"):
        assert alice.subscribe(outside, qos=1) == [NOT_AUTHORIZED], outside
    assert alice.subscribe("$share/g/clients/alice/x", qos=1) == [1]


def test_v311_refused_subscription_gets_0x80(broker: ExampleProcess, paho: Any) -> None:
    alice = paho.connected(broker, "alice", version=4)
    assert alice.subscribe_many([("clients/alice/a", 1), ("clients/bob/a", 1)]) == [1, 0x80]


def test_publish_outside_the_subtree_is_refused_and_not_delivered(broker: ExampleProcess, paho: Any) -> None:
    bob = paho.connected(broker, "bob", version=5)
    assert bob.subscribe("clients/bob/#", qos=1) == [1]
    alice = paho.connected(broker, "alice", version=5)

    assert puback_reason(alice, "clients/bob/inbox", b"intrusion") == NOT_AUTHORIZED
    assert puback_reason(alice, "clients/alice/outbox", b"mine") == 0
    # bob's own message after alice's refused one: it must be the first bob receives
    assert puback_reason(bob, "clients/bob/inbox", b"from bob") == 0
    bob.expect_message("clients/bob/inbox", b"from bob")
    bob.expect_no_message()


def test_a_client_id_holding_a_slash_cannot_reach_into_another_subtree(
        broker: ExampleProcess, paho: Any) -> None:
    """Client id "alice/inbox" would otherwise own clients/alice/inbox/#, inside alice's subtree."""
    sneaky = paho.connected(broker, "alice/inbox", version=5)
    assert puback_reason(sneaky, "clients/alice/inbox", b"x") == NOT_AUTHORIZED
    assert sneaky.subscribe("clients/alice/inbox/#", qos=1) == [NOT_AUTHORIZED]
    plain = paho.connected(broker, "alice", version=5)   # the same actions are alice's own
    assert puback_reason(plain, "clients/alice/inbox", b"x") == 0
