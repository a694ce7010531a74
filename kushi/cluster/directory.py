"""The session directory: which worker holds the session of each client id, and the wills.

Kept by the supervisor (the one node that outlives every worker), asked over
request/reply, so it is the single place that decides a race: two CONNECTs
with one client id on two workers claim it one after the other, and the
later claim wins, as the later CONNECT would with one process.

- ``claim_all(claims, node)``: ``node`` now holds the sessions of these client ids,
  claimed in this order (one request of a worker: ``SessionLink``'s batches). A claim
  recorded takes the next generation; the answer names, for each claim whose client id
  another node held, that node: the claimer asks it to hand the session over (takeover,
  0x8E). A claim *only if free* (a clean start that did not wait for the answer) changes
  nothing if another node holds the client id. ``claim`` is one of them.
- ``release_all(releases, node)``: the sessions ended on ``node`` (clean start,
  expiry); each is ignored if a newer claim has been made since.
- ``adopt(client_ids, node, live)``: with storage, a worker restores stored
  sessions (at boot, or when another worker died): it gets the client ids
  that no live node holds, claimed for it, so each stored session lands on
  one worker and never beside a live one.
- Wills: each claim carries the connecting client's will (``claim_all``), so
  it is kept here before the client gets its CONNACK; the worker clears it
  when the will must not be sent (normal DISCONNECT, published already). When a worker dies,
  ``node_died`` hands back the wills of its clients with the time each is
  due (will delay, capped by the session expiry), so they survive the crash.

Pure bookkeeping: no I/O, and every method needing the time takes ``now``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Claim:
    """Who holds one client id's session, and since which claim."""

    node: str
    generation: int


Entry = tuple   # (node, generation): what the directory keeps per client id (``owner`` makes a Claim)


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
        # a plain tuple per client id, not a Claim: a connection storm makes one per CONNECT
        self._claims: dict[str, Entry] = {}
        self._wills: dict[str, HeldWill] = {}
        self._generation = 0

    def __len__(self) -> int:
        return len(self._claims)

    def owner(self, client_id: str) -> Claim | None:
        entry = self._claims.get(client_id)
        return None if entry is None else Claim(*entry)

    def claim(self, client_id: str, node: str, only_if_free: bool = False) -> tuple[int, str | None]:
        """One claim, as ``claim_all`` makes it, with no will (an earlier connection's is
        dropped): returns (generation, the other node that held the client id, or None);
        (0, that node) if ``only_if_free`` and nothing was recorded."""
        first, not_free = self.claim_all([client_id] if only_if_free else [(client_id, True, None)], node)
        if not not_free:
            return first, None
        return (first if self._generation == first else 0), not_free[1]

    def claim_all(self, claims: list[Any], node: str) -> tuple[int, list[Any]]:
        """Record ``node`` as the holder of each claim's client id, in order.

        A claim is a client id alone (a clean start without a will that did not wait for
        the answer: recorded only if no other node holds the client id, else nothing
        changes) or (client id, clean start, will), will being None or (body, delay,
        session expiry): it is kept (``set_will``), and None drops an earlier
        connection's. Returns (first generation, not free): the claims recorded took
        the generations first, first + 1, ... in order; ``not_free`` is a flat list
        [index, holder, ...] of the claims whose client id another node held (a client
        id alone there took no generation).

        Written as one loop over plain tuples: a connection storm claims thousands of
        client ids a second, a few dozen to a request.
        """
        entries = self._claims
        wills = self._wills
        generation = first = self._generation + 1
        not_free: list[Any] = []
        for index, claim in enumerate(claims):
            if claim.__class__ is str:
                client_id, will = claim, None
                previous = entries.get(client_id)
                if previous is not None and previous[0] != node:
                    not_free += (index, previous[0])
                    continue
            else:
                client_id, _, will = claim
                previous = entries.get(client_id)
                if previous is not None and previous[0] != node:
                    not_free += (index, previous[0])
            entries[client_id] = (node, generation)
            generation += 1
            if will is not None:
                body, delay, session_expiry = will
                wills[client_id] = HeldWill(node, body, delay, session_expiry)
            elif wills:
                wills.pop(client_id, None)   # the client connected again without a will
        self._generation = generation - 1
        return first, not_free

    def adopt(self, client_ids: list[str], node: str, live: set[str]) -> list[tuple[str, int]]:
        """Claim for ``node`` each of ``client_ids`` held by no node of ``live`` (nor by ``node``
        itself under an older claim); returns the (client id, generation) pairs granted."""
        granted: list[tuple[str, int]] = []
        for client_id in client_ids:
            entry = self._claims.get(client_id)
            if entry is not None and entry[0] != node and entry[0] in live:
                continue
            if entry is not None and entry[0] == node:
                granted.append((client_id, entry[1]))
                continue
            self._generation += 1
            self._claims[client_id] = (node, self._generation)
            granted.append((client_id, self._generation))
        return granted

    def release(self, client_id: str, node: str, generation: int | None = None) -> bool:
        """The session ended on ``node``; False if the entry belongs to a newer claim."""
        return self.release_all([client_id, generation], node) == 1

    def release_all(self, releases: list[Any], node: str) -> int:
        """The sessions that ended on ``node``: a flat list [client id, generation, ...]
        (generation None: whichever claim of ``node``). Each entry goes unless another node
        holds the client id, or a newer claim does; returns how many went."""
        entries = self._claims
        released = 0
        pairs = iter(releases)
        for client_id, generation in zip(pairs, pairs):
            entry = entries.get(client_id)
            if entry is not None and entry[0] == node and (generation is None or generation >= entry[1]):
                del entries[client_id]
                released += 1
        return released

    def clear_will(self, client_id: str, node: str) -> None:
        will = self._wills.get(client_id)
        if will is not None and will.node == node:
            del self._wills[client_id]

    def node_died(self, node: str, now: float) -> list[DueWill]:
        """Forget ``node``'s sessions; return the wills of its clients, each with when it is due."""
        for client_id in [c for c, entry in self._claims.items() if entry[0] == node]:
            del self._claims[client_id]
        due: list[DueWill] = []
        for client_id in [c for c, will in self._wills.items() if will.node == node]:
            will = self._wills.pop(client_id)
            due.append(DueWill(client_id, will.body, now + min(will.delay, will.session_expiry)))
        return due
