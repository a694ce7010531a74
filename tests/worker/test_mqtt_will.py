"""Will messages: published on abnormal close, kept back on a normal DISCONNECT, delayed.

Checklist: [MQTT-3.1.2-7..15], [MQTT-3.1.3-9/10], 3.1.1 [MQTT-3.1.2-8/10], [MQTT-3.14.4-3].
Each "no will" check is followed by a positive control: a second client's will,
published after the one that must not come, must be the next message.
"""

from __future__ import annotations

import time

import pytest
from support.paho import connect_properties, will_properties

VERSIONS = pytest.mark.parametrize("version", [4, 5], ids=["v311", "v5"])


def watcher(paho, broker, topic_filter: str = "will/#"):
    client = paho.connected(broker, "watcher", 5)
    assert client.subscribe(topic_filter, 1) == [1]
    return client


def with_will(paho, broker, client_id: str, version: int, topic: str, payload: bytes, qos: int = 0,
              retain: bool = False, properties=None, connect_props=None):
    client = paho(broker, client_id, version)
    client.will_set(topic, payload, qos=qos, retain=retain, properties=properties)
    client.connect(properties=connect_props)
    return client


@VERSIONS
def test_will_published_on_abnormal_close(broker, paho, version):
    """[MQTT-3.1.2-8] (3.1.1 [MQTT-3.1.2-8]) [MQTT-3.1.2-14] the will goes out when the connection
    drops without DISCONNECT, as a non-retained message at its QoS."""
    watch = watcher(paho, broker)
    client = with_will(paho, broker, "dropper", version, "will/dropper", b"lost", qos=1)
    client.drop()
    message = watch.expect_message("will/dropper", b"lost")
    assert message.qos == 1 and message.retain is False
    assert broker.call(broker.server.retained("will/#")) == [], "a Will Retain 0 will was retained"


@VERSIONS
def test_no_will_on_normal_disconnect(broker, paho, version):
    """[MQTT-3.1.2-10] [MQTT-3.14.4-3] (3.1.1 [MQTT-3.1.2-10] [MQTT-3.14.4-3]) DISCONNECT
    (v5: 0x00) deletes the will."""
    watch = watcher(paho, broker)
    polite = with_will(paho, broker, "polite", version, "will/polite", b"must not appear")
    polite.disconnect()
    control = with_will(paho, broker, "control", version, "will/control", b"control")
    control.drop()
    watch.expect_message("will/control", b"control")
    watch.expect_no_message()


def test_will_published_on_disconnect_with_will_message(broker, paho):
    """Issue 2: v5 DISCONNECT 0x04 (Disconnect with Will Message) publishes the will."""
    watch = watcher(paho, broker)
    client = with_will(paho, broker, "asks", 5, "will/asks", b"on purpose")
    client.disconnect(reasoncode=0x04)
    watch.expect_message("will/asks", b"on purpose")


@VERSIONS
def test_retained_will(broker, paho, version):
    """[MQTT-3.1.2-15] Will Retain 1: the will is published as a retained message."""
    client = with_will(paho, broker, "ret", version, "will/retained", b"last words", qos=1, retain=True)
    client.drop()
    late = paho.connected(broker, "late", version)
    assert late.subscribe("will/retained", 1) == [1]
    assert late.expect_message("will/retained", b"last words").retain is True


def test_will_properties_forwarded(broker, paho):
    """[MQTT-3.1.3-10] the will keeps its User Properties in order (and its other properties)."""
    watch = watcher(paho, broker)
    user_properties = [("z", "1"), ("a", "2"), ("z", "0")]
    client = with_will(paho, broker, "propped", 5, "will/props", b"p", properties=will_properties(
        UserProperty=user_properties, ContentType="text/plain", ResponseTopic="reply/t",
    ))
    client.drop()
    message = watch.expect_message("will/props", b"p")
    assert message.properties.UserProperty == user_properties
    assert message.properties.ContentType == "text/plain"
    assert message.properties.ResponseTopic == "reply/t"


def test_will_delay_interval(broker, paho):
    """[MQTT-3.1.2-8] the will waits for its Will Delay Interval before it is published."""
    watch = watcher(paho, broker)
    client = with_will(paho, broker, "delayed", 5, "will/delayed", b"late",
                       properties=will_properties(WillDelayInterval=1),
                       connect_props=connect_properties(SessionExpiryInterval=60))
    dropped_at = time.monotonic()
    client.drop()
    watch.expect_message("will/delayed", b"late", timeout=3.0)
    assert time.monotonic() - dropped_at >= 0.9, "the will did not wait for its delay"


