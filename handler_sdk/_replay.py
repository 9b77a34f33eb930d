"""The journal of one attempt: recorded entries to replay, then new ones in order.

Determinism rests on two rules enforced here. Indices are handed out in call
order, synchronously, so concurrent steps get the same indices on every
replay. And entries are committed strictly in index order: index ``k`` is sent
to the proxy only after ``k - 1`` was acknowledged, so the journal never has a
hole even when a later step finishes first.

A replayed action is matched against its recorded entry on kind and name (for
state entries the name is the state key, for promises the promise name), for
calls and sends on their target too, and for promise completions on whether
they resolve or reject (``check_replayed``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextvars import ContextVar

import msgspec

from .errors import NonDeterminismError, SdkInternalError, _AttemptFailed, _Suspend
from .protocol import (
    PROTOCOL_VIOLATION,
    Call,
    Cancel,
    CompletePromise,
    Failure,
    JournalEntry,
    Send,
    entry_decoder,
    entry_kind,
)


def describe(entry: JournalEntry) -> tuple[str, str]:
    """``(kind, label)`` of an entry for mismatch messages; calls and sends name their target."""
    if isinstance(entry, Call | Send):
        target = f"{entry.service}/{entry.handler}" + (f"[{entry.key}]" if entry.key is not None else "")
        return entry_kind(entry), f"{entry.name} -> {target}" if entry.name else target
    if isinstance(entry, CompletePromise):
        return entry_kind(entry), f"{entry.name} ({'resolve' if entry.failure is None else 'reject'})"
    return entry_kind(entry), entry.name


def _same_action(recorded: JournalEntry, requested: JournalEntry) -> bool:
    if type(recorded) is not type(requested) or recorded.name != requested.name:
        return False
    if isinstance(recorded, Call | Send) and isinstance(requested, Call | Send):
        target = (requested.service, requested.handler, requested.key)
        return (recorded.service, recorded.handler, recorded.key) == target
    if isinstance(recorded, CompletePromise) and isinstance(requested, CompletePromise):
        return (recorded.failure is None) == (requested.failure is None)
    return True


def mismatch_detail(recorded: JournalEntry) -> str | None:
    """What a mismatch message adds about ``recorded``: where a recorded cancellation was raised."""
    if isinstance(recorded, Cancel) and recorded.awaiting is not None:
        return f"the cancellation was raised at an await of journal indices {recorded.awaiting}"
    return None


def check_replayed(index: int, recorded: JournalEntry, requested: JournalEntry) -> None:
    """Raise ``NonDeterminismError`` unless ``recorded`` is the action the code now asks for."""
    if not _same_action(recorded, requested):
        raise NonDeterminismError(
            index=index, recorded=describe(recorded), requested=describe(requested), detail=mismatch_detail(recorded)
        )


class Journal:
    """Replay cursor and append sequencer of one attempt."""

    def __init__(self, recorded: Sequence[msgspec.Raw], *, always_replay: bool = False) -> None:
        self._recorded = recorded
        # Test mode: end the attempt after every new entry, so each one is replayed before the next runs.
        self._always_replay = always_replay
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

    @property
    def always_replay(self) -> bool:
        """Whether the attempt ends after its first new entry (a test mode)."""
        return self._always_replay

    async def wait_turn(self, index: int) -> None:
        """Return once every index before ``index`` is durable; raise the stop reason if the attempt stopped."""
        while self._committed < index and self._stopped is None:
            await self._changed.wait()
        self.check()

    async def append(self, index: int, send: Callable[[], Awaitable[object]]) -> None:
        """Run ``send`` once every earlier index is durable, then mark ``index`` durable.

        In always-replay mode the attempt then suspends, to be re-invoked at once.
        """
        await self.wait_turn(index)
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
        if self._always_replay:
            suspend = _Suspend([])
            self.stop(suspend)
            raise suspend

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
