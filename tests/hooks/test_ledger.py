"""LedgerHook: Mochi's auth ledger format and rules (tables ported from Mochi's
ledger_test.go), hashed passwords, strict parsing, and reload."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest
import yaml

from kushi.errors import ConfigurationError
from kushi.hooks.ledger import LedgerHook, parse_ledger, remote_text, value_matches
from kushi.hooks.manager import HookManager
from kushi.hooks.passwords import hash_password
from kushi.protocol.packets import Connect

# Mochi's checkLedger (hooks/auth/ledger_test.go), written as a ledger file.
MOCHI_TEST_LEDGER = """
users:
  mochi-co:
    password: melon
    acl:
      d/+/f: 0
      mochi-co/#: 3
      readonly: 1
  suspended-username:
    password: any
    disallow: true
  mochi:
    acl:
      special/mochi: 1
      secret/mochi: 0
      ignored: 3
auth:
  - username: banned-user
  - remote: 127.0.0.1
    allow: true
  - remote: 123.123.123.123
  - username: not-mochi
    remote: 111.144.155.166
  - remote: 111.*
    allow: true
  - username: mochi
    password: melon
    allow: true
  - username: mochi-co
    password: melon
    allow: false
acl:
  - username: mochi
    filters:
      a/b/c: 0
      d/+/f: 0
      mochi/#: 3
      updates/#: 2
      readonly: 1
      ignored: 0
  - remote: localhost
    filters:
      $SYS/#: 1
  - username: admin
    filters:
      $SYS/#: 1
  - remote: 001.002.003.004
  - filters:
      $SYS/#: 0
"""

# Mochi's examples/auth/encoded/auth.yaml, as shipped.
MOCHI_EXAMPLE_YAML = """auth:
    - username: peach
      password: password1
      allow: true
    - username: melon
      password: password2
      allow: true
    # - remote: 127.0.0.1:*
    #   allow: true
acl:
# 0 = deny, 1 = read only, 2 = write only, 3 = read and write
    - remote: 127.0.0.1:*
    - username: melon
      filters:
        melon/#: 3
        updates/#: 2
    - filters:
        '#': 1
        updates/#: 0"""


@pytest.fixture(scope="module")
def mochi_ledger():
    return parse_ledger(MOCHI_TEST_LEDGER)


def test_rule_string_matching_as_mochi() -> None:
    assert value_matches("*", "any") and value_matches("*", "")
    assert value_matches("", "any") and value_matches("", "")
    assert not value_matches("no", "any") and not value_matches("no", "")
    assert value_matches("111.*", "111.0.0.1")
    assert not value_matches("111.*", "111."), "a prefix rule needs a longer value, as in Mochi"
    assert not value_matches("111.*", "112.0.0.1")


@pytest.mark.parametrize("username, password, remote, allowed", [
    ("mochi", "", "127.0.0.1", True),             # allow all local 127.0.0.1
    ("mochi", "melon", "", True),                 # allow username/password
    ("mochi", "bad-pass", "", False),             # deny username/password
    ("mochi", "bad-pass", "127.0.0.1", True),     # local rule comes first
    ("not-mochi", "", "111.144.155.166", False),  # deny client from address
    ("mochi", "", "111.0.0.1", True),             # allow remote wildcard
    ("banned-user", "", "127.0.0.1", False),      # never allow username
    ("mochi-co", "melon", "", True),              # users map before the rules
    ("suspended-user", "any", "", False),         # no rule lets this one in
    ("suspended-username", "any", "", False),     # disallow in the users map
])
def test_authentication_table_from_mochi(mochi_ledger, username, password, remote, allowed) -> None:
    assert mochi_ledger.auth_ok("id", username, password, remote) is allowed


