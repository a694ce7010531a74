"""Mosquitto compatibility: password files ($7$ PBKDF2-SHA512, $6$ SHA512),
the ACL file format and its rules, and reloading both."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from kushi.errors import ConfigurationError
from kushi.hooks.manager import HookManager
from kushi.hooks.mosquitto import AclRules, MosquittoHook, parse_acl_file, parse_password_file
from kushi.hooks.passwords import PasswordHash, hash_password
from kushi.protocol.packets import Connect


# ---- a password file writer, done the way mosquitto_passwd does it ---------------
# (common/password_mosq.c: "$%d$%d$%s$%s" hashtype, iterations, base64 salt, base64 hash)

def mosquitto_pbkdf2_line(user: str, password: str, iterations: int = 101, salt_length: int = 12) -> str:
    salt = os.urandom(salt_length)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, 64)
    return f"{user}:$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def mosquitto_sha512_line(user: str, password: str, salt_length: int = 12) -> str:
    salt = os.urandom(salt_length)
    digest = hashlib.sha512(password.encode() + salt).digest()
    return f"{user}:$6${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def write(path: Path, *lines: str) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def authenticate(hook: MosquittoHook, make_client, username: str | None, password: bytes | None) -> bool:
    return hook.on_connect_authenticate(make_client(username=username),
                                        Connect(username=username, password=password))


@pytest.mark.parametrize("line", [
    mosquitto_pbkdf2_line("alice", "s3cret"),
    mosquitto_pbkdf2_line("alice", "s3cret", iterations=1000, salt_length=64),
    mosquitto_sha512_line("alice", "s3cret"),
    mosquitto_sha512_line("alice", "s3cret", salt_length=64),
])
def test_password_hashes_written_as_mosquitto_does_verify(tmp_path: Path, make_client, line: str) -> None:
    hook = MosquittoHook(password_file=write(tmp_path / "passwd", "# users", "", line))
    assert authenticate(hook, make_client, "alice", b"s3cret")
    assert not authenticate(hook, make_client, "alice", b"s3cre")
    assert not authenticate(hook, make_client, "alice", None)
    assert not authenticate(hook, make_client, "bob", b"s3cret")


@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="mosquitto_passwd is not installed")
def test_a_file_made_by_the_real_mosquitto_passwd(tmp_path: Path, make_client) -> None:
    path = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(path), "alice", "wonder land"], check=True)
    subprocess.run(["mosquitto_passwd", "-H", "sha512", "-b", str(path), "bob", "bu1lder"], check=True)
    schemes = sorted(line.split("$")[1] for line in path.read_text().splitlines())
    assert schemes == ["6", "7"]
    hook = MosquittoHook(password_file=path)
    assert authenticate(hook, make_client, "alice", b"wonder land")
    assert authenticate(hook, make_client, "bob", b"bu1lder")
    assert not authenticate(hook, make_client, "alice", b"bu1lder")
    assert not authenticate(hook, make_client, "bob", b"wonder land")


def test_hash_password_round_trips() -> None:
    encoded = hash_password("pässword")
    assert encoded.startswith("$7$101$")
    parsed = PasswordHash.parse(encoded)
    assert parsed.verify("pässword".encode()) and not parsed.verify(b"password")
    assert parsed.encode() == encoded


def test_the_hash_command_prints_a_hash_of_the_password_typed_twice(monkeypatch, capsys) -> None:
    import getpass

    from kushi.hooks import passwords

    monkeypatch.setattr(getpass, "getpass", lambda prompt="": "typed")
    passwords.main()
    assert PasswordHash.parse(capsys.readouterr().out.strip()).verify(b"typed")
    answers = iter(["one", "two"])
    monkeypatch.setattr(getpass, "getpass", lambda prompt="": next(answers))
    with pytest.raises(SystemExit, match="differ"):
        passwords.main()


def test_anonymous_clients_need_allow_anonymous(tmp_path: Path, make_client) -> None:
    path = write(tmp_path / "passwd", mosquitto_pbkdf2_line("alice", "x"))
    assert not authenticate(MosquittoHook(password_file=path), make_client, None, None)
    assert authenticate(MosquittoHook(password_file=path, allow_anonymous=True), make_client, None, None)
    assert not authenticate(MosquittoHook(password_file=path, allow_anonymous=True), make_client, "alice", b"y")


@pytest.mark.parametrize("line, message", [
    ("alice:plaintext", "mosquitto_passwd -U"),
    ("alice:$argon2id$v=19$m=47104,t=1,p=1$c2FsdA$aGFzaA", "not a \\$7\\$"),
    ("alice:$7$0$AAAAAAAAAAAAAAAA$" + "A" * 88, "iteration"),
    ("alice:$7$101$AAAA$" + "A" * 88, "salt is 3 bytes"),
    ("alice:$6$AAAAAAAAAAAAAAAA$AAAA", "hash is 3 bytes"),
    ("alice:$6$!!!!$AAAA", "base64"),
    ("alice", "username:password_hash"),
])
def test_bad_password_lines_are_refused_naming_the_line(line: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as raised:
        parse_password_file("# header\n" + line + "\n")
    assert "line 2" in str(raised.value)


# ---- the ACL file -------------------------------------------------------------

ACL = """
# anonymous clients (rules before any user line)
topic read public/#

