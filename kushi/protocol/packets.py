"""The fifteen MQTT control packets as frozen records (one class each).

These records are what the codec produces from bytes and turns back into bytes;
the broker, the hooks and the tests all speak them. They carry no wire details
except where the broker needs them: ``Publish.raw`` keeps the exact bytes a
PUBLISH arrived as, so a QoS 0 message can be forwarded without re-encoding.

Protocol versions are the CONNECT protocol level: 3 (MQTT 3.1), 4 (3.1.1), 5.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Final, Union

from .properties import NO_PROPERTIES, Properties

MQTT_3_1: Final = 3
MQTT_3_1_1: Final = 4
MQTT_5: Final = 5


class PacketType(IntEnum):
    CONNECT = 1
    CONNACK = 2
    PUBLISH = 3
    PUBACK = 4
    PUBREC = 5
    PUBREL = 6
    PUBCOMP = 7
    SUBSCRIBE = 8
    SUBACK = 9
    UNSUBSCRIBE = 10
    UNSUBACK = 11
    PINGREQ = 12
    PINGRESP = 13
    DISCONNECT = 14
    AUTH = 15


@dataclass(frozen=True, slots=True)
class Will:
    """The will message of a CONNECT (section 3.1.3.2-3.1.3.4)."""

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    properties: Properties = NO_PROPERTIES


@dataclass(frozen=True, slots=True)
class Connect:
    protocol_version: int = MQTT_5
    client_id: str = ""
    clean_start: bool = True
    keep_alive: int = 60
    will: Will | None = None
    username: str | None = None
    password: bytes | None = None
    properties: Properties = NO_PROPERTIES
    protocol_name: str = "MQTT"  # "MQIsdp" for MQTT 3.1
    type = PacketType.CONNECT


@dataclass(frozen=True, slots=True)
class Connack:
    session_present: bool = False
    reason_code: int = 0  # v5 reason code; the codec maps it for 3.1.1
    properties: Properties = NO_PROPERTIES
    type = PacketType.CONNACK


@dataclass(frozen=True, slots=True)
class Publish:
    topic: str
    payload: bytes | memoryview = b""
    qos: int = 0
    retain: bool = False
    dup: bool = False
    packet_id: int | None = None
    properties: Properties = NO_PROPERTIES
    raw: bytes | memoryview | None = field(default=None, compare=False, repr=False)
    type = PacketType.PUBLISH


@dataclass(frozen=True, slots=True)
class Puback:
    packet_id: int
    reason_code: int = 0
    properties: Properties = NO_PROPERTIES
    type = PacketType.PUBACK


@dataclass(frozen=True, slots=True)
class Pubrec:
    packet_id: int
    reason_code: int = 0
    properties: Properties = NO_PROPERTIES
    type = PacketType.PUBREC


@dataclass(frozen=True, slots=True)
class Pubrel:
    packet_id: int
    reason_code: int = 0
    properties: Properties = NO_PROPERTIES
    type = PacketType.PUBREL


@dataclass(frozen=True, slots=True)
class Pubcomp:
    packet_id: int
    reason_code: int = 0
    properties: Properties = NO_PROPERTIES
    type = PacketType.PUBCOMP


@dataclass(frozen=True, slots=True)
class Subscription:
    """One topic filter of a SUBSCRIBE with its options (section 3.8.3.1)."""

    filter: str
    qos: int = 0
    no_local: bool = False
    retain_as_published: bool = False
    retain_handling: int = 0


@dataclass(frozen=True, slots=True)
class Subscribe:
    packet_id: int
    subscriptions: tuple[Subscription, ...]
    properties: Properties = NO_PROPERTIES
    type = PacketType.SUBSCRIBE


@dataclass(frozen=True, slots=True)
class Suback:
    packet_id: int
    reason_codes: tuple[int, ...]
    properties: Properties = NO_PROPERTIES
    type = PacketType.SUBACK


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    packet_id: int
    filters: tuple[str, ...]
    properties: Properties = NO_PROPERTIES
    type = PacketType.UNSUBSCRIBE


@dataclass(frozen=True, slots=True)
class Unsuback:
    packet_id: int
    reason_codes: tuple[int, ...] = ()  # MQTT 5 only; 3.1.1 UNSUBACK has none
    properties: Properties = NO_PROPERTIES
    type = PacketType.UNSUBACK


@dataclass(frozen=True, slots=True)
class Pingreq:
    type = PacketType.PINGREQ


@dataclass(frozen=True, slots=True)
class Pingresp:
    type = PacketType.PINGRESP


@dataclass(frozen=True, slots=True)
class Disconnect:
    reason_code: int = 0
    properties: Properties = NO_PROPERTIES
    type = PacketType.DISCONNECT


@dataclass(frozen=True, slots=True)
class Auth:
    reason_code: int = 0
    properties: Properties = NO_PROPERTIES
    type = PacketType.AUTH


Packet = Union[
    Connect, Connack, Publish, Puback, Pubrec, Pubrel, Pubcomp, Subscribe, Suback,
    Unsubscribe, Unsuback, Pingreq, Pingresp, Disconnect, Auth,
]


# The builders live here, not in the codec, so that the codec can be compiled (mypyc, the opt-in
# build: build_backend.py): a class in a compiled module is a native class, whose instances
# cannot change ``__class__`` to a plain one, and compiled attribute stores to an object of a
# plain class cost more than the interpreter's. This module is never compiled.

class PublishBuilder:
    """Publish's slots on a class that is not frozen: ``new_publish`` fills one with plain
    attribute stores, then turns it into a Publish by assigning ``__class__`` (CPython
    allows that between classes of the same layout). The result is an ordinary, frozen
    Publish; tests/protocol/test_codec.py checks that it is the Publish the class makes.
    """

    __slots__ = Publish.__slots__


_new = object.__new__


def new_publish(topic: str, payload: bytes | bytearray | memoryview, qos: int, retain: bool, dup: bool,
                packet_id: int | None, properties: Properties, raw: bytes | memoryview | None) -> Publish:
    """``Publish(...)``, built ~5x faster than the frozen dataclass __init__ (the hot path).

    Here, not in the codec: compiled with mypyc, its stores were generic ``PyObject_SetAttr``
    calls, ~190 instructions each, against the interpreter's specialised slot store.

    Not a class with an ``__init__`` either: in CPython 3.11 calling a class with a Python
    ``__init__`` (type_call, slot_tp_init) costs more than the stores themselves
    (callgrind, benchmarks/profile_hotpath.py S3: 25,895 -> 25,543 instructions per message).
    """
    packet: Any = _new(PublishBuilder)
    packet.topic = topic
    packet.payload = payload
    packet.qos = qos
    packet.retain = retain
    packet.dup = dup
    packet.packet_id = packet_id
    packet.properties = properties
    packet.raw = raw
    packet.__class__ = Publish
    return packet  # type: ignore[return-value]


class PubackBuilder:
    """Builds the commonest acknowledgement, a PUBACK with reason 0 and no properties,
    as ``new_publish`` builds a Publish (about 2x faster than Puback's own __init__)."""

    __slots__ = Puback.__slots__

    def __init__(self, packet_id: int) -> None:
        self.packet_id = packet_id
        self.reason_code = 0
        self.properties = NO_PROPERTIES
        self.__class__ = Puback  # type: ignore[assignment]


class ConnectBuilder:
    """Connect's slots on a class that is not frozen: ``new_connect`` stores the fields the
    CONNECT decoder read, then makes the object a Connect, as ``new_publish`` makes a Publish.

    A frozen dataclass's ``__init__`` stores each field through ``object.__setattr__``: for
    Connect's nine fields that cost 18,180 instructions by keyword and 14,608 by position,
    this way 3,293 (callgrind, one Connect; a connection storm decodes one per client).
    """

    __slots__ = Connect.__slots__


def new_connect(protocol_name: str, protocol_version: int, clean_start: bool, keep_alive: int,
                properties: Properties, client_id: str, will: Will | None, username: str | None,
                password: bytes | None) -> Connect:
    """``Connect(...)`` with plain slot stores, as ``new_publish`` (the CONNECT decoder's result).
    Here, not in the codec, for the reason ``new_publish`` is: one call more a CONNECT than
    when the decoder filled the Connect itself (~1.1k instructions interpreted)."""
    packet: Any = _new(ConnectBuilder)
    packet.protocol_name = protocol_name
    packet.protocol_version = protocol_version
    packet.clean_start = clean_start
    packet.keep_alive = keep_alive
    packet.properties = properties
    packet.client_id = client_id
    packet.will = will
    packet.username = username
    packet.password = password
    packet.__class__ = Connect
    return packet  # type: ignore[no-any-return]
