"""paho-mqtt 2.x clients (callback API version 2) for tests, with waits instead of sleeps.

``PahoClient`` wraps one ``paho.mqtt.client.Client`` running its network loop
in paho's thread. Every callback the tests care about feeds a ``queue.Queue`` or
sets a ``threading.Event``; the helpers wait on those with short timeouts.

Absence of a message: ``expect_no_message`` is the only "nothing arrives"
wait, and it is short. A test must first give it a positive control: publish a
message that must arrive *after* the one that must not, and check with
``expect_message`` that the control is the next message. That turns the
absence into an ordering check that cannot pass vacuously.
"""

from __future__ import annotations

import queue
import threading
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

WAIT = 2.0
"""Default seconds to wait for something that must happen."""

ABSENCE_WINDOW = 0.3
"""Seconds to wait for something that must not happen (after a positive control)."""

PAHO_PROTOCOL = {3: mqtt.MQTTv31, 4: mqtt.MQTTv311, 5: mqtt.MQTTv5}


def publish_properties(**fields: Any) -> Properties:
    """paho PUBLISH properties from keyword arguments (``MessageExpiryInterval=5``, ...)."""
    return _properties(PacketTypes.PUBLISH, fields)


def connect_properties(**fields: Any) -> Properties:
    """paho CONNECT properties from keyword arguments (``SessionExpiryInterval=10``, ...)."""
    return _properties(PacketTypes.CONNECT, fields)


def will_properties(**fields: Any) -> Properties:
    """paho will properties (``WillDelayInterval=1``, ...)."""
    return _properties(PacketTypes.WILLMESSAGE, fields)


def subscribe_properties(**fields: Any) -> Properties:
    """paho SUBSCRIBE properties (``SubscriptionIdentifier=7``)."""
    return _properties(PacketTypes.SUBSCRIBE, fields)


def _properties(packet_type: int, fields: dict[str, Any]) -> Properties:
    props = Properties(packet_type)
    for name, value in fields.items():
        setattr(props, name, value)
    return props


