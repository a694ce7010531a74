"""The bus between the processes of one kushi host: ZeroMQ over ipc://, msgpack headers.

Every node (a worker, or the supervisor) owns three sockets, all created in
the process that uses them (ZeroMQ contexts are not fork-safe):

- a PUB socket bound at ``ipc://RUNTIME/NAME.pub``; the SUB socket of every
  other node connects to it. A message is one frame: the recipient prefix,
  then msgpack ``[sender, epoch, seq, [kind...], [payload...]]``. The prefix is the recipient's node name
  (``b"w1\\x00"``) or the broadcast prefix ``b"*\\x00"``, never an MQTT topic:
  ZeroMQ filters subscriptions by byte prefix, so "w1" must not match "w10",
  hence the terminating NUL.
- a SUB socket subscribed to its own prefix and to the broadcast prefix.
- a ROUTER socket bound at ``ipc://RUNTIME/NAME.req`` for request/reply, and
  one DEALER per peer it asks. Anything that needs an answer goes this way
  (join, snapshots, session takeover), because PUB/SUB can drop. A request is
  one frame, msgpack ``[request id, kind, sender, payload]`` (the ROUTER reads
  it behind the asker's identity frame); a reply is one frame too, msgpack
  ``[request id, status, payload]``: no message here has a frame count to ask
  ZeroMQ about (``recv_multipart`` asks for RCVMORE after every frame, ~10,000
  instructions each through pyzmq; one message of two frames ~60,000 sent and
  received, against ~10,000 for the frames read one by one).

Batching: ``send``/``broadcast`` only queue an item; one flush per loop
iteration sends everything queued for one recipient as ONE ZeroMQ message of
one frame (a frame per payload costs a pyzmq send call per item: measured
here, 14 us against 11 us of CPU per forwarded message, both ends together;
and with QoS 1 pairs, where a batch holds one or two items, the three frames
of a batch cost ~10% of the broker's CPU in pyzmq's send, hence one).

Loss detection: each batch carries a sequence number per (sender, recipient
prefix). A receiver that sees a number jump counts the gap (``stats.gaps``).
``epoch`` is random per incarnation of a node, so a restarted node starts a
fresh sequence instead of looking like a gap. High-water marks are 0
(unlimited): PUB/SUB does not drop in steady state.

Joining (the slow-joiner gap, closed by a handshake, never by a sleep): one
node is the *registrar* (the supervisor; in tests, the first node). A joining
node asks the registrar for the members (joins are serialised there), then
with each member: it connects its SUB and a DEALER, asks the member over
request/reply to connect back (``_hello``), and sends ``_ping`` over PUB until
the member's ``_pong`` comes back over the member's PUB. A ping received
proves the member's SUB hears us; the pong received proves we hear the
member. Ping and pong carry the sender's current sequence numbers, which is
where a receiver starts counting gaps.

pyzmq's file descriptor is edge-triggered: every wake-up drains the socket
until ZMQ_EVENTS shows no more input (or a budget, then continues on the next
iteration), and every send on a DEALER/ROUTER is followed by a look at
ZMQ_EVENTS (a drain if it shows input), since a send may consume the readiness
edge of pending input.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import secrets
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
import msgpack
import zmq

from ..errors import KushiError

log = logging.getLogger("kushi.bus")

BROADCAST = "*"
DRAIN_BUDGET = 1000          # messages read per wake-up before yielding to the loop
PING_INTERVAL = 0.02         # seconds between two pings of a joining node (a retry, not a wait)
HELLO_TIMEOUT = 5.0          # seconds a joining node waits for a member's answer before skipping it
CLOSE_LINGER_MS = 500        # how long close() lets queued frames go out

# control kinds (reserved, start with "_")
_PING = "_ping"
_PONG = "_pong"
_LEFT = "_left"
_JOIN = "_join"
_JOINED = "_joined"
_HELLO = "_hello"

# plain ints: ``int & zmq.POLLIN`` (an IntFlag) goes through enum's Python __rand__
_POLLIN = int(zmq.POLLIN)

_REPLY_OK = 0
_REPLY_ERROR = 1

Handler = Callable[[str, bytes], None]
Service = Callable[[str, bytes], "bytes | Awaitable[bytes]"]


class BusError(KushiError):
    """The bus could not do what was asked (join, request) in time."""


def prefix_of(name: str) -> bytes:
    """The ZeroMQ subscription prefix addressing node ``name`` (NUL-terminated)."""
    return name.encode() + b"\x00"


_BROADCAST_PREFIX = prefix_of(BROADCAST)


def pub_endpoint(runtime_dir: str, name: str) -> str:
    return f"ipc://{runtime_dir}/{name}.pub"


def req_endpoint(runtime_dir: str, name: str) -> str:
    return f"ipc://{runtime_dir}/{name}.req"


@dataclass
class BusStats:
    """Plain counters of one node's bus traffic; ``gaps`` counts batches known lost."""

    batches_sent: int = 0
    items_sent: int = 0
    batches_received: int = 0
    items_received: int = 0
    gaps: int = 0
    out_of_order: int = 0
    requests_sent: int = 0
    requests_served: int = 0