def test_reconnect_within_will_delay_cancels_will(broker, paho):
    """[MQTT-3.1.3-9] a new connection for the session within the Will Delay Interval: no will.
    Control: an identical client that does not come back has its will published."""
    watch = watcher(paho, broker)
    delayed = {"properties": will_properties(WillDelayInterval=1),
               "connect_props": connect_properties(SessionExpiryInterval=60)}
    returning = with_will(paho, broker, "returning", 5, "will/returning", b"must not appear", **delayed)
    returning.drop()
    back = paho(broker, "returning", 5, clean=False)
    back.connect(properties=connect_properties(SessionExpiryInterval=60))
    gone = with_will(paho, broker, "gone", 5, "will/gone", b"control", **delayed)
    gone.drop()
    watch.expect_message("will/gone", b"control", timeout=3.0)
    watch.expect_no_message()


def test_will_published_when_session_ends_before_delay(broker, paho):
    """[MQTT-3.1.2-8] the will goes out when the session ends, even if the delay is longer."""
    watch = watcher(paho, broker)
    client = with_will(paho, broker, "ending", 5, "will/ending", b"session over",
                       properties=will_properties(WillDelayInterval=30),
                       connect_props=connect_properties(SessionExpiryInterval=1))
    client.drop()
    watch.expect_message("will/ending", b"session over", timeout=3.0)


def test_will_published_once_then_dropped_from_the_session(broker, paho):
    """[MQTT-3.1.2-10] a will published at the end of its delay is removed from the session: it is
    not published again when the session itself ends a second later. Control: a plain message
    published after the session ended is the next one the watcher gets."""
    from support.waiting import let_time_pass

    watch = watcher(paho, broker)
    client = with_will(paho, broker, "once", 5, "will/once", b"only once",
                       properties=will_properties(WillDelayInterval=1),
                       connect_props=connect_properties(SessionExpiryInterval=2))
    client.drop()
    watch.expect_message("will/once", b"only once", timeout=3.0)
    let_time_pass(2.1)  # the session ends 2 s after the drop, seen at the next 1 s broker tick
    paho.connected(broker, "control", 5).publish("will/control", b"after the session", qos=1)
    watch.expect_message("will/control", b"after the session")


@VERSIONS
def test_will_published_on_keep_alive_timeout(broker, raw, paho, version):
    """[MQTT-3.1.2-22] a keep-alive timeout is a network failure: the will is published."""
    from kushi.protocol.packets import Will

    watch = watcher(paho, broker)
    client = raw(broker, version)
    client.connect_ok("silent", keep_alive=1, will=Will("will/silent", b"timed out"))
    watch.expect_message("will/silent", b"timed out", timeout=3.0)


@VERSIONS
def test_will_published_when_session_taken_over(broker, paho, version):
    """[MQTT-3.1.4-3] a takeover closes the old connection without DISCONNECT from the client,
    so its will is published (v5: the takeover does not delay a will without Will Delay)."""
    watch = watcher(paho, broker)
    with_will(paho, broker, "twin", version, "will/twin", b"replaced")
    paho.connected(broker, "twin", version)
    watch.expect_message("will/twin", b"replaced")


@pytest.mark.parametrize("bad_disconnect", [
    pytest.param(b"\xe0\x01\x05", id="undefined_reason_code-MQTT-3.14.2-1"),
    pytest.param(b"\xe2\x00", id="reserved_flags-MQTT-3.14.1-1"),
])
def test_invalid_disconnect_is_an_error_so_the_will_is_published(broker, raw, paho, bad_disconnect):
    """[MQTT-3.14.2-1] [MQTT-3.14.1-1] a DISCONNECT with an undefined reason code or reserved flags
    is an error, not a normal disconnect: the connection is closed for a protocol error and the
    will is published (3.1.2.5)."""
    from kushi.protocol.packets import Will

    watch = watcher(paho, broker)
    client = raw(broker, 5)
    client.connect_ok("sloppy", will=Will("will/sloppy", b"error close"))
    client.send(bad_disconnect)
    assert client.expect_closed()
    watch.expect_message("will/sloppy", b"error close")