user alice
topic readwrite alice/#
topic deny alice/secret/#
topic write shared/in
topic $SYS/broker/clients/#

user bob
topic read shared/#

pattern write devices/%c/status
pattern read users/%u/#
pattern deny users/%u/private/#
"""


@pytest.fixture
def acl() -> AclRules:
    return parse_acl_file(ACL)


@pytest.mark.parametrize("client_id, username, topic, write, allowed", [
    ("anon", None, "public/news", False, True),
    ("anon", None, "public/news", True, False),             # read only
    ("anon", None, "alice/x", False, False),                # everything not granted is denied
    ("a1", "alice", "alice/x", True, True),
    ("a1", "alice", "alice/secret/key", False, False),      # deny wins over the readwrite grant
    ("a1", "alice", "shared/in", True, True),
    ("a1", "alice", "shared/in", False, False),             # write only
    ("a1", "alice", "public/news", False, False),           # anonymous rules are not everyone's
    ("a1", "alice", "$SYS/broker/clients/connected", False, True),  # no access word: readwrite
    ("b1", "bob", "shared/in", False, True),
    ("b1", "bob", "alice/x", False, False),
    ("dev7", "bob", "devices/dev7/status", True, True),     # %c
    ("dev7", "bob", "devices/dev8/status", True, False),
    ("dev7", "bob", "users/bob/inbox", False, True),        # %u
    ("dev7", "bob", "users/alice/inbox", False, False),
    ("dev7", "bob", "users/bob/private/x", False, False),   # deny pattern
    ("dev7", None, "users/None/inbox", False, False),       # %u never applies without a username
    ("dev7", None, "devices/dev7/status", True, True),      # patterns apply to anonymous clients too
])
def test_acl_rules(acl, client_id, username, topic, write, allowed) -> None:
    assert acl.allows(client_id, username, topic, write) is allowed


def test_a_deny_pattern_beats_a_users_own_grant() -> None:
    rules = parse_acl_file("user carol\ntopic readwrite #\npattern deny archive/%u/#\n")
    assert rules.allows("c", "carol", "anything", True)
    assert not rules.allows("c", "carol", "archive/carol/2024", False)


@pytest.mark.parametrize("client_id", ["#", "+", "dev/7", "a+b"])
def test_a_client_id_with_wildcards_or_slash_never_widens_a_pattern(client_id: str) -> None:
    """With client id '#', 'devices/%c/status' would become 'devices/#/status' and, with '/',
    reach another device's topics: such a grant pattern is skipped."""
    rules = parse_acl_file("pattern write devices/%c/status\npattern read devices/%c/#\n")
    for topic in ("devices/dev/7/status", "devices/x/status", f"devices/{client_id}/status"):
        assert not rules.allows(client_id, None, topic, True)
        assert not rules.allows(client_id, None, topic, False)
    assert rules.allows("dev7", None, "devices/dev7/status", True)


@pytest.mark.parametrize("username", ["#", "a/b", "+"])
def test_a_username_with_wildcards_or_slash_never_widens_a_pattern(username: str) -> None:
    rules = parse_acl_file("pattern readwrite users/%u/#\ntopic read news\nuser " + username + "\ntopic read own\n")
    assert not rules.allows("c", username, "users/a/b/x", False)
    assert not rules.allows("c", username, "users/x/y", True)
    assert rules.allows("c", username, "own", False), "the user's own topic rules still apply"


def test_a_deny_pattern_that_cannot_be_applied_denies_everything() -> None:
    rules = parse_acl_file("user xy\ntopic read #\nuser x/y\ntopic read #\npattern deny private/%u/#\n")
    assert rules.allows("c", "xy", "public", False) is True
    assert rules.allows("c", "xy", "private/xy/diary", False) is False
    assert rules.allows("c", "x/y", "public", False) is False


def test_a_wildcard_rule_does_not_reach_sys_topics() -> None:
    rules = parse_acl_file("topic read #\n")
    assert rules.allows("c", None, "a/b", False)
    assert not rules.allows("c", None, "$SYS/broker/uptime", False)


def test_subscriptions_must_fit_inside_a_read_grant_and_miss_every_deny(acl) -> None:
    """So that no message the subscription brings is one the client may not read,
    even without a check on each delivery."""
    assert acl.allows("a1", "alice", "alice/public/+", False)
    assert not acl.allows("a1", "alice", "alice/+/x", False), "alice/secret/x is denied"
    assert not acl.allows("a1", "alice", "alice/secret/+", False), "entirely denied"
    assert not acl.allows("a1", "alice", "alice/#", False), "it could bring alice/secret/... messages"
    assert acl.allows("a1", "alice", "alice/public/#", False)
    assert not acl.allows("anon", None, "#", False), "wider than the grant"
    assert acl.allows("anon", None, "$share/g/public/+", False)


