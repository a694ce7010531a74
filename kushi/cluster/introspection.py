"""Introspection of a broker with several workers: the supervisor asks the workers over the bus.

Each client lives in one worker's memory, so ``kushi.Server(Options(workers=N))``
(the supervisor) answers ``clients()``, ``client(id)``, ``subscriptions(id)``,
``disconnect_client(id, reason)`` and ``retained(filter)`` by asking:

- ``IntrospectionService`` runs in every worker (``kushi.cluster.worker``) and
  answers the bus requests below with its own ``Server``'s answer, as snapshot
  records in msgpack (``kushi.worker.introspection``; retained messages in
  their bus form, ``kushi.cluster.wire``).
- ``ClusterIntrospection`` runs in the supervisor: it asks every worker on the
  bus at once (``clients``, ``client``, ``subscriptions``, ``disconnect_client``)
  and merges the answers, or one worker (``retained``: retained messages are
  replicated to every worker, and a worker also holds those a storage hook
  restored, which the supervisor's fabric never saw).

A worker that does not answer within ``timeout`` seconds (stopped, dying, or
busy for that long): the call raises ``BusError`` (a ``KushiError``) naming it,
unless the answer cannot depend on it: ``client(id)``, ``subscriptions(id)``
and ``disconnect_client(id)`` return what the worker holding the client
answered, since a client id is held by one worker at a time. ``clients()``
never returns a list with a worker's clients silently missing. A worker that
has joined the bus but not opened its listeners yet answers with nothing.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import msgpack

from ..protocol.packets import Publish
from ..router.bus import Bus, BusError
from ..worker.introspection import ClientSnapshot, SubscriptionSnapshot
from ..worker.server import Server
from .wire import decode_message, encode_message

CLIENTS = "introspect.clients"
CLIENT = "introspect.client"
SUBSCRIPTIONS = "introspect.subscriptions"
DISCONNECT = "introspect.disconnect"
RETAINED = "introspect.retained"
TIMEOUT = 5.0   # seconds a worker has to answer


class IntrospectionService:
    """A worker's side: answers the supervisor's introspection requests from its ``Server``."""

    def __init__(self, bus: Bus, server: Server) -> None:
        self.server = server
        bus.serve(CLIENTS, self._clients)
        bus.serve(CLIENT, self._client)
        bus.serve(SUBSCRIPTIONS, self._subscriptions)
        bus.serve(DISCONNECT, self._disconnect)
        bus.serve(RETAINED, self._retained)

    async def _clients(self, sender: str, payload: bytes) -> bytes:
        return msgpack.packb([client.to_wire() for client in await self.server.clients()])

    async def _client(self, sender: str, payload: bytes) -> bytes:
        client = await self.server.client(msgpack.unpackb(payload))
        return msgpack.packb(client.to_wire() if client is not None else None)

    async def _subscriptions(self, sender: str, payload: bytes) -> bytes:
        subscriptions = await self.server.subscriptions(msgpack.unpackb(payload))
        return msgpack.packb([subscription.to_wire() for subscription in subscriptions.values()])

    async def _disconnect(self, sender: str, payload: bytes) -> bytes:
        client_id, reason_code = msgpack.unpackb(payload)
        return msgpack.packb(await self.server.disconnect_client(client_id, reason_code))

    async def _retained(self, sender: str, payload: bytes) -> bytes:
        messages = await self.server.retained(msgpack.unpackb(payload))
        return msgpack.packb([encode_message(message) for message in messages])


class ClusterIntrospection:
    """The supervisor's side: the introspection calls of ``kushi.Server``, answered by the workers."""

    def __init__(self, bus: Bus, timeout: float = TIMEOUT) -> None:
        self.bus = bus
        self.timeout = timeout

    def workers(self) -> list[str]:
        """The bus names of the workers on the bus now (a restarting one joins when it has booted)."""
        return sorted(peer for peer in self.bus.peers if peer != self.bus.name)

    async def clients(self) -> list[ClientSnapshot]:
        answers = await self._ask_all(CLIENTS, b"")
        self._raise_for_silent(answers, "clients()")
        return sorted((ClientSnapshot.from_wire(fields) for answer in answers.values()
                       for fields in msgpack.unpackb(answer)),
                      key=lambda client: (client.worker_id, client.client_id))

    async def client(self, client_id: str) -> ClientSnapshot | None:
        answers = await self._ask_all(CLIENT, msgpack.packb(client_id))
        for answer in _answered(answers):
            fields = msgpack.unpackb(answer)
            if fields is not None:
                return ClientSnapshot.from_wire(fields)
        self._raise_for_silent(answers, f"client({client_id!r})")
        return None

    async def subscriptions(self, client_id: str) -> dict[str, SubscriptionSnapshot]:
        answers = await self._ask_all(SUBSCRIPTIONS, msgpack.packb(client_id))
        for answer in _answered(answers):
            records = [SubscriptionSnapshot.from_wire(fields) for fields in msgpack.unpackb(answer)]
            if records:
                return {record.filter: record for record in records}
        self._raise_for_silent(answers, f"subscriptions({client_id!r})")
        return {}

    async def disconnect_client(self, client_id: str, reason_code: int) -> bool:
        answers = await self._ask_all(DISCONNECT, msgpack.packb((client_id, reason_code)))
        if any(msgpack.unpackb(answer) for answer in _answered(answers)):
            return True
        self._raise_for_silent(answers, f"disconnect_client({client_id!r})")
        return False

    async def retained(self, filter: str) -> list[Publish]:
        workers = self.workers()
        if not workers:
            return []
        answer = await self.bus.request(workers[0], RETAINED, msgpack.packb(filter), self.timeout)
        return [_as_retained(decode_message(body)) for body in msgpack.unpackb(answer)]

    async def _ask_all(self, kind: str, payload: bytes) -> dict[str, bytes | BaseException]:
        """Ask every worker at once; each one's answer, or the error it ended with."""
        workers = self.workers()
        answers = await asyncio.gather(
            *(self.bus.request(worker, kind, payload, self.timeout) for worker in workers),
            return_exceptions=True)
        return dict(zip(workers, answers))

    @staticmethod
    def _raise_for_silent(answers: dict[str, Any], what: str) -> None:
        failed = {worker: answer for worker, answer in answers.items()
                  if isinstance(answer, BaseException)}
        if failed:
            details = "; ".join(f"{worker}: {error}" for worker, error in sorted(failed.items()))
            raise BusError(f"{what}: no answer from worker(s) {', '.join(sorted(failed))} ({details})")


def _answered(answers: dict[str, bytes | BaseException]) -> list[bytes]:
    return [answer for answer in answers.values() if isinstance(answer, bytes)]


def _as_retained(message: Publish) -> Publish:
    """A retained message as ``Server.retained`` gives it: its own payload bytes, without the
    bus form's packet id."""
    return replace(message, payload=bytes(message.payload), packet_id=None, raw=None)
