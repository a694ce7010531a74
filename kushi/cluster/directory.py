"""The session directory: which worker holds the session of each client id, and the wills.

Kept by the supervisor (the one node that outlives every worker), asked over
request/reply, so it is the single place that decides a race: two CONNECTs
with one client id on two workers claim it one after the other, and the
later claim wins, as the later CONNECT would with one process.

- ``claim(client_id, node)``: ``node`` now holds the session. The answer is
  the claim's generation and the previous holder, if another node: the
  claimer asks that node to hand the session over (takeover, 0x8E). With
  ``only_if_free`` nothing changes if another node holds it.
- ``release(client_id, node, generation)``: the session ended on ``node``
  (clean start, expiry); ignored if a newer claim has been made since.
- ``adopt(client_ids, node, live)``: with storage, a worker restores stored
  sessions (at boot, or when another worker died): it gets the client ids
  that no live node holds, claimed for it, so each stored session lands on
  one worker and never beside a live one.
- Wills: each claim carries the connecting client's will (``set_will``), so
  it is kept here before the client gets its CONNACK; the worker clears it
  when the will must not be sent (normal DISCONNECT, published already). When a worker dies,
  ``node_died`` hands back the wills of its clients with the time each is
  due (will delay, capped by the session expiry), so they survive the crash.

Pure bookkeeping: no I/O, and every method needing the time takes ``now``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Claim:
    """Who holds one client id's session, and since which claim."""

    node: str
    generation: int


@dataclass
class HeldWill:
    """A will kept for a client whose connection lives on ``node``."""

    node: str
    body: bytes            # the will as an encoded PUBLISH (MQTT 5 form)
    delay: int             # Will Delay Interval, seconds
    session_expiry: int    # the session expiry interval: the will goes out by then at the latest


@dataclass
class DueWill:
    client_id: str
    body: bytes
    due_at: float


class SessionDirectory:
    """Client id -> the node holding its session; the wills of connected clients."""

    def __init__(self) -> None:
        self._claims: dict[str, Claim] = {}
        self._wills: dict[str, HeldWill] = {}
        self._generation = 0

    def __len__(self) -> int:
        return len(self._claims)

    def owner(self, client_id: str) -> Claim | None:
        return self._claims.get(client_id)

    def claim(self, client_id: str, node: str, only_if_free: bool = False) -> tuple[int, str | None]:
        """Record ``node`` as the holder; returns (generation, previous holder if another node).

        ``only_if_free``: record it only if no other node holds the client id;
        otherwise return (0, that node) and change nothing (a clean start that did
        not wait for the answer: ``SessionLink.claim_without_waiting``).
        """
        previous = self._claims.get(client_id)
        if only_if_free and previous is not None and previous.node != node:
            return 0, previous.node
        self._generation += 1
        self._claims[client_id] = Claim(node, self._generation)
        if previous is None or previous.node == node:
            return self._generation, None
        return self._generation, previous.node

    def adopt(self, client_ids: list[str], node: str, live: set[str]) -> list[tuple[str, int]]:
        """Claim for ``node`` each of ``client_ids`` held by no node of ``live`` (nor by ``node``
        itself under an older claim); returns the (client id, generation) pairs granted."""
        granted: list[tuple[str, int]] = []
        for client_id in client_ids:
            claim = self._claims.get(client_id)
            if claim is not None and claim.node != node and claim.node in live:
                continue
            if claim is not None and claim.node == node:
                granted.append((client_id, claim.generation))
                continue
            self._generation += 1
            self._claims[client_id] = Claim(node, self._generation)
            granted.append((client_id, self._generation))
        return granted

    def release(self, client_id: str, node: str, generation: int | None = None) -> bool:
        """The session ended on ``node``; False if the entry belongs to a newer claim."""
        claim = self._claims.get(client_id)
        if claim is None or claim.node != node or (generation is not None and generation < claim.generation):
            return False
        del self._claims[client_id]
        return True

    def set_will(self, client_id: str, node: str, body: bytes, delay: int, session_expiry: int) -> None:
        self._wills[client_id] = HeldWill(node, body, delay, session_expiry)

    def clear_will(self, client_id: str, node: str) -> None:
        will = self._wills.get(client_id)
        if will is not None and will.node == node:
            del self._wills[client_id]

    def node_died(self, node: str, now: float) -> list[DueWill]:
        """Forget ``node``'s sessions; return the wills of its clients, each with when it is due."""
        for client_id in [c for c, claim in self._claims.items() if claim.node == node]:
            del self._claims[client_id]
        due: list[DueWill] = []
        for client_id in [c for c, will in self._wills.items() if will.node == node]:
            will = self._wills.pop(client_id)
            due.append(DueWill(client_id, will.body, now + min(will.delay, will.session_expiry)))
        return due

    def will_resumed(self, client_id: str) -> None:
        """The client connected again without a will: no will of an earlier connection is kept."""
        self._wills.pop(client_id, None)