def test_acl_file_syntax() -> None:
    rules = parse_acl_file("topic readwrite a topic with spaces\ntopic plain/x\ntopic read  spaced out/x \n  # indented comment\n")
    assert rules.allows("c", None, "a topic with spaces", True)
    assert rules.allows("c", None, "plain/x", True) and rules.allows("c", None, "plain/x", False)
    assert rules.allows("c", None, "spaced out/x", False)
    assert not rules.allows("c", None, "spaced out/x", True)
    assert parse_acl_file("").allows("c", None, "a", False) is False, "an empty ACL grants nothing"


@pytest.mark.parametrize("text, message", [
    ("topc read a\n", "unknown keyword"),
    ("topic dney secret\n", "is not read, write"),
    ("topic\n", "without a topic"),
    ("user\n", "without a name"),
])
def test_bad_acl_lines_are_refused_naming_the_line(text: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=f"line 2: .*{message}"):
        parse_acl_file("topic read ok\n" + text)


# ---- the hook, files and reload -----------------------------------------------

def test_the_hook_through_the_manager(tmp_path: Path, make_client) -> None:
    hook = MosquittoHook(write(tmp_path / "passwd", mosquitto_pbkdf2_line("alice", "pw")),
                         write(tmp_path / "acl", "user alice", "topic readwrite alice/#"))
    manager = HookManager()
    manager.add(hook)
    alice = make_client(username="alice")
    assert asyncio.run(manager.on_connect_authenticate(alice, Connect(username="alice", password=b"pw")))
    assert not asyncio.run(manager.on_connect_authenticate(alice, Connect(username="alice", password=b"no")))
    assert manager.on_acl_check(alice, "alice/x", True)
    assert not manager.on_acl_check(alice, "bob/x", True)


def test_either_file_may_be_left_out(tmp_path: Path, make_client) -> None:
    acl_only = MosquittoHook(acl_file=write(tmp_path / "acl", "topic read a"))
    assert authenticate(acl_only, make_client, "anyone", b"anything"), "no password file: not this hook's call"
    passwords_only = MosquittoHook(password_file=write(tmp_path / "passwd", mosquitto_sha512_line("u", "p")))
    assert passwords_only.on_acl_check(make_client(), "any/topic", True)
    with pytest.raises(ConfigurationError):
        MosquittoHook()


def test_first_load_failure_raises(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read password file"):
        MosquittoHook(password_file=tmp_path / "missing")
    with pytest.raises(ConfigurationError, match="acl file .*line 1"):
        MosquittoHook(acl_file=write(tmp_path / "acl", "topic bad a"))


def test_reload_applies_new_files_and_keeps_old_rules_on_broken_ones(tmp_path: Path, make_client, caplog) -> None:
    passwd = write(tmp_path / "passwd", mosquitto_pbkdf2_line("alice", "one"))
    acl = write(tmp_path / "acl", "user alice", "topic read a/#")
    hook = MosquittoHook(passwd, acl)
    alice = make_client(username="alice")

    write(passwd, mosquitto_pbkdf2_line("alice", "two"))
    write(acl, "user alice", "topic read b/#")
    assert hook.reload() is True
    assert authenticate(hook, make_client, "alice", b"two") and not authenticate(hook, make_client, "alice", b"one")
    assert hook.on_acl_check(alice, "b/1", False) and not hook.on_acl_check(alice, "a/1", False)

    write(passwd, "alice:$7$101$trunc")
    write(acl, "user alice", "topic readwrite #", "topic dny b/secret")  # would grant more
    with caplog.at_level(logging.ERROR, logger="kushi.hooks"):
        assert hook.reload() is False
    assert authenticate(hook, make_client, "alice", b"two"), "old passwords stay"
    assert not hook.on_acl_check(alice, "c/1", False), "old ACL stays: the broken file never opens access"
    errors = [record.message for record in caplog.records if record.levelno == logging.ERROR]
    assert len(errors) == 2 and all("keeping the rules loaded before" in message for message in errors)

    acl.unlink()
    assert hook.reload() is False
    assert hook.on_acl_check(alice, "b/1", False) and not hook.on_acl_check(alice, "c/1", False)


def test_reload_replaces_patterns_already_filled_in_for_a_client(tmp_path: Path, make_client) -> None:
    acl = write(tmp_path / "acl", "pattern read devices/%c/#")
    hook = MosquittoHook(acl_file=acl)
    device = make_client(client_id="dev7")
    assert hook.on_acl_check(device, "devices/dev7/a", False)
    assert hook.on_acl_check(device, "devices/dev7/b", False)
    write(acl, "pattern read sensors/%c/#")
    assert hook.reload() is True
    assert not hook.on_acl_check(device, "devices/dev7/a", False)
    assert hook.on_acl_check(device, "sensors/dev7/a", False)
