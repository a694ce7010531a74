"""The built-in auth hooks in a running broker, with real clients on real sockets:
Mosquitto password and ACL files, and the Mochi ledger."""

from __future__ import annotations

from pathlib import Path

import pytest

from kushi.hooks.ledger import LedgerHook
from kushi.hooks.mosquitto import MosquittoHook
from kushi.hooks.passwords import hash_password
from kushi.protocol.packets import Connect

ACL = """\
user alice
topic readwrite alice/#
topic read bob/#
user bob
topic readwrite bob/#
topic read alice/#
"""


@pytest.fixture
def mosquitto_broker(make_broker, tmp_path: Path):
    passwords = tmp_path / "passwd"
    passwords.write_text(f"alice:{hash_password('alice-pw')}\nbob:{hash_password('bob-pw')}\n")
    acl = tmp_path / "acl"
    acl.write_text(ACL)
    return make_broker(hooks=[MosquittoHook(passwords, acl)])


def with_login(client, username: str, password: str):
    client.client.username_pw_set(username, password)
    return client


@pytest.mark.parametrize("version", [4, 5])
def test_right_password_connects(mosquitto_broker, paho, version: int) -> None:
    client = with_login(paho(mosquitto_broker, "a1", version=version), "alice", "alice-pw")
    _, reason_code, _ = client.connect()
    assert reason_code.value == 0


def test_wrong_password_is_refused_with_0x86_in_v5(mosquitto_broker, paho) -> None:
    client = with_login(paho(mosquitto_broker, "a1", version=5), "alice", "bob-pw")
    _, reason_code, _ = client.connect(expect_success=False)
    assert reason_code.value == 0x86
    client.wait_disconnected()


@pytest.mark.parametrize("username, password", [("alice", b"wrong"), ("mallory", b"alice-pw"), (None, None)])
def test_bad_login_is_refused_with_return_code_4_in_v311(mosquitto_broker, raw, username, password) -> None:
    """On the wire: CONNACK 20 02 00 04 (bad user name or password), then close."""
    client = raw(mosquitto_broker, version=4)
    client.send(Connect(protocol_version=4, client_id="x", username=username, password=password))
    assert client.recv_bytes(4) == b"\x20\x02\x00\x04"
    assert client.expect_closed()


def test_acl_denies_a_publish_but_delivers_an_allowed_one(mosquitto_broker, paho) -> None:
    bob = with_login(paho(mosquitto_broker, "b1", version=5), "bob", "bob-pw")
    bob.connect()
    assert bob.subscribe("bob/#", qos=1) == [1]
    assert bob.subscribe("alice/#", qos=1) == [1]
    alice = with_login(paho(mosquitto_broker, "a1", version=5), "alice", "alice-pw")
    alice.connect()
    alice.publish("bob/inbox", b"forged", qos=1)      # alice may only read bob/#
    alice.publish("alice/status", b"online", qos=1)   # the positive control
    bob.expect_message("alice/status", b"online")
    bob.expect_no_message()


@pytest.mark.parametrize("version, refused", [(5, 0x87), (4, 0x80)])
def test_acl_refuses_a_subscription_outside_the_grants(mosquitto_broker, paho, version: int, refused: int) -> None:
    alice = with_login(paho(mosquitto_broker, "a1", version=version), "alice", "alice-pw")
    alice.connect()
    assert alice.subscribe_many([("secret/#", 0), ("bob/+", 1), ("#", 0)]) == [refused, 1, refused]


def test_ledger_login_and_acl(make_broker, paho) -> None:
    ledger = {
        "users": {"dev1": {"password": hash_password("d1"), "acl": {"devices/dev1/#": 3, "#": 0}}},
        "auth": [{"username": "viewer", "password": "view", "allow": True}],
        "acl": [{"username": "viewer", "filters": {"devices/#": 1}}],
    }
    running = make_broker(hooks=[LedgerHook(rules=ledger)])
    wrong = with_login(paho(running, "d", version=5), "dev1", "nope")
    assert wrong.connect(expect_success=False)[1].value == 0x86

    viewer = with_login(paho(running, "v", version=5), "viewer", "view")
    viewer.connect()
    assert viewer.subscribe("devices/#") == [0]
    device = with_login(paho(running, "d", version=5), "dev1", "d1")
    device.connect()
    assert device.subscribe("devices/dev2/#") == [0x87]
    device.publish("devices/dev2/cmd", b"forged", qos=1)
    device.publish("devices/dev1/temp", b"21", qos=1)
    viewer.expect_message("devices/dev1/temp", b"21")
    viewer.expect_no_message()
