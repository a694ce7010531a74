"""Reading the reason code of a PUBACK through paho (the ``support.paho`` helpers do not expose it)."""

from __future__ import annotations

import queue
from typing import Any

from example_process import WAIT

NOT_AUTHORIZED = 0x87


def puback_reason(client: Any, topic: str, payload: bytes) -> int:
    """Publish at QoS 1 from a connected v5 ``PahoClient``; the PUBACK's reason code."""
    acks: queue.Queue[tuple[int, int]] = queue.Queue()
    client.client.on_publish = lambda _c, _u, mid, reason_code, _p: acks.put((mid, reason_code.value))
    info = client.client.publish(topic, payload, qos=1)
    try:
        mid, reason = acks.get(timeout=WAIT)
    except queue.Empty:
        raise AssertionError(f"no PUBACK for {topic!r} within {WAIT} s") from None
    assert mid == info.mid
    return reason