@pytest.mark.parametrize("username, remote, topic, write, allowed", [
    ("", "", "default/acl/write/access", True, True),   # nothing matches: allowed
    ("", "", "default/acl/read/access", False, True),
    ("mochi", "", "a/b/c", False, False),                # deny on a literal filter
    ("mochi", "", "d/j/f", False, False),                # deny on a wildcard filter
    ("mochi", "", "mochi/read/write", True, True),
    ("mochi", "", "updates/no/reading", False, False),   # write-only
    ("mochi", "", "updates/mochi", False, False),
    ("mochi", "", "updates/mochi", True, True),
    ("mochi", "", "readonly", True, False),
    ("mochi", "", "readonly", False, True),
    ("", "localhost", "$SYS/test", False, True),
    ("admin", "", "$SYS/test", False, True),
    ("mochi", "", "$SYS/test", False, False),
    ("", "001.002.003.004", "any/path", True, True),     # a rule with no filters allows all
    ("mochi", "", "secret/mochi", True, False),          # the user's own acl first
    ("mochi", "", "any/mochi", True, True),
    ("mochi", "", "special/mochi", True, False),
    ("mochi", "", "special/mochi", False, True),
    ("mochi", "", "ignored", True, True),                # the user's acl beats the rules
    # Differs from Mochi on purpose: with MQTT matching "updates/#" matches "updates",
    # so the write-only rule decides (Mochi's matcher lets this read through).
    ("mochi", "", "updates", False, False),
])
def test_acl_table_from_mochi(mochi_ledger, username, remote, topic, write, allowed) -> None:
    assert mochi_ledger.acl_ok("id", username, remote, topic, write) is allowed


def test_a_literal_filter_does_not_match_deeper_topics(mochi_ledger) -> None:
    """Mochi's matcher lets filter 'readonly' match 'readonly/x'; MQTT matching does not."""
    assert mochi_ledger.acl_ok("id", "mochi", "", "readonly/x", True) is True  # no rule: default allow
    assert mochi_ledger.acl_ok("id", "mochi", "", "readonly", True) is False


def test_a_subscription_never_brings_a_message_the_delivery_check_would_refuse(mochi_ledger) -> None:
    assert mochi_ledger.acl_ok("id", "mochi", "", "mochi/+/x", False) is True
    assert mochi_ledger.acl_ok("id", "mochi", "", "$share/g/readonly", False) is True
    assert mochi_ledger.acl_ok("id", "mochi", "", "d/+/f", False) is False
    assert mochi_ledger.acl_ok("id", "mochi", "", "d/#", False) is False, "could bring d/x/f"
    assert mochi_ledger.acl_ok("id", "mochi", "", "special/+", False) is False, "only partly decided by special/mochi: refused, conservatively"
    assert mochi_ledger.acl_ok("id", "mochi-co", "", "mochi-co/#", False) is True
    assert mochi_ledger.acl_ok("id", "mochi-co", "", "#", False) is False, "d/+/f is denied to mochi-co"
    assert mochi_ledger.acl_ok("id", "", "", "$SYS/#", False) is False


def test_subscription_check_follows_mochis_grant_first_order() -> None:
    read_all = parse_ledger("acl:\n  - filters:\n      '#': 1\n      updates/#: 0\n")
    assert read_all.acl_ok("id", "u", "", "#", False) is True
    assert read_all.acl_ok("id", "u", "", "updates/x", False) is True, "the grant comes first, as in Mochi"
    deny_only = parse_ledger("acl:\n  - filters:\n      secret/#: 0\n")
    assert deny_only.acl_ok("id", "u", "", "#", False) is False
    assert deny_only.acl_ok("id", "u", "", "public/#", False) is True


def test_mochi_example_file_yaml_and_json_agree(tmp_path: Path, make_client) -> None:
    yaml_file = tmp_path / "auth.yaml"
    yaml_file.write_text(MOCHI_EXAMPLE_YAML)
    json_file = tmp_path / "auth.json"
    json_file.write_text(json.dumps(yaml.safe_load(MOCHI_EXAMPLE_YAML), indent=2))
    for path in (yaml_file, json_file):
        hook = LedgerHook(path)
        melon = make_client(username="melon", remote_address=("10.0.0.5", 4000))
        other = make_client(username="peach", remote_address=("10.0.0.6", 4000))
        local = make_client(username="x", remote_address=("127.0.0.1", 4000))
        assert hook.on_connect_authenticate(melon, Connect(username="melon", password=b"password2"))
        assert not hook.on_connect_authenticate(melon, Connect(username="melon", password=b"password1"))
        assert not hook.on_connect_authenticate(local, Connect(username="x", password=b"x"))
        assert hook.on_acl_check(local, "anything", True), "127.0.0.1:* has no filters: all allowed"
        assert hook.on_acl_check(melon, "melon/a", True) and hook.on_acl_check(melon, "updates/a", True)
        assert not hook.on_acl_check(melon, "updates/a", False)
        assert hook.on_acl_check(other, "news", False)
        assert not hook.on_acl_check(other, "news", True), "everyone else only reads"


