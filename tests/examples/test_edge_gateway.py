"""examples/edge_gateway.py, run as a user runs it, with real paho-mqtt devices.

Devices are provisioned with the program's own ``--add-device``; the test reads
the device table with sqlite3 as a dashboard would, and waits on the gateway's
log lines (``online <id>``, ``status <id> <state>``, ``command <id> report``,
``published by ...``) rather than sleeping.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from example_process import WAIT, ExampleProcess, run_to_completion
from support.paho import PahoClient
from support.rawclient import RawClient

SCRIPT = "edge_gateway.py"
GATEWAY_LISTENING = r"^kushi: listening tcp "

SENSOR, SENSOR_SECRET = "sensor-1", "7f3c9a1e-sensor"
OBSERVER, OBSERVER_SECRET = "observer", "b2d4e6f8-observer"

# CONNACK of a refused login: v5 Bad user name or password / Not authorized; 3.1.1 return codes 4 / 5.
REFUSED_V5 = {0x86, 0x87}
REFUSED_V311_WIRE = {b"\x20\x02\x00\x04", b"\x20\x02\x00\x05"}


@pytest.fixture
def database(tmp_path: Path) -> Path:
    """A device table holding the sensor and an observer device."""
    path = tmp_path / "devices.db"
    result = run_to_completion(SCRIPT, "--db", str(path), "--add-device", SENSOR, SENSOR_SECRET,
                               "--add-device", OBSERVER, OBSERVER_SECRET)
    assert result.returncode == 0, result.stderr
    return path


@pytest.fixture
def gateway(run_example: Callable[..., ExampleProcess], database: Path) -> ExampleProcess:
    """The gateway on a free port, sending commands every 0.2 s."""
    return run_example(SCRIPT, "--tcp", "127.0.0.1:0", "--db", str(database),
                       "--command-interval", "0.2", listening=GATEWAY_LISTENING)


def device(paho: Any, gateway: ExampleProcess, device_id: str, secret: str,
           version: int = 5) -> PahoClient:
    """A paho client logging in as ``device_id`` (client id = username), not yet connected."""
    client = paho(gateway, device_id, version=version)
    client.client.username_pw_set(device_id, secret)
    return client


def status_in_table(database: Path, device_id: str) -> str | None:
    with sqlite3.connect(database) as db:
        row = db.execute("SELECT status FROM devices WHERE id = ?", (device_id,)).fetchone()
    return row[0] if row else None


@pytest.mark.parametrize("device_id, secret", [
    ("intruder", "anything"),          # not in the table
    (SENSOR, "wrong secret"),          # known device, wrong secret
])
def test_v5_login_outside_the_table_is_refused(gateway: ExampleProcess, paho: Any,
                                               device_id: str, secret: str) -> None:
    _, reason_code, _ = device(paho, gateway, device_id, secret).connect(expect_success=False)
    assert reason_code.value in REFUSED_V5, f"CONNACK {reason_code}"


def test_v311_unknown_device_gets_return_code_4(gateway: ExampleProcess) -> None:
    with RawClient(gateway.host, gateway.port, version=4) as raw:
        raw.send(raw_connect("intruder", "anything"))
        assert raw.recv_bytes(4, timeout=WAIT) in REFUSED_V311_WIRE
        assert raw.expect_closed(timeout=WAIT)


def raw_connect(device_id: str, secret: str) -> Any:
    from kushi.protocol.packets import Connect

    return Connect(protocol_version=4, client_id=device_id, username=device_id, password=secret.encode())


def test_known_device_is_accepted_and_gateway_logs_what_it_publishes(
        gateway: ExampleProcess, paho: Any) -> None:
    for version in (5, 4):
        since = gateway.mark()
        sensor = device(paho, gateway, SENSOR, SENSOR_SECRET, version=version)
        sensor.connect()
        sensor.publish(f"devices/{SENSOR}/temperature", f"v{version}", qos=1)
        gateway.wait_for(rf"published by {SENSOR} on devices/{SENSOR}/temperature: 2 bytes", since=since)
        sensor.disconnect()
        gateway.wait_for(rf"^gateway: offline {SENSOR} ", since=since)


def test_status_goes_online_then_offline_in_sqlite_and_retained(
        gateway: ExampleProcess, paho: Any, database: Path) -> None:
    assert status_in_table(database, SENSOR) == "offline"
    observer = device(paho, gateway, OBSERVER, OBSERVER_SECRET)
    observer.connect()

    sensor = device(paho, gateway, SENSOR, SENSOR_SECRET)
    sensor.connect()
    gateway.wait_for(rf"^gateway: status {SENSOR} online ")  # seen by the inline subscription
    assert status_in_table(database, SENSOR) == "online"
    observer.subscribe(f"devices/{SENSOR}/status", qos=1)
    retained = observer.expect_message(f"devices/{SENSOR}/status", b"online")
    assert retained.retain, "the status must be published retained"

    since = gateway.mark()
    sensor.disconnect()
    gateway.wait_for(rf"^gateway: status {SENSOR} offline ", since=since)
    assert status_in_table(database, SENSOR) == "offline"
    observer.expect_message(f"devices/{SENSOR}/status", b"offline")  # live, to the subscriber

    late = device(paho, gateway, OBSERVER, OBSERVER_SECRET)  # takes the observer's session over
    late.connect()
    late.subscribe(f"devices/{SENSOR}/status", qos=1)
    message = late.expect_message(f"devices/{SENSOR}/status", b"offline")
    assert message.retain, "a later subscriber must get the retained offline status"


def test_a_dropped_connection_is_recorded_offline(gateway: ExampleProcess, paho: Any,
                                                  database: Path) -> None:
    sensor = device(paho, gateway, SENSOR, SENSOR_SECRET, version=4)
    sensor.connect()
    gateway.wait_for(rf"^gateway: status {SENSOR} online ")
    since = gateway.mark()
    sensor.drop()   # no DISCONNECT packet: the network went away
    gateway.wait_for(rf"^gateway: status {SENSOR} offline ", since=since)
    assert status_in_table(database, SENSOR) == "offline"


def test_inline_command_reaches_a_subscribed_device(gateway: ExampleProcess, paho: Any) -> None:
    sensor = device(paho, gateway, SENSOR, SENSOR_SECRET)
    sensor.connect()
    assert sensor.subscribe(f"devices/{SENSOR}/cmd", qos=1) == [1]
    since = gateway.mark()
    gateway.wait_for(rf"^gateway: command {SENSOR} report$", since=since)
    message = sensor.wait_for_message(timeout=WAIT)
    assert (message.topic, message.payload, message.qos) == (
        f"devices/{SENSOR}/cmd", b'{"cmd": "report"}', 1)


def test_sigterm_stops_the_gateway_and_records_the_device_offline(
        gateway: ExampleProcess, paho: Any, database: Path) -> None:
    sensor = device(paho, gateway, SENSOR, SENSOR_SECRET)
    sensor.connect()
    gateway.wait_for(rf"^gateway: status {SENSOR} online ")
    gateway.stop()
    assert gateway.process.returncode == 0
    assert sensor.wait_disconnected(timeout=WAIT).value == 0x8B   # v5: Server shutting down
    assert status_in_table(database, SENSOR) == "offline"


# ---- several workers ------------------------------------------------------------------

FLEET = [f"unit-{number}" for number in range(20)]
"""Enough devices that SO_REUSEPORT puts at least one on each of two workers (all on one: 2**-19)."""


def fleet_secret(device_id: str) -> str:
    return f"secret-of-{device_id}"


@pytest.fixture
def fleet_database(tmp_path: Path) -> Path:
    path = tmp_path / "fleet.db"
    provisioning = [arg for device_id in FLEET for arg in ("--add-device", device_id, fleet_secret(device_id))]
    result = run_to_completion(SCRIPT, "--db", str(path), *provisioning)
    assert result.returncode == 0, result.stderr
    return path


def test_two_workers_share_status_commands_and_the_device_table(
        run_example: Callable[..., ExampleProcess], paho: Any, fleet_database: Path) -> None:
    """Hooks made before the fork run in each worker: each opens the table, subscribes inline,
    and sees the statuses published on the other; worker 0's commands reach devices on worker 1."""
    gateway = run_example(SCRIPT, "--tcp", "127.0.0.1:0", "--db", str(fleet_database), "--workers", "2",
                          "--command-interval", "0.2", listening=GATEWAY_LISTENING)
    placed: dict[int, tuple[str, PahoClient]] = {}   # worker -> the first device it holds
    for device_id in FLEET:
        since = gateway.mark()
        client = device(paho, gateway, device_id, fleet_secret(device_id))
        client.connect()
        online = gateway.wait_for(rf"^gateway: online {device_id} \(worker (\d+)\)$", since=since)
        placed.setdefault(int(online.group(1)), (device_id, client))
        if len(placed) == 2:
            break
    assert set(placed) == {0, 1}, f"all {len(FLEET)} connections went to worker(s) {set(placed)}"
    (near_id, near), (far_id, far) = placed[0], placed[1]

    for worker in (0, 1):   # each worker's inline subscription sees the device of the other
        gateway.wait_for(rf"^gateway: status {far_id} online \(worker {worker}\)$")
        gateway.wait_for(rf"^gateway: status {near_id} online \(worker {worker}\)$")
    assert status_in_table(fleet_database, far_id) == "online"   # written by worker 1

    assert far.subscribe(f"devices/{far_id}/cmd", qos=1) == [1]
    command = far.wait_for_message(timeout=WAIT)   # sent by worker 0's timer
    assert (command.topic, command.payload) == (f"devices/{far_id}/cmd", b'{"cmd": "report"}')

    assert near.subscribe(f"devices/{far_id}/status", qos=1) == [1]
    status = near.expect_message(f"devices/{far_id}/status", b"online")
    assert status.retain, "worker 1's retained status must be held by worker 0 as well"

    since = gateway.mark()
    far.disconnect()
    gateway.wait_for(rf"^gateway: status {far_id} offline \(worker 0\)$", since=since)
    assert status_in_table(fleet_database, far_id) == "offline"
    near.expect_message(f"devices/{far_id}/status", b"offline")
