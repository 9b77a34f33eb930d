"""Clients waiting for an invocation to finish, woken when its end is committed."""

from __future__ import annotations

import asyncio

import msgspec

from .store.base import Invocation, StoredFailure


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """How an invocation ended: its output, or its failure."""

    invocation_id: str
    output: bytes | None = None
    failure: StoredFailure | None = None

    @classmethod
    def of(cls, invocation: Invocation) -> Outcome:
        return cls(invocation_id=invocation.id, output=invocation.output, failure=invocation.failure)


class Waiters:
    def __init__(self) -> None:
        self._waiting: dict[str, set[asyncio.Future[Outcome]]] = {}

    def register(self, invocation_id: str) -> asyncio.Future[Outcome]:
        """Register before checking the store, so that an end committed in between is not missed."""
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(invocation_id, set()).add(future)
        return future

    def discard(self, invocation_id: str, future: asyncio.Future[Outcome]) -> None:
        waiting = self._waiting.get(invocation_id)
        if waiting is not None:
            waiting.discard(future)
            if not waiting:
                del self._waiting[invocation_id]

    def waiting_for(self, invocation_id: str) -> bool:
        return invocation_id in self._waiting

    def invocation_ids(self) -> list[str]:
        return list(self._waiting)

    def notify(self, outcome: Outcome) -> None:
        for future in self._waiting.pop(outcome.invocation_id, ()):
            if not future.done():
                future.set_result(outcome)

    def __len__(self) -> int:
        return sum(len(w) for w in self._waiting.values())
