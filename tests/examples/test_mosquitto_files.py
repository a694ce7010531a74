"""examples/mosquitto_files.py with a password file and an ACL file as an operator has them.

The password file is written by the real ``mosquitto_passwd`` when it is
installed (``$7$`` PBKDF2-SHA512 by default); otherwise the test writes the
``$7$`` line the way mosquitto_passwd does (common/password_mosq.c:
``$7$<iterations>$<base64 salt>$<base64 PBKDF2-SHA512>``, 101 iterations, 12
byte salt). The machine these tests were written on has mosquitto_passwd, so
the fallback branch has not run there.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from example_process import WAIT, ExampleProcess, run_to_completion
from acks import NOT_AUTHORIZED, puback_reason

SCRIPT = "mosquitto_files.py"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd")

USERS = {"alice": "wonder land", "sensor": "s3nsor-secret"}

ACL = """\
# anonymous clients may read the public topics
topic read public/#

user alice
topic readwrite alice/#
topic read sensors/#

# every client may write its own status and read its own commands
pattern write devices/%c/status
pattern read devices/%c/cmd
"""


def write_password_file(path: Path, users: dict[str, str]) -> None:
    """A password file, by mosquitto_passwd if installed, else in its $7$ format."""
    if MOSQUITTO_PASSWD:
        path.touch()
        for user, password in users.items():
            subprocess.run([MOSQUITTO_PASSWD, "-b", str(path), user, password], check=True,
                           capture_output=True, timeout=WAIT)
        return
    lines = []
    for user, password in users.items():
        salt = os.urandom(12)
        digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, 101, 64)
        lines.append(f"{user}:$7$101${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}\n")
    path.write_text("".join(lines))


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    passwd, acl = tmp_path / "passwd", tmp_path / "acl"
    write_password_file(passwd, USERS)
    assert passwd.read_text().startswith("alice:$7$")
    acl.write_text(ACL)
    return passwd, acl


@pytest.fixture
def broker(run_example: Callable[..., ExampleProcess], files: tuple[Path, Path]) -> ExampleProcess:
    passwd, acl = files
    return run_example(SCRIPT, "--password-file", str(passwd), "--acl-file", str(acl),
                       "--tcp", "127.0.0.1:0")


def login(paho: Any, broker: ExampleProcess, client_id: str, user: str | None, password: str | None,
          version: int = 5) -> Any:
    client = paho(broker, client_id, version=version)
    if user is not None:
        client.client.username_pw_set(user, password)
    return client


@pytest.mark.parametrize("version", [5, 4])
def test_a_user_of_the_password_file_gets_in_with_the_right_password_only(
        broker: ExampleProcess, paho: Any, version: int) -> None:
    login(paho, broker, "c1", "alice", USERS["alice"], version).connect()
    for user, password in (("alice", "wonderland"), ("mallory", "x"), (None, None)):
        _, reason_code, _ = login(paho, broker, "c2", user, password, version).connect(expect_success=False)
        # paho reports a 3.1.1 return code 4 / 5 as the v5 code 0x86 / 0x87
        assert reason_code.value in (0x86, 0x87), (user, reason_code)


def test_the_acl_file_rules_apply(broker: ExampleProcess, paho: Any) -> None:
    alice = login(paho, broker, "alice-laptop", "alice", USERS["alice"])
    alice.connect()
    assert alice.subscribe("alice/#", qos=1) == [1]
    assert alice.subscribe("sensors/+/temperature", qos=1) == [1]
    assert alice.subscribe("bob/#", qos=1) == [NOT_AUTHORIZED]
    assert alice.subscribe("devices/alice-laptop/cmd", qos=1) == [1]      # pattern %c
    assert alice.subscribe("devices/other/cmd", qos=1) == [NOT_AUTHORIZED]

    sensor = login(paho, broker, "th-7", "sensor", USERS["sensor"])
    sensor.connect()
    assert puback_reason(sensor, "sensors/th-7/temperature", b"20") == NOT_AUTHORIZED  # read only
    assert puback_reason(sensor, "devices/th-7/status", b"up") == 0                    # pattern write
    assert puback_reason(sensor, "devices/th-8/status", b"up") == NOT_AUTHORIZED
    assert puback_reason(alice, "alice/notes", b"n") == 0
    alice.expect_message("alice/notes", b"n")    # the first message alice gets: nothing refused leaked


def test_sighup_reloads_the_password_file(broker: ExampleProcess, paho: Any,
                                          files: tuple[Path, Path]) -> None:
    passwd, _ = files
    _, refused, _ = login(paho, broker, "c1", "carol", "c4rol").connect(expect_success=False)
    assert refused.value == 0x86
    write_password_file(passwd, {**USERS, "carol": "c4rol"})
    since = broker.mark()
    broker.signal(signal.SIGHUP)
    broker.wait_for(rf"reloaded password file {passwd}", since=since)
    login(paho, broker, "c2", "carol", "c4rol").connect()


def test_a_missing_file_stops_the_program_before_it_listens(tmp_path: Path) -> None:
    result = run_to_completion(SCRIPT, "--acl-file", str(tmp_path / "missing"), "--tcp", "127.0.0.1:0")
    assert result.returncode == 2
    assert "cannot read acl file" in result.stderr