def test_remote_text_is_written_as_mochi_does() -> None:
    assert remote_text(("127.0.0.1", 1883)) == "127.0.0.1:1883"
    assert remote_text(("::1", 1883, 0, 0)) == "[::1]:1883"
    assert remote_text("/run/kushi.sock") == "/run/kushi.sock"
    assert remote_text(None) == ""


def test_hashed_passwords_in_users_and_auth_rules(make_client) -> None:
    hook = LedgerHook(rules={
        "users": {"alice": {"password": hash_password("wonderland")}},
        "auth": [{"username": "bob", "password": hash_password("builder", iterations=1000), "allow": True}],
    })
    alice, bob = make_client(username="alice"), make_client(username="bob")
    assert hook.on_connect_authenticate(alice, Connect(username="alice", password=b"wonderland"))
    assert not hook.on_connect_authenticate(alice, Connect(username="alice", password=b"Wonderland"))
    assert not hook.on_connect_authenticate(alice, Connect(username="alice", password=None))
    assert hook.on_connect_authenticate(bob, Connect(username="bob", password=b"builder"))
    assert not hook.on_connect_authenticate(bob, Connect(username="bob", password=b"builder!"))


def test_plain_user_passwords_must_be_equal_not_prefix_matched() -> None:
    ledger = parse_ledger("users:\n  u:\n    password: 'abc*'\n")
    assert ledger.auth_ok("id", "u", "abc*", "") is True
    assert ledger.auth_ok("id", "u", "abcdef", "") is False


def test_the_hook_works_through_the_manager(make_client) -> None:
    manager = HookManager()
    manager.add(LedgerHook(rules=MOCHI_EXAMPLE_YAML))
    assert manager.provides("on_connect_authenticate") and manager.provides("on_acl_check")
    client = make_client(username="peach", remote_address=("192.0.2.7", 50000))
    assert asyncio.run(manager.on_connect_authenticate(client, Connect(username="peach", password=b"password1")))
    assert not asyncio.run(manager.on_connect_authenticate(client, Connect(username="peach", password=b"nope")))
    assert not manager.on_acl_check(client, "updates/x", True)


@pytest.mark.parametrize("document, message", [
    ("acls:\n  - filters: {'#': 0}\n", "unknown key"),
    ("acl:\n  - filters: {'#': 4}\n", "must be 0"),
    ("acl:\n  - filters: {'#': read}\n", "must be 0"),
    ("auth:\n  - username: a\n    allow: yes please\n", "true or false"),
    ("auth:\n  - usernme: a\n", "unknown key"),
    ("auth: {username: a}\n", "must be a list"),
    ("users:\n  a:\n    password: '$7$101$bad$bad'\n", "password"),
    ("   \n", "empty"),
    ("{not json", "not valid"),
    ("- just\n- a list\n", "expected a mapping"),
])
def test_bad_ledgers_are_refused_with_a_reason(document: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        parse_ledger(document)


def test_first_load_failure_raises(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read"):
        LedgerHook(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("auth: [\n")
    with pytest.raises(ConfigurationError, match="broken.yaml"):
        LedgerHook(broken)
    with pytest.raises(ConfigurationError, match="exactly one"):
        LedgerHook()


def test_reload_applies_new_rules_and_keeps_old_ones_on_a_broken_file(tmp_path: Path, make_client, caplog) -> None:
    path = tmp_path / "ledger.yaml"
    path.write_text("auth:\n  - username: a\n    allow: true\nacl:\n  - filters: {'secret/#': 0}\n")
    hook = LedgerHook(path)
    client = make_client(username="a")
    connect = Connect(username="a")
    assert hook.on_connect_authenticate(client, connect)
    assert not hook.on_acl_check(client, "secret/x", False)

    path.write_text("auth:\n  - username: b\n    allow: true\n")  # a valid file, different rules
    assert hook.reload() is True
    assert not hook.on_connect_authenticate(client, connect)
    assert hook.on_acl_check(client, "secret/x", False)

    path.write_text("auth:\n  - username: a\n    allow: true\nacl: [\n")  # truncated mid-write
    with caplog.at_level(logging.ERROR, logger="kushi.hooks"):
        assert hook.reload() is False
    assert not hook.on_connect_authenticate(client, connect), "the old rules must stay in force"
    assert any("keeping the rules loaded before" in record.message for record in caplog.records)

    path.unlink()
    assert hook.reload() is False
    assert not hook.on_connect_authenticate(client, connect)