class PahoClient:
    """A paho client of MQTT ``version`` (3, 4 or 5) over ``transport`` ("tcp" or "websockets")."""

    def __init__(
        self,
        host: str,
        port: int,
        client_id: str = "",
        version: int = 5,
        transport: str = "tcp",
        clean: bool = True,
    ) -> None:
        self.host = host
        self.port = port
        self.version = version
        self.clean = clean
        kwargs: dict[str, Any] = {}
        if version != 5:
            kwargs["clean_session"] = clean
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=PAHO_PROTOCOL[version],
            transport=transport,
            reconnect_on_failure=False,
            **kwargs,
        )
        if transport == "websockets":
            self.client.ws_set_options(path="/mqtt")
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self._connack: queue.Queue[tuple[Any, Any, Any]] = queue.Queue()
        self._subacks: dict[int, queue.Queue[list[Any]]] = {}
        self._unsubacks: dict[int, queue.Queue[list[Any]]] = {}
        self._acks_lock = threading.Lock()
        self.disconnected = threading.Event()
        self.disconnect_reason: Any = None
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.on_unsubscribe = self._on_unsubscribe
        self.client.on_disconnect = self._on_disconnect

    # ---- callbacks (paho's network thread) ------------------------------
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self._connack.put((flags, reason_code, properties))

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self.messages.put(message)

    def _ack_queue(self, table: dict[int, queue.Queue[list[Any]]], mid: int) -> queue.Queue[list[Any]]:
        with self._acks_lock:
            return table.setdefault(mid, queue.Queue())

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        self._ack_queue(self._subacks, mid).put(list(reason_codes))

    def _on_unsubscribe(self, client: Any, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        self._ack_queue(self._unsubacks, mid).put(list(reason_codes))

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self.disconnect_reason = reason_code
        self.disconnected.set()

    # ---- actions ---------------------------------------------------------
    def will_set(self, topic: str, payload: bytes | str, qos: int = 0, retain: bool = False,
                 properties: Properties | None = None) -> None:
        """Set the will (before ``connect``)."""
        self.client.will_set(topic, payload, qos=qos, retain=retain, properties=properties)

    def connect(self, keepalive: int = 60, properties: Properties | None = None,
                expect_success: bool = True) -> tuple[Any, Any, Any]:
        """Connect and wait for the CONNACK; returns (flags, reason_code, properties)."""
        kwargs: dict[str, Any] = {"keepalive": keepalive}
        if self.version == 5:
            kwargs["clean_start"] = self.clean
            kwargs["properties"] = properties
        self.client.connect(self.host, self.port, **kwargs)
        self.client.loop_start()
        try:
            flags, reason_code, props = self._connack.get(timeout=WAIT)
        except queue.Empty:
            raise AssertionError(f"no CONNACK within {WAIT} s") from None
        if expect_success:
            assert not reason_code.is_failure, f"connection refused: {reason_code}"
        return flags, reason_code, props

    def subscribe(self, topic: str, qos: int = 0, options: SubscribeOptions | None = None,
                  properties: Properties | None = None) -> list[int]:
        """Subscribe and wait for the SUBACK; returns the granted reason codes as ints."""
        if options is not None:
            result, mid = self.client.subscribe(topic, options=options, properties=properties)
        else:
            result, mid = self.client.subscribe(topic, qos, properties=properties)
        assert result == mqtt.MQTT_ERR_SUCCESS, f"subscribe not sent: {result}"
        return self._wait_ack(self._subacks, mid, "SUBACK")

    def subscribe_many(self, pairs: list[tuple[str, int]]) -> list[int]:
        """One SUBSCRIBE with several (filter, qos) pairs; returns the reason codes."""
        result, mid = self.client.subscribe(pairs)
        assert result == mqtt.MQTT_ERR_SUCCESS, f"subscribe not sent: {result}"
        return self._wait_ack(self._subacks, mid, "SUBACK")

    def unsubscribe(self, topic: str | list[str]) -> list[int]:
        """Unsubscribe and wait for the UNSUBACK; returns its reason codes (empty for v3)."""
        result, mid = self.client.unsubscribe(topic)
        assert result == mqtt.MQTT_ERR_SUCCESS, f"unsubscribe not sent: {result}"
        return self._wait_ack(self._unsubacks, mid, "UNSUBACK")

    def _wait_ack(self, table: dict[int, queue.Queue[list[Any]]], mid: int, name: str) -> list[int]:
        try:
            codes = self._ack_queue(table, mid).get(timeout=WAIT)
        except queue.Empty:
            raise AssertionError(f"no {name} within {WAIT} s") from None
        return [int(getattr(code, "value", code)) for code in codes]

    def publish(self, topic: str, payload: bytes | str = b"", qos: int = 0, retain: bool = False,
                properties: Properties | None = None) -> mqtt.MQTTMessageInfo:
        """Publish and wait until paho has completed the QoS flow (PUBACK/PUBCOMP, or sent for QoS 0)."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        info.wait_for_publish(timeout=WAIT)
        assert info.is_published(), f"publish to {topic!r} (QoS {qos}) not completed within {WAIT} s"
        return info

    def disconnect(self, reasoncode: int | None = None) -> None:
        """Send DISCONNECT (v5: with ``reasoncode``) and wait for the connection to end."""
        code = None
        if reasoncode is not None:
            from paho.mqtt.reasoncodes import ReasonCode

            code = ReasonCode(PacketTypes.DISCONNECT, identifier=reasoncode)
        self.client.disconnect(reasoncode=code)
        self.wait_disconnected()
        self.client.loop_stop()

    def drop(self) -> None:
        """End the connection without DISCONNECT (an abnormal close: the will is published)."""
        sock = self.client.socket()
        if sock is not None:
            import socket

            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.wait_disconnected()
        self.client.loop_stop()

    def stop(self) -> None:
        """Tear down whatever state the client is in (used at test teardown)."""
        if not self.disconnected.is_set():
            try:
                self.client.disconnect()
            except Exception:  # noqa: BLE001 - teardown must not fail the test twice
                pass
        self.disconnected.wait(WAIT)
        self.client.loop_stop()

    # ---- waiting ---------------------------------------------------------
    def wait_disconnected(self, timeout: float = WAIT) -> Any:
        """Wait until the connection has ended; returns the reason paho reported."""
        assert self.disconnected.wait(timeout), f"still connected after {timeout} s"
        return self.disconnect_reason

    def wait_for_message(self, timeout: float = WAIT) -> mqtt.MQTTMessage:
        """The next message delivered to this client."""
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no message within {timeout} s") from None

    def expect_message(self, topic: str, payload: bytes, timeout: float = WAIT) -> mqtt.MQTTMessage:
        """Assert that the next message delivered is exactly (topic, payload)."""
        message = self.wait_for_message(timeout)
        assert (message.topic, message.payload) == (topic, payload), (
            f"expected {topic!r} {payload!r} next, got {message.topic!r} {message.payload!r}"
        )
        return message

    def expect_no_message(self, within: float = ABSENCE_WINDOW) -> None:
        """Assert nothing (more) arrives within a short window. Precede it with a positive control."""
        try:
            message = self.messages.get(timeout=within)
        except queue.Empty:
            return
        raise AssertionError(f"unexpected message {message.topic!r} {message.payload!r}")


class PahoFactory:
    """Makes ``PahoClient``s against a broker and stops them all at teardown."""

    def __init__(self) -> None:
        self.made: list[PahoClient] = []

    def __call__(self, broker: Any, client_id: str = "", version: int = 5, transport: str = "tcp",
                 clean: bool = True) -> PahoClient:
        port = broker.ws_port if transport == "websockets" else broker.port
        client = PahoClient(broker.host, port, client_id, version, transport, clean)
        self.made.append(client)
        return client

    def connected(self, broker: Any, client_id: str = "", version: int = 5, **kwargs: Any) -> PahoClient:
        """A client already connected (clean session/start unless ``clean=False``)."""
        connect_kwargs = {key: kwargs.pop(key) for key in ("keepalive", "properties") if key in kwargs}
        client = self(broker, client_id, version, **kwargs)
        client.connect(**connect_kwargs)
        return client

    def stop_all(self) -> None:
        for client in self.made:
            client.stop()