@dataclass
class _Track:
    """Where the sequence from one (sender, channel) is expected to continue."""

    epoch: int
    expected: int


@dataclass
class _Outbox:
    kinds: list[str] = field(default_factory=list)
    payloads: list[bytes] = field(default_factory=list)


class Bus:
    """One node on the bus. Create it, register handlers, ``await start()``.

    ``name`` is unique on the host ("w0", "w1", "sup"). ``registrar`` names the
    node that serialises joins; None makes this node the registrar.
    """

    def __init__(self, name: str, runtime_dir: str, *, registrar: str | None = None,
                 join_timeout: float = 10.0) -> None:
        if not name or "\x00" in name or name == BROADCAST:
            raise ValueError(f"invalid bus node name {name!r}")
        self.name = name
        self.runtime_dir = runtime_dir
        self.registrar = registrar
        self.join_timeout = join_timeout
        self.epoch = secrets.randbits(62)
        self.peers: set[str] = set()
        self.stats = BusStats()
        self.on_peer_left: list[Callable[[str], None]] = []
        self._handlers: dict[str, Handler] = {_LEFT: self._on_left}
        self._services: dict[str, Service] = {
            _HELLO: self._serve_hello, _JOIN: self._serve_join, _JOINED: self._serve_joined,
        }
        self._outboxes: dict[bytes, _Outbox] = {}
        self._flush_scheduled = False
        self._sent_seq: dict[bytes, int] = {}
        self._tracks: dict[tuple[str, bool], _Track] = {}
        # request id -> (on_answer, its timeout's timer)
        self._pending: dict[int, tuple[Callable[[bytes | None, BusError | None], None],
                                       asyncio.TimerHandle]] = {}
        self._next_request = 1
        self._pongs: dict[str, asyncio.Future[None]] = {}
        self._dealers: dict[str, zmq.Socket] = {}
        self._listening_to: set[str] = set()
        self._join_lock = asyncio.Lock()
        self._join_holder: tuple[str, asyncio.TimerHandle] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._context: zmq.Context | None = None
        self._pub: zmq.Socket | None = None
        self._sub: zmq.Socket | None = None
        self._router: zmq.Socket | None = None
        self._closed = False

    # ------------------------------------------------------------------ set-up

    def on(self, kind: str, handler: Handler) -> None:
        """Call ``handler(sender, payload)`` for each item of ``kind`` received over PUB/SUB."""
        self._handlers[kind] = handler

    def serve(self, kind: str, service: Service) -> None:
        """Answer requests of ``kind``: ``service(sender, payload)`` returns (or awaits) the reply."""
        self._services[kind] = service

    async def start(self) -> None:
        """Bind, connect and (unless registrar) join: on return, every member hears us and we them."""
        self._loop = asyncio.get_running_loop()
        self._context = zmq.Context()
        self._pub = self._socket(zmq.PUB)
        self._pub.bind(pub_endpoint(self.runtime_dir, self.name))
        self._sub = self._socket(zmq.SUB)
        self._sub.setsockopt(zmq.SUBSCRIBE, prefix_of(self.name))
        self._sub.setsockopt(zmq.SUBSCRIBE, prefix_of(BROADCAST))
        self._router = self._socket(zmq.ROUTER)
        self._router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self._router.bind(req_endpoint(self.runtime_dir, self.name))
        self._watch(self._sub, self._on_sub_message)
        self._watch(self._router, self._on_request)
        if self.registrar is not None:
            await self._join()

    def _socket(self, kind: int) -> zmq.Socket:
        assert self._context is not None
        sock = self._context.socket(kind)
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RECONNECT_IVL, 20)
        return sock

    def _watch(self, sock: zmq.Socket, on_message: Callable[..., None]) -> None:
        assert self._loop is not None
        self._loop.add_reader(sock.getsockopt(zmq.FD), self._drain, sock, on_message)
        self._loop.call_soon(self._drain, sock, on_message)

    def _drain(self, sock: zmq.Socket, on_message: Callable[..., None]) -> None:
        """Read until no input is left (the FD is edge-triggered), or a budget, then continue later.

        Every message is one frame (``on_message(data)``), behind the asker's identity frame on
        the ROUTER (``on_message(identity, data)``): a plain ``recv`` each, no RCVMORE asked.
        After a message, ZMQ_EVENTS says whether another is waiting: asking costs less than
        the receive that fails with EAGAIN (callgrind, benchmarks/profile_bus.py: 100,550 ->
        90,227 instructions per batch sent and handled between two nodes; with the plain-int
        POLLIN and the one-frame receive of the SUB socket, 72,270). ZeroMQ signals the FD
        again for input that comes after ZMQ_EVENTS said there was none.
        """
        if self._closed or sock.closed:
            return
        routed = sock is self._router
        for _ in range(DRAIN_BUDGET):
            try:
                data = sock.recv(zmq.NOBLOCK)
                if routed:   # the identity frame; the request's one frame is there with it
                    identity, data = data, sock.recv(zmq.NOBLOCK)
            except zmq.Again:   # woken with nothing to read
                return
            try:
                if routed:
                    on_message(identity, data)
                else:
                    on_message(data)
            except Exception:
                log.exception("bus %s: handling a message failed", self.name)
            if sock.closed or not sock.get(zmq.EVENTS) & _POLLIN:
                return
        assert self._loop is not None
        self._loop.call_soon(self._drain, sock, on_message)

    def _drain_if_input(self, sock: zmq.Socket, on_message: Callable[..., None]) -> None:
        """After a send on ``sock``: the send may have taken the FD's readiness edge of input
        that was waiting, so drain if ZMQ_EVENTS shows any. Asked at once: a drain that finds
        nothing ends in zmq.Again, ~25,000 instructions through pyzmq, ZMQ_EVENTS ~10,000."""
        if not sock.closed and sock.get(zmq.EVENTS) & _POLLIN:
            assert self._loop is not None
            self._loop.call_soon(self._drain, sock, on_message)

    # ------------------------------------------------------------- PUB/SUB side

    def send(self, recipient: str, kind: str, payload: bytes) -> None:
        """Queue one item for ``recipient``; it goes out with this loop iteration's flush."""
        self._queue(prefix_of(recipient), kind, payload)

    def broadcast(self, kind: str, payload: bytes) -> None:
        """Queue one item for every other node."""
        self._queue(prefix_of(BROADCAST), kind, payload)

    def _queue(self, prefix: bytes, kind: str, payload: bytes) -> None:
        outbox = self._outboxes.get(prefix)
        if outbox is None:
            outbox = self._outboxes[prefix] = _Outbox()
        outbox.kinds.append(kind)
        outbox.payloads.append(payload)
        if not self._flush_scheduled and self._loop is not None:
            self._flush_scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        """Send every queued item: one ZeroMQ message per recipient."""
        self._flush_scheduled = False
        if self._pub is None or self._closed:
            return
        outboxes, self._outboxes = self._outboxes, {}
        for prefix, outbox in outboxes.items():
            seq = self._sent_seq.get(prefix, 0) + 1
            self._sent_seq[prefix] = seq
            self._pub.send(prefix + msgpack.packb((self.name, self.epoch, seq, outbox.kinds,
                                                   outbox.payloads)))
            self.stats.batches_sent += 1
            self.stats.items_sent += len(outbox.kinds)

    def _send_control(self, recipient: str, kind: str) -> None:
        """Send ping/pong at once, unsequenced, carrying our sequence numbers for ``recipient``."""
        assert self._pub is not None
        counters = (self.epoch, self._sent_seq.get(prefix_of(BROADCAST), 0),
                    self._sent_seq.get(prefix_of(recipient), 0))
        self._pub.send(prefix_of(recipient) + msgpack.packb(
            (self.name, self.epoch, 0, [kind], [msgpack.packb(counters)])))

    def _on_sub_message(self, data: bytes) -> None:
        start = data.index(0) + 1   # after the recipient prefix (node names hold no NUL)
        sender, epoch, seq, kinds, payloads = msgpack.unpackb(memoryview(data)[start:])
        if sender == self.name:
            return
        if seq == 0:
            self._on_control(sender, kinds[0], payloads[0])
            return
        if not self._check_sequence(sender, data.startswith(_BROADCAST_PREFIX), epoch, seq):
            return
        self.stats.batches_received += 1
        self.stats.items_received += len(kinds)
        handlers = self._handlers
        for kind, payload in zip(kinds, payloads):
            handler = handlers.get(kind)
            if handler is None:
                log.warning("bus %s: no handler for %r from %s", self.name, kind, sender)
                continue
            try:
                handler(sender, payload)
            except Exception:  # one bad item must not cost the rest of the batch
                log.exception("bus %s: handling %r from %s failed", self.name, kind, sender)

    def _check_sequence(self, sender: str, broadcast: bool, epoch: int, seq: int) -> bool:
        """Count a gap if ``seq`` jumps; False for a batch seen already (never handle it twice)."""
        track = self._tracks.get((sender, broadcast))
        if track is None or track.epoch != epoch:
            return True  # not counted until the sender's ping/pong told us where it stands
        if seq > track.expected:
            self.stats.gaps += seq - track.expected
            log.warning("bus %s: %d batch(es) from %s lost", self.name, seq - track.expected, sender)
        elif seq < track.expected:
            self.stats.out_of_order += 1
            return False
        track.expected = seq + 1
        return True

    def _on_control(self, sender: str, kind: str, payload: bytes) -> None:
        epoch, broadcast_seq, direct_seq = msgpack.unpackb(payload)
        for broadcast, last in ((True, broadcast_seq), (False, direct_seq)):
            track = self._tracks.get((sender, broadcast))
            if track is None or track.epoch != epoch:
                self._tracks[(sender, broadcast)] = _Track(epoch, last + 1)
        if kind == _PING:
            self.peers.add(sender)
            self._send_control(sender, _PONG)
        elif kind == _PONG:
            waiter = self._pongs.get(sender)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    # --------------------------------------------------------- request/reply side

    async def request(self, peer: str, kind: str, payload: bytes = b"",
                      timeout: float = 10.0) -> bytes:
        """Ask ``peer`` and wait for its answer; raises BusError on error or timeout."""
        assert self._loop is not None
        reply: asyncio.Future[bytes] = self._loop.create_future()
        self.ask(peer, kind, payload, functools.partial(_settle, reply), timeout)
        return await reply

    def ask(self, peer: str, kind: str, payload: bytes,
            on_answer: Callable[[bytes | None, BusError | None], None], timeout: float = 10.0) -> None:
        """Ask ``peer`` without waiting: ``on_answer(reply, None)`` when it answers, or
        ``on_answer(None, error)`` (the peer's error, no answer in ``timeout``, the bus
        closing), once. ``request`` is this, awaited; a caller that asks often (a connection
        storm's claim batches) saves the coroutine, task and future of each request. The
        timeout is a timer (not ``asyncio.wait_for``: a future, a callback and a timer more)."""
        loop = self._loop
        assert loop is not None
        request_id = self._next_request
        self._next_request += 1
        dealer = self._dealer(peer)
        dealer.send(msgpack.packb((request_id, kind, self.name, payload)))
        self.stats.requests_sent += 1
        self._pending[request_id] = (on_answer, loop.call_later(timeout, self._no_answer, request_id,
                                                                peer, kind, timeout))
        self._drain_if_input(dealer, self._on_reply)

    def _no_answer(self, request_id: int, peer: str, kind: str, timeout: float) -> None:
        pending = self._pending.pop(request_id, None)
        if pending is not None:
            pending[0](None, BusError(f"bus {self.name}: no answer from {peer} to {kind} in {timeout}s"))

    def _dealer(self, peer: str) -> zmq.Socket:
        dealer = self._dealers.get(peer)
        if dealer is None:
            dealer = self._dealers[peer] = self._socket(zmq.DEALER)
            dealer.connect(req_endpoint(self.runtime_dir, peer))
            self._watch(dealer, self._on_reply)
        return dealer

    def _on_reply(self, data: bytes) -> None:
        request_id, status, payload = msgpack.unpackb(data)
        pending = self._pending.pop(request_id, None)
        if pending is None:   # it came after its timeout
            return
        on_answer, timer = pending
        timer.cancel()
        if status == _REPLY_OK:
            on_answer(payload, None)
        else:
            on_answer(None, BusError(payload.decode(errors="replace")))

    def _on_request(self, identity: bytes, data: bytes) -> None:
        """A request read by ``_drain``, which looks for more input after it: a reply sent
        here needs no look of its own."""
        request_id, kind, sender, payload = msgpack.unpackb(data)
        self.stats.requests_served += 1
        service = self._services.get(kind)
        if service is None:
            self._reply(identity, request_id, _REPLY_ERROR, f"no service {kind!r}".encode())
            return
        try:
            result = service(sender, payload)
        except Exception as exc:
            log.exception("bus %s: request %s from %s failed", self.name, kind, sender)
            self._reply(identity, request_id, _REPLY_ERROR, str(exc).encode())
            return
        if result.__class__ is not bytes and inspect.isawaitable(result):   # isawaitable: abc checks
            assert self._loop is not None
            task = self._loop.create_task(_await(result))
            task.add_done_callback(lambda done: self._reply_task(identity, request_id, done))
        else:
            self._reply(identity, request_id, _REPLY_OK, result)

    def _reply_task(self, identity: bytes, request_id: int, done: asyncio.Task[bytes]) -> None:
        if done.cancelled():
            self._reply(identity, request_id, _REPLY_ERROR, b"cancelled")
        elif done.exception() is not None:
            self._reply(identity, request_id, _REPLY_ERROR, str(done.exception()).encode())
        else:
            self._reply(identity, request_id, _REPLY_OK, done.result())
        if self._router is not None and not self._closed:   # sent outside a drain of the ROUTER
            self._drain_if_input(self._router, self._on_request)

    def _reply(self, identity: bytes, request_id: int, status: int, payload: bytes) -> None:
        if self._router is None or self._closed:
            return
        try:   # the identity frame, then the reply's one frame
            self._router.send(identity, zmq.SNDMORE)
            self._router.send(msgpack.packb((request_id, status, payload)))
        except zmq.ZMQError as exc:  # the asker is gone (EHOSTUNREACH)
            log.info("bus %s: reply to a gone peer dropped: %s", self.name, exc)

    # ------------------------------------------------------------------ joining

    async def _join(self) -> None:
        assert self.registrar is not None
        members = msgpack.unpackb(await self.request(self.registrar, _JOIN, timeout=self.join_timeout))
        try:
            for member in members:
                try:
                    await self._link(member)
                except BusError:
                    if member == self.registrar:
                        raise
                    log.warning("bus %s: member %s did not answer; skipped", self.name, member)
        finally:
            await self.request(self.registrar, _JOINED, timeout=self.join_timeout)

    def _listen_to(self, peer: str) -> None:
        """Connect our SUB to ``peer``'s PUB, once: ZeroMQ reconnects by itself when the peer
        restarts, and a second connect to the same endpoint would deliver everything twice."""
        assert self._sub is not None
        if peer not in self._listening_to:
            self._listening_to.add(peer)
            self._sub.connect(pub_endpoint(self.runtime_dir, peer))

    async def _link(self, peer: str) -> None:
        """Make the links with ``peer`` live both ways (see the module docstring)."""
        assert self._loop is not None
        self._listen_to(peer)
        # a member that died a moment ago must not hold every join up for long
        await self.request(peer, _HELLO, timeout=min(self.join_timeout, HELLO_TIMEOUT))
        pong = self._pongs[peer] = self._loop.create_future()
        deadline = self._loop.time() + self.join_timeout
        try:
            while not pong.done():
                if self._loop.time() > deadline:
                    raise BusError(f"bus {self.name}: no pong from {peer} in {self.join_timeout}s")
                self._send_control(peer, _PING)
                await asyncio.wait({pong}, timeout=PING_INTERVAL)
        finally:
            self._pongs.pop(peer, None)
        self.peers.add(peer)

    def _serve_hello(self, sender: str, payload: bytes) -> bytes:
        """A joining node asks us to listen to its PUB (the ping that follows proves it)."""
        self._listen_to(sender)
        self._dealer(sender)
        return b""

    async def _serve_join(self, sender: str, payload: bytes) -> bytes:
        """Registrar: admit one joiner at a time; answer with the members it must link to."""
        await self._join_lock.acquire()
        assert self._loop is not None
        timer = self._loop.call_later(self.join_timeout * 3, self._release_join, sender)
        self._join_holder = (sender, timer)
        members = sorted((self.peers | {self.name}) - {sender})
        return msgpack.packb(members)

    def _serve_joined(self, sender: str, payload: bytes) -> bytes:
        self._release_join(sender)
        return b""

    def _release_join(self, joiner: str) -> None:
        if self._join_holder is None or self._join_holder[0] != joiner:
            return
        self._join_holder[1].cancel()
        self._join_holder = None
        self._join_lock.release()

    # ----------------------------------------------------------------- leaving

    def forget(self, peer: str, announce: bool = True) -> None:
        """``peer`` is gone (its process died or left): drop it, and tell the others if asked."""
        self.peers.discard(peer)
        self._tracks.pop((peer, True), None)
        self._tracks.pop((peer, False), None)
        dealer = self._dealers.pop(peer, None)
        if dealer is not None:
            assert self._loop is not None
            self._loop.remove_reader(dealer.getsockopt(zmq.FD))
            dealer.close(0)
        self._release_join(peer)
        if announce:
            self.broadcast(_LEFT, peer.encode())
        for callback in self.on_peer_left:
            callback(peer)

    def _on_left(self, sender: str, payload: bytes) -> None:
        peer = payload.decode()
        if peer != self.name:
            self.forget(peer, announce=False)

    async def close(self) -> None:
        """Flush what is queued, then close every socket and the context."""
        if self._closed or self._context is None:
            self._closed = True
            return
        self.flush()
        self._closed = True
        assert self._loop is not None
        sockets = [self._pub, self._sub, self._router, *self._dealers.values()]
        for sock in sockets:
            if sock is None:
                continue
            if sock is not self._pub:
                self._loop.remove_reader(sock.getsockopt(zmq.FD))
                sock.close(0)
        pending, self._pending = self._pending, {}
        for on_answer, timer in pending.values():
            timer.cancel()
            try:
                on_answer(None, BusError(f"bus {self.name} closed"))
            except Exception:
                log.exception("bus %s: an answer to a request failed", self.name)
        # the PUB lingers briefly so what was just flushed still goes out
        assert self._pub is not None
        self._pub.close(CLOSE_LINGER_MS)
        context = self._context
        await asyncio.get_running_loop().run_in_executor(None, context.term)

    def stats_dict(self) -> dict[str, int]:
        return dict(vars(self.stats))


async def _await(awaitable: Awaitable[bytes]) -> bytes:
    return await awaitable


def _settle(reply: asyncio.Future[bytes], answer: bytes | None, error: BusError | None) -> None:
    """``request``'s ``on_answer``: the awaited future gets the answer or the error (unless the
    request was cancelled meanwhile)."""
    if reply.done():
        return
    if error is None:
        reply.set_result(answer)   # type: ignore[arg-type]
    else:
        reply.set_exception(error)


def make_runtime_dir() -> str:
    """A private directory for the ipc:// endpoints of one host's nodes.

    mkdtemp creates it with mode 0700, so no other user can reach the bus.
    """
    return tempfile.mkdtemp(prefix="kushi-")


__all__ = ["Bus", "BusError", "BusStats", "BROADCAST", "make_runtime_dir", "prefix_of"]
