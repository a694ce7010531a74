"""The YAML config file and the flags laid over it (kushi.ops.config, kushi.ops.cli.apply_flags)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from kushi.errors import ConfigurationError
from kushi.ops.cli import apply_flags, build_parser
from kushi.ops.config import (
    ServeConfig, listener_kind, load_config_file, parse_address, parse_config,
)
from kushi.worker.listeners import TCP, TLS, WebSocket
from kushi.worker.options import Options

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "kushi.example.yaml"


def flags(*argv: str) -> object:
    return build_parser().parse_args(["serve", *argv])


def test_partial_options_block_keeps_every_other_default() -> None:
    config = parse_config({"options": {"max_clients": 10, "sys_interval": 2}})
    expected = dataclasses.replace(Options(), max_clients=10, sys_interval=2.0, workers=os.cpu_count() or 1)
    assert config.options == expected
    assert config.options.receive_maximum == Options().receive_maximum != 0


def test_empty_file_gives_the_defaults() -> None:
    config = parse_config({})
    assert config.options == Options(workers=os.cpu_count() or 1)
    assert [(listener_kind(l), l.address) for l in config.listeners] == [("tcp", ":1883"), ("ws", ":1882")]
    assert config.http == ":8080"
    assert not config.auth.configured


@pytest.mark.parametrize("data, words", [
    ({"option": {}}, ["unknown key option", "options"]),
    ({"options": {"max_client": 1}}, ["options", "unknown key max_client", "max_clients"]),
    ({"options": {"max_clients": "many"}}, ["options.max_clients", "expected int"]),
    ({"options": {"retain_available": 1}}, ["options.retain_available", "expected bool"]),
    ({"listeners": [{"type": "tcp", "adress": ":1"}]}, ["listeners[0]", "unknown key adress"]),
    ({"listeners": [{"type": "quic", "address": ":1"}]}, ["listeners[0]", "type must be one of"]),
    ({"listeners": [{"type": "tls", "address": ":1"}]}, ["listeners[0]", "needs", "certfile"]),
    ({"listeners": [{"type": "tcp", "address": "nowhere"}]}, ["bad listener address 'nowhere'"]),
    ({"auth": {"passwords": "x"}}, ["auth", "unknown key passwords", "password_file"]),
    ({"auth": {"allow_anonymous": "yes"}}, ["auth.allow_anonymous", "expected bool"]),
    ({"log_level": "loud"}, ["log_level must be one of", "debug"]),
    ({"http": 8080}, ["bad listener address '8080'"]),
    (["not", "a", "mapping"], ["expected a mapping"]),
])
def test_unknown_keys_and_wrong_types_are_clear_errors(data: object, words: list[str]) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_config(data, source="kushi.yaml")
    for word in words:
        assert word in str(caught.value)


def test_listeners_section_replaces_the_default_listeners() -> None:
    config = parse_config({"listeners": [
        {"type": "tcp", "address": "127.0.0.1:1884"},
        {"type": "tls", "id": "secure", "address": ":8883", "certfile": "c.pem", "keyfile": "k.pem"},
    ]})
    assert config.listeners == [TCP("tcp0", "127.0.0.1:1884"), TLS("secure", ":8883", "c.pem", "k.pem")]


def test_options_with_an_optional_int() -> None:
    assert parse_config({"options": {"server_keep_alive": 30}}).options.server_keep_alive == 30
    assert parse_config({"options": {"server_keep_alive": None}}).options.server_keep_alive is None


def test_flags_override_the_file_kind_by_kind(tmp_path: Path) -> None:
    path = tmp_path / "kushi.yaml"
    path.write_text("options: {max_clients: 5}\n"
                    "listeners:\n  - {type: tcp, address: ':1999'}\n  - {type: ws, address: ':1998'}\n"
                    "http: ':9999'\nlog_level: warning\n")
    config = apply_flags(load_config_file(path),
                         flags("--tcp", "127.0.0.1:0", "--tcp", "127.0.0.1:0", "--workers", "1",
                               "--log-level", "DEBUG"))
    assert config.listeners == [TCP("tcp0", "127.0.0.1:0"), TCP("tcp1", "127.0.0.1:0"),
                                WebSocket("ws1", ":1998")]
    assert config.options.max_clients == 5 and config.options.workers == 1
    assert config.http == ":9999"
    assert config.log_level == "debug"


def test_workers_default_to_the_number_of_cpus_unless_the_file_or_a_flag_says() -> None:
    """[issue 3] ``--workers`` defaults to os.cpu_count(); the file and the flag override it."""
    assert apply_flags(ServeConfig(), flags()).options.workers == (os.cpu_count() or 1)
    assert parse_config({"options": {"max_clients": 5}}).options.workers == (os.cpu_count() or 1)
    assert parse_config({"options": {"workers": 3}}).options.workers == 3
    assert apply_flags(parse_config({"options": {"workers": 3}}), flags("--workers", "1")).options.workers == 1


@pytest.mark.parametrize("argv", [["--ws", "none"], ["--no-ws"]])
def test_ws_none_removes_the_websocket_listener(argv: list[str]) -> None:
    config = apply_flags(ServeConfig(), flags(*argv))
    assert [listener_kind(l) for l in config.listeners] == ["tcp"]


@pytest.mark.parametrize("argv", [["--http", "none"], ["--no-http"]])
def test_http_can_be_turned_off(argv: list[str]) -> None:
    assert apply_flags(ServeConfig(), flags(*argv)).http is None


def test_tls_flags_need_a_certificate_and_key() -> None:
    with pytest.raises(ConfigurationError, match="needs --cert"):
        apply_flags(ServeConfig(), flags("--tls", ":8883"))
    with pytest.raises(ConfigurationError, match="for --tls and --wss"):
        apply_flags(ServeConfig(), flags("--cert", "c.pem", "--key", "k.pem"))
    config = apply_flags(ServeConfig(), flags("--wss", ":8884", "--cert", "c.pem", "--key", "k.pem"))
    wss = config.listeners[-1]
    assert (listener_kind(wss), wss.address, wss.certfile, wss.keyfile) == ("wss", ":8884", "c.pem", "k.pem")


def test_auth_flags_override_the_file() -> None:
    base = parse_config({"auth": {"password_file": "a", "ledger": "l.yaml"}})
    config = apply_flags(base, flags("--password-file", "b", "--acl-file", "acl"))
    assert (config.auth.password_file, config.auth.acl_file, config.auth.ledger) == ("b", "acl", "l.yaml")
    assert not config.auth.allow_anonymous
    assert apply_flags(base, flags("--allow-anonymous")).auth.allow_anonymous
    assert parse_config({"auth": {"allow_anonymous": True}}).auth.allow_anonymous


@pytest.mark.parametrize("text, expected", [
    (":1883", (None, 1883)), ("127.0.0.1:0", ("127.0.0.1", 0)), ("[::1]:80", ("::1", 80)),
])
def test_parse_address(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


def test_example_config_file_loads() -> None:
    config = load_config_file(EXAMPLE)
    assert config.options != Options()
    assert {listener_kind(l) for l in config.listeners} >= {"tcp", "ws"}


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read config file"):
        load_config_file(tmp_path / "absent.yaml")


def test_relative_file_paths_are_taken_from_the_config_files_directory(tmp_path: Path) -> None:
    path = tmp_path / "kushi.yaml"
    path.write_text("auth: {password_file: passwd, acl_file: /etc/abs/acl}\n"
                    "listeners:\n  - {type: tls, address: ':8883', certfile: tls/c.pem, keyfile: tls/k.pem}\n")
    config = load_config_file(path)
    assert config.auth.password_file == str(tmp_path / "passwd")
    assert config.auth.acl_file == "/etc/abs/acl"
    tls = config.listeners[0]
    assert (tls.certfile, tls.keyfile, tls.cafile) == (str(tmp_path / "tls/c.pem"), str(tmp_path / "tls/k.pem"), None)


def test_storage_section_and_flags(tmp_path: Path) -> None:
    """``storage: {path, autosave_interval}`` (a relative path from the file's directory) and the
    flags over it: ``--storage FILE`` replaces the path, ``--storage none`` turns it off."""
    path = tmp_path / "kushi.yaml"
    path.write_text("storage: {path: data/kushi.db, autosave_interval: 5}\n")
    config = load_config_file(path)
    assert (config.storage.path, config.storage.autosave_interval) == (str(tmp_path / "data/kushi.db"), 5.0)
    assert not ServeConfig().storage.configured
    flagged = apply_flags(config, flags("--storage", "/tmp/other.db", "--autosave-interval", "0.5"))
    assert (flagged.storage.path, flagged.storage.autosave_interval) == ("/tmp/other.db", 0.5)
    assert not apply_flags(config, flags("--storage", "none")).storage.configured
    with pytest.raises(ConfigurationError, match="autosave-interval needs --storage"):
        apply_flags(ServeConfig(), flags("--autosave-interval", "2"))


@pytest.mark.parametrize("storage, words", [
    ({"file": "x.db"}, ["unknown key", "file"]),
    ({"path": "x.db", "autosave_interval": 0}, ["autosave_interval", "> 0"]),
    ({"path": "x.db", "autosave_interval": "often"}, ["autosave_interval", "float"]),
])
def test_storage_section_errors_name_the_key(storage: dict, words: list[str]) -> None:
    with pytest.raises(ConfigurationError) as error:
        parse_config({"storage": storage})
    for word in words:
        assert word in str(error.value)


def test_reload_changes_name_what_waits_for_a_restart() -> None:
    """SIGHUP: options go to the workers; listeners, http, storage and auth paths wait for a restart."""
    from kushi.ops.config import AuthFiles, ServeConfig, StorageConfig, reload_changes

    running = ServeConfig()
    new = ServeConfig(http=None, storage=StorageConfig(path="k.db"),
                      auth=AuthFiles(password_file="passwd"), log_level="debug")
    options, log_level, waiting = reload_changes(running, new)
    assert options is new.options and log_level == "debug"
    assert waiting == ["http", "storage", "auth.password_file"]
    assert reload_changes(running, ServeConfig())[2] == []
