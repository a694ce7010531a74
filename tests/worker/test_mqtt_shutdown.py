"""Server-initiated DISCONNECT: shutdown (0x8B), administrative action (0x98).

Issue 2: "Server-initiated DISCONNECT with the right reason code in v5 ... in
3.1.1 the connection is closed"; [MQTT-3.14.2-2] no Session Expiry Interval in
a server DISCONNECT; [MQTT-3.14.0-1] no DISCONNECT before CONNACK.
"""

from __future__ import annotations

from kushi.protocol.packets import Pingreq, Pingresp


def test_close_sends_0x8B_to_v5_and_closes_v311(make_broker, raw):
    """Issue 2: graceful close: v5 clients get DISCONNECT 0x8B (without Session Expiry Interval,
    [MQTT-3.14.2-2]), 3.1.1 clients see the connection close with nothing sent."""
    broker = make_broker()
    v5 = raw(broker, 5)
    v5.connect_ok("five")
    v311 = raw(broker, 4)
    v311.connect_ok("three")
    broker.close()
    disconnect = v5.expect_disconnect(0x8B)
    assert disconnect.properties.session_expiry_interval is None
    assert v311.expect_closed()
    assert v311.received_before_close == []


def test_close_sends_no_disconnect_before_connack(make_broker, raw):
    """[MQTT-3.14.0-1] a connection that has not completed CONNECT gets no DISCONNECT at shutdown."""
    broker = make_broker()
    pending = raw(broker, 5)
    pending.send(b"\x10")  # the first byte of a CONNECT, nothing more
    broker.close()
    assert pending.expect_closed()
    assert pending.received_before_close == []


def test_disconnect_client_administrative_action(broker, raw):
    """Server.disconnect_client: v5 DISCONNECT 0x98, the client is gone, others go on."""
    victim = raw(broker, 5)
    victim.connect_ok("victim")
    other = raw(broker, 5)
    other.connect_ok("other")
    assert broker.call(broker.server.disconnect_client("victim", 0x98)) is True
    disconnect = victim.expect_disconnect(0x98)
    assert disconnect.properties.session_expiry_interval is None
    assert broker.call(broker.server.disconnect_client("nobody", 0x98)) is False
    other.send(Pingreq())
    assert isinstance(other.recv_packet(), Pingresp)


def test_listeners_closed_after_close(make_broker, raw):
    """After Server.close() new connections are refused."""
    import socket

    broker = make_broker()
    port = broker.port
    broker.close()
    try:
        refused = socket.create_connection((broker.host, port), timeout=1.0)
    except OSError:
        return
    refused.close()
    raise AssertionError("the TCP listener still accepts connections after close()")
