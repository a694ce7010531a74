"""``kushi serve`` end to end: the console script in a subprocess, real clients, real signals."""

from __future__ import annotations

import signal
import subprocess
import sys
import urllib.request
from importlib.metadata import version
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kushi.ops.cli import build_auth_hooks, run_workers
from kushi.ops.config import AuthFiles, ServeConfig
from kushi.worker.options import Options
from support.paho import PahoClient
from support.waiting import wait_until

from kushi_process import run_kushi

LOCAL = ["--tcp", "127.0.0.1:0", "--ws", "127.0.0.1:0", "--http", "127.0.0.1:0", "--workers", "1"]
EXIT_TIMEOUT = 5.0


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {sample.name: sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def test_version_flag_prints_the_package_version() -> None:
    for argv in (["--version"], ["serve", "--version"]):
        result = run_kushi(*argv)
        assert result.returncode == 0
        assert result.stdout.strip() == f"kushi {version('kushi')}"


@pytest.mark.parametrize("argv, message", [
    (["serve", "--bogus"], "unrecognized arguments: --bogus"),
    (["serve", "--tcp", "nowhere"], "bad listener address 'nowhere'"),
    (["serve", "--tls", ":8883"], "needs --cert FILE and --key FILE"),
    (["serve", "--workers", "0"], "must be 1 or more"),
    (["serve", "--log-level", "loud"], "invalid choice: 'loud'"),
    (["serve", "--config", "/nonexistent/kushi.yaml"], "cannot read config file /nonexistent/kushi.yaml"),
    (["serve", "--tcp", "none", "--no-ws"], "no MQTT listener left"),
    (["serve", "--tcp", "127.0.0.1:0", "--ws", "none", "--http", "none", "--tls", "127.0.0.1:0",
      "--cert", "/nonexistent.crt", "--key", "/nonexistent.key"], "listener tls0: cannot load TLS files"),
    (["serve", *LOCAL, "--password-file", "/nonexistent/passwd"], "cannot read password file /nonexistent/passwd"),
    (["serve", *LOCAL, "--workers", "2", "--ledger", "/nonexistent/ledger.yaml"],
     "cannot read auth ledger /nonexistent/ledger.yaml"),
])
def test_bad_flags_are_clear_errors(argv: list[str], message: str) -> None:
    result = run_kushi(*argv)
    assert result.returncode == 2
    assert message in result.stderr


def test_unknown_config_key_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "kushi.yaml"
    path.write_text("options:\n  max_client: 10\n")
    result = run_kushi("serve", "--config", str(path))
    assert result.returncode == 2
    assert "unknown key max_client" in result.stderr and "max_clients" in result.stderr


def test_without_the_supervisor_serve_refuses_to_start(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """No silent fallback to another kind of broker when kushi.cluster cannot be loaded."""
    monkeypatch.setitem(sys.modules, "kushi.cluster.supervisor", None)   # import fails
    config = ServeConfig(options=Options(workers=3))
    assert run_workers(config) == 2
    assert "kushi serve needs the supervisor (kushi.cluster)" in caplog.text


def test_serves_tcp_and_websocket_and_logs_bound_ports(serve: Any, paho: Any) -> None:
    kushi = serve(*LOCAL)
    assert kushi.port != 0 and kushi.ws_port != 0 and kushi.http_port != 0
    kushi.wait_for(r"sup kushi: worker 0 started \(pid \d+\)")   # --workers 1: the supervisor's path too
    kushi.wait_for(r"WARNING .*no authentication configured: every client is allowed")
    subscriber = paho(kushi, "ws-sub", transport="websockets")
    subscriber.connect()
    subscriber.subscribe("ops/hello", qos=1)
    publisher = paho.connected(kushi, "tcp-pub", version=4)
    publisher.publish("ops/hello", b"over tcp, to ws", qos=1)
    subscriber.expect_message("ops/hello", b"over tcp, to ws")


def test_without_authentication_serve_adds_no_hook_and_allows_everyone(
        serve: Any, paho: Any, caplog: pytest.LogCaptureFixture) -> None:
    """No auth files: no hook at all (the AllowAllHook's calls per CONNECT and per message are
    spared), and still every client gets in, with any credentials, and may use any topic."""
    assert build_auth_hooks(AuthFiles()) == []
    assert "no authentication configured: every client is allowed" in caplog.text
    kushi = serve(*LOCAL)
    anyone = paho(kushi, "anyone")
    anyone.client.username_pw_set("whoever", "whatever")
    anyone.connect()
    assert anyone.subscribe("any/#", qos=1) == [1]
    anyone.publish("any/topic", b"allowed", qos=1)
    anyone.expect_message("any/topic", b"allowed")


def test_metrics_counters_move_after_a_publish(serve: Any, paho: Any) -> None:
    kushi = serve(*LOCAL)
    client = paho.connected(kushi, "metrics")
    # the supervisor serves /metrics from the snapshots its workers send every second
    before = wait_until(lambda: (m := scrape(kushi.http_port))["kushi_clients_connected"] == 1 and m,
                        timeout=5, interval=0.1, message="kushi_clients_connected to be 1")
    client.subscribe("ops/count")
    client.publish("ops/count", b"x" * 100, qos=1)
    client.expect_message("ops/count", b"x" * 100)
    after = wait_until(
        lambda: (m := scrape(kushi.http_port))["kushi_messages_sent_total"] > before["kushi_messages_sent_total"] and m,
        timeout=5, interval=0.1, message="kushi_messages_sent_total to grow")
    assert after["kushi_messages_received_total"] > before["kushi_messages_received_total"]
    assert after["kushi_bytes_received_total"] >= before["kushi_bytes_received_total"] + 100
    assert after["kushi_subscriptions"] >= 1
    assert after["kushi_connections_total"] >= 1


def test_healthz(serve: Any) -> None:
    kushi = serve(*LOCAL)
    with urllib.request.urlopen(f"http://127.0.0.1:{kushi.http_port}/healthz", timeout=5) as response:
        assert (response.status, response.read()) == (200, b"ok\n")


def test_sys_version_arrives_on_subscribe(serve: Any, paho: Any) -> None:
    kushi = serve(*LOCAL)
    client = paho.connected(kushi, "sys")
    client.subscribe("$SYS/broker/version")
    message = client.wait_for_message(timeout=5)
    assert (message.topic, message.payload) == ("$SYS/broker/version", f"kushi {version('kushi')}".encode())
    assert message.retain
    client.subscribe("$SYS/broker/workers")   # the supervisor publishes $SYS for the whole broker
    client.expect_message("$SYS/broker/workers", b"1")


def test_sigterm_sends_v5_clients_disconnect_0x8b_and_exits_0(serve: Any, paho: Any) -> None:
    kushi = serve(*LOCAL)
    client = paho.connected(kushi, "stays-till-the-end")
    kushi.signal(signal.SIGTERM)
    reason = client.wait_disconnected(timeout=EXIT_TIMEOUT)
    assert reason.value == 0x8B, f"expected DISCONNECT 0x8B (server shutting down), got {reason}"
    assert kushi.wait_exit(timeout=EXIT_TIMEOUT) == 0
    kushi.wait_for("kushi: stopped")


def test_sigint_stops_gracefully_too(serve: Any) -> None:
    kushi = serve(*LOCAL)
    kushi.signal(signal.SIGINT)
    assert kushi.wait_exit(timeout=EXIT_TIMEOUT) == 0


def test_a_port_in_use_is_an_error_not_a_hang(serve: Any) -> None:
    first = serve(*LOCAL)
    result = run_kushi("serve", "--tcp", "127.0.0.1:0", "--ws", "none",
                       "--http", f"127.0.0.1:{first.http_port}")
    assert result.returncode == 1
    assert "cannot open a listener" in result.stderr


def test_sighup_reloads_a_changed_password_file(serve: Any, paho: Any, tmp_path: Path) -> None:
    """The next CONNECT uses the new password; a client connected before stays connected."""
    passwords = pytest.importorskip("kushi.hooks.passwords")
    pytest.importorskip("kushi.hooks.mosquitto")
    password_file = tmp_path / "passwd"
    password_file.write_text(f"alice:{passwords.hash_password('old')}\n")
    kushi = serve(*LOCAL, "--password-file", str(password_file))

    def connect(client_id: str, password: str) -> tuple[PahoClient, Any]:
        client = paho(kushi, client_id)
        client.client.username_pw_set("alice", password)
        _, reason, _ = client.connect(expect_success=False)
        return client, reason

    before, reason = connect("before", "old")
    assert not reason.is_failure
    password_file.write_text(f"alice:{passwords.hash_password('new')}\n")
    mark = kushi.mark()
    kushi.signal(signal.SIGHUP)
    kushi.wait_for(r"SIGHUP: reloaded", since=mark)

    _, reason = connect("old-password", "old")
    assert reason.value == 0x86, f"the old password must be refused after the reload, got {reason}"
    after, reason = connect("new-password", "new")
    assert not reason.is_failure
    before.subscribe("ops/still-here")
    after.publish("ops/still-here", b"yes", qos=1)
    before.expect_message("ops/still-here", b"yes")
    assert not before.disconnected.is_set()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1, made with the openssl command."""
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "server.crt", directory / "server.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=30)
    return str(cert), str(key)


def test_tls_and_wss_listeners_from_flags(serve: Any, paho: Any, certificate: tuple[str, str]) -> None:
    cert, key = certificate
    kushi = serve("--tcp", "none", "--ws", "none", "--http", "none", "--tls", "127.0.0.1:0",
                  "--wss", "127.0.0.1:0", "--cert", cert, "--key", key, listening=["tls", "wss"])
    secure = SimpleNamespace(host="127.0.0.1", port=kushi.listeners["tls"][1], ws_port=kushi.listeners["wss"][1])
    clients = [paho(secure, "over-tls"), paho(secure, "over-wss", transport="websockets")]
    for client in clients:
        client.client.tls_set(ca_certs=cert)
        client.connect()
    clients[0].subscribe("ops/secure")
    clients[1].publish("ops/secure", b"over wss, to tls", qos=1)
    clients[0].expect_message("ops/secure", b"over wss, to tls")


def test_acl_file_and_ledger_flags_install_their_hooks(serve: Any, paho: Any, tmp_path: Path) -> None:
    """--password-file with --acl-file (Mosquitto), and --ledger (Mochi), each decide for real."""
    passwords = pytest.importorskip("kushi.hooks.passwords")
    (tmp_path / "passwd").write_text(f"alice:{passwords.hash_password('pw')}\n")
    (tmp_path / "acl").write_text("user alice\ntopic readwrite alice/#\n")
    (tmp_path / "ledger.yaml").write_text("users:\n  carol:\n    password: pw\n")
    mosquitto = serve(*LOCAL, "--password-file", str(tmp_path / "passwd"), "--acl-file", str(tmp_path / "acl"))
    ledger = serve(*LOCAL, "--ledger", str(tmp_path / "ledger.yaml"))
    for kushi in (mosquitto, ledger):
        assert "no authentication configured" not in kushi.log

    alice = paho(mosquitto, "alice")
    alice.client.username_pw_set("alice", "pw")
    alice.connect()
    assert alice.subscribe("alice/inbox", qos=1) == [1]
    assert alice.subscribe("bob/inbox", qos=1) == [0x87]

    for password, refused in (("wrong", True), ("pw", False)):
        carol = paho(ledger, f"carol-{password}")
        carol.client.username_pw_set("carol", password)
        _, reason, _ = carol.connect(expect_success=False)
        assert reason.is_failure == refused, f"password {password!r}: {reason}"


def test_config_file_sets_listeners_and_options(serve: Any, paho: Any, tmp_path: Path) -> None:
    """Listeners and a partial options block from --config reach the running broker."""
    path = tmp_path / "kushi.yaml"
    path.write_text("options:\n  max_clients: 1\n  workers: 1\n"   # max_clients holds per worker
                    "listeners:\n  - {type: tcp, address: '127.0.0.1:0'}\n"
                    "http: '127.0.0.1:0'\n")
    kushi = serve("--config", str(path), listening=["tcp", "http"])
    assert "listening ws" not in kushi.log, "the file's listeners replace the defaults"
    first = paho.connected(kushi, "first")
    _, reason, _ = paho(kushi, "second").connect(expect_success=False)
    assert reason.value == 0x97, f"max_clients: 1 from the file must refuse a second client, got {reason}"
    first.subscribe("ops/after", qos=1)
    first.publish("ops/after", b"still served", qos=1)
    first.expect_message("ops/after", b"still served")


def test_unix_socket_listener_from_flags(serve: Any, paho: Any, tmp_path: Path) -> None:
    socket_path = str(tmp_path / "mqtt.sock")
    kushi = serve("--tcp", "none", "--ws", "none", "--http", "none", "--unix", socket_path, listening=[])
    kushi.wait_for(rf"kushi: listening unix {socket_path}$", timeout=15)
    unix = SimpleNamespace(host=socket_path, port=1883, ws_port=1882)   # paho wants a port; unused
    client = paho(unix, "over-unix", transport="unix")
    client.connect()
    client.subscribe("ops/local")
    client.publish("ops/local", b"no network", qos=1)
    client.expect_message("ops/local", b"no network")
