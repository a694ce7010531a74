"""kushi.worker: one broker process.

    server.py       kushi.Server: listeners, hooks, the tick, the inline client, introspection
    options.py      kushi.Options: every setting, with defaults and range checks
    listeners.py    TCP / WebSocket / TLS / WSS / Unix listener configs and start_listener
    connection.py   MQTTConnection: one client's connection (asyncio Protocol), batched I/O
    broker.py       Broker: sessions, packets of connected clients, wills, expiry, the tick
    connect.py      CONNECT, enhanced authentication, takeover, CONNACK
    subscriptions.py  SUBSCRIBE / UNSUBSCRIBE, retained messages on subscribe
    delivery.py     routing a message to its subscribers (the hot path), QoS 1/2 flow control
    session.py      Session: per-client-id state, pure logic with ``now`` passed in
    fabric.py       the cluster seam; LocalFabric for a single process
"""
