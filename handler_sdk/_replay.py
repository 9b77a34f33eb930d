"""The journal of one attempt: recorded entries to replay, then new ones in order.

Determinism rests on two rules enforced here. Indices are handed out in call
order, synchronously, so concurrent steps get the same indices on every
replay. And entries are committed strictly in index order: index ``k`` is sent
to the proxy only after ``k - 1`` was acknowledged, so the journal never has a
hole even when a later step finishes first.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextvars import ContextVar

import msgspec

from .errors import SdkInternalError, _AttemptFailed
from .protocol import PROTOCOL_VIOLATION, Failure, JournalEntry, entry_decoder


def entry_kind(entry: JournalEntry) -> str:
    """The ``kind`` tag of an entry, e.g. ``"run"``."""
    return str(entry.__struct_config__.tag)


class Journal:
    """Replay cursor and append sequencer of one attempt."""

    def __init__(self, recorded: Sequence[msgspec.Raw]) -> None:
        self._recorded = recorded
        self._decoded: dict[int, JournalEntry] = {}
        self._next_index = 0
        # Entries below this index are durable: recorded ones, then acked appends.
        self._committed = len(recorded)
        self._changed = asyncio.Event()
        self._stopped: SdkInternalError | None = None

    @property
    def replaying(self) -> bool:
        """True while the handler has not yet asked for more steps than were recorded."""
        return self._next_index < len(self._recorded)

    @property
    def cursor(self) -> int:
        """The index the next step will get."""
        return self._next_index

    def reserve(self) -> int:
        """The index of the next step, taken at call time so ``gather`` stays deterministic."""
        index = self._next_index
        self._next_index += 1
        return index

    def recorded(self, index: int) -> JournalEntry | None:
        """The entry recorded at ``index``, decoded on first use; ``None`` past the end."""
        if index >= len(self._recorded):
            return None
        entry = self._decoded.get(index)
        if entry is None:
            try:
                entry = self._decoded[index] = entry_decoder.decode(self._recorded[index])
            except msgspec.DecodeError as exc:
                failure = Failure(code=PROTOCOL_VIOLATION, message=f"journal entry {index} cannot be decoded: {exc}")
                raise _AttemptFailed(failure) from None
        return entry

    def is_committed(self, index: int) -> bool:
        """Whether the entry at ``index`` is durable (recorded, or appended and acked)."""
        return index < self._committed

    @property
    def stopped(self) -> SdkInternalError | None:
        """Why the attempt must not go on, if it must not."""
        return self._stopped

    def stop(self, reason: SdkInternalError) -> None:
        """Refuse every later step and append; the first reason wins."""
        if self._stopped is None:
            self._stopped = reason
        self._notify()

    def check(self) -> None:
        """Raise the stop reason, if any, so no further step runs."""
        if self._stopped is not None:
            raise self._stopped

    async def append(self, index: int, send: Callable[[], Awaitable[object]]) -> None:
        """Run ``send`` once every earlier index is durable, then mark ``index`` durable."""
        while self._committed < index and self._stopped is None:
            await self._changed.wait()
        self.check()
        try:
            await send()
        except SdkInternalError as exc:
            self.stop(exc)
            raise
        except BaseException as exc:
            # Whether the proxy committed the entry is now unknown: nothing later may be sent.
            self.stop(_AttemptFailed(Failure(message=f"append of journal index {index} was interrupted: {exc!r}")))
            raise
        self._committed = index + 1
        self._notify()

    def _notify(self) -> None:
        # Waiters hold the old event; setting it wakes them all to re-check.
        self._changed.set()
        self._changed = asyncio.Event()


_active: ContextVar[Journal | None] = ContextVar("handler_sdk.journal", default=None)


def is_replaying() -> bool:
    """Whether the current handler is still re-executing recorded steps."""
    journal = _active.get()
    return journal is not None and journal.replaying


@contextlib.contextmanager
def active(journal: Journal) -> Iterator[None]:
    """Make ``journal`` the one ``is_replaying`` looks at inside the block."""
    token = _active.set(journal)
    try:
        yield
    finally:
        _active.reset(token)
