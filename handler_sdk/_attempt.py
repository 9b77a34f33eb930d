"""The state of one attempt that every durable action shares.

It hands out journal slots (and decides where a cancellation is raised),
appends entries, keeps the completions known so far, and ends the attempt by
suspending. The ``Context`` methods, futures and combinators are built on it.

Cancellation is raised once, at a point the journal fixes. Once the proxy says
the invocation was cancelled (in the ``InvokeRequest``, an ``AppendAck`` or an
``AwaitResponse``), the next new slot becomes a ``Cancel`` entry: the slot of
a new action, which raises ``InvocationCancelled`` instead (``Cancel()``), or
the next index at an await of durable futures, complete or not, which raises
there (``Cancel(awaiting=<their indices>)``). A replay raises at the same
point: a ``Cancel`` without ``awaiting`` at the new action that takes its
index, whatever it asks for; one with ``awaiting`` at the await of exactly
those futures when that await reaches its index (a new action reaching it
instead is a journal mismatch).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterable
from datetime import timedelta
from typing import NoReturn

import msgspec

from . import _tracing
from ._callback import CallbackClient
from ._replay import Journal, check_replayed
from .clock import Clock
from .errors import InvocationCancelled, SdkInternalError, _Suspend
from .protocol import (
    AppendRequest,
    AwaitRequest,
    Cancel,
    Completion,
    InvokeRequest,
    JournalEntry,
    Run,
    json_encoder,
)


@dataclasses.dataclass(frozen=True, slots=True)
class Cancelling:
    """A slot taken by the cancellation: the action asking for it raises ``InvocationCancelled``.

    ``appended`` is the append of a new ``Cancel`` entry, ``None`` for a replayed one.
    """

    index: int
    appended: asyncio.Task[None] | None


class Attempt:
    """Journal, completions and cancellation state of one attempt."""

    def __init__(
        self,
        *,
        request: InvokeRequest,
        journal: Journal,
        callbacks: CallbackClient,
        clock: Clock,
        suspend_after: timedelta,
    ) -> None:
        self.request = request
        self.journal = journal
        self.clock = clock
        #: The longest the handler waits in-process for a completion before suspending.
        self.suspend_after_ms = suspend_after // timedelta(milliseconds=1)
        self._callbacks = callbacks
        self._completions: dict[int, Completion] = {c.index: c for c in request.completions}
        self._cancel_requested = request.cancelled
        self._cancel_raised = False
        #: Appends running in the background, with the journal index of each.
        self._background: dict[asyncio.Task[None], int] = {}

    @property
    def invocation_id(self) -> str:
        return self.request.invocation_id

    # ------------------------------------------------------------------ slots

    def take(self, awaiting: list[int] | None = None) -> int | Cancelling:
        """The next journal index, or the cancellation if it is raised at that index.

        ``awaiting`` is for an action that is also an await (``select``): the
        sorted indices of its futures. A recorded ``Cancel`` raised at an await
        of other futures is left to the action's check of its entry, which
        reports the mismatch.

        Never raises: a journal that cannot be decoded stops the attempt, and the
        caller meets that reason when it checks the journal.
        """
        if self._cancel_due() and not self.journal.replaying:
            return self._cancel_at(self.journal.reserve(), awaiting)
        index = self.journal.reserve()
        try:
            recorded = self.journal.recorded(index)
        except SdkInternalError as exc:
            self.journal.stop(exc)
            return index
        if isinstance(recorded, Cancel) and (recorded.awaiting is None or recorded.awaiting == awaiting):
            self._cancel_raised = True
            return Cancelling(index, None)
        return index

    def replayed(self, index: int, requested: JournalEntry) -> JournalEntry | None:
        """The recorded entry at ``index`` if it matches ``requested``; ``None`` if the index is new.

        A mismatch (or an undecodable entry) stops the attempt and is raised.
        """
        try:
            self.journal.check()
            recorded = self.journal.recorded(index)
            if recorded is not None:
                check_replayed(index, recorded, requested)
            return recorded
        except SdkInternalError as exc:
            self.journal.stop(exc)
            raise

    # ------------------------------------------------------------------ appends

    async def append(self, index: int, entry: JournalEntry) -> None:
        """Append ``entry`` at ``index`` and return once the proxy committed it."""
        request = AppendRequest(
            attempt=self.request.attempt,
            token=self.request.token,
            index=index,
            entry=msgspec.Raw(json_encoder.encode(entry)),
        )
        url = f"{self.request.callback_url}/journal"

        async def send() -> None:
            ack = await self._callbacks.append(url, request)
            if ack.cancelled:
                self._cancel_requested = True
            if ack.completion is not None:
                # Completed in the same commit (a promise peek, a call that could not start): no wait needed.
                self._completions.setdefault(index, ack.completion)

        if _tracing.ACTIVE.get() and not isinstance(entry, Run):  # a step's span covers its function too
            await _tracing.trace_entry(self.request, index, entry, self.journal.append(index, send))
        else:
            await self.journal.append(index, send)

    def start_append(self, index: int, entry: JournalEntry) -> asyncio.Task[None]:
        """Append in the background, for actions that return before their entry is committed.

        The attempt does not answer before every such append has ended.
        """
        task = asyncio.ensure_future(self.append(index, entry))
        self._background[task] = index
        task.add_done_callback(self._forget)
        return task

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._background.pop(task, None)
        if not task.cancelled():
            task.exception()  # retrieved: a failure already stopped the journal

    async def appended_before(self, index: int) -> None:
        """Return once the background appends below ``index`` are committed (raise if one failed).

        An id such an action returned (an awakeable's, a callee's) is valid only once its entry is
        committed: a step that may hand it out runs after that.
        """
        earlier = [task for task, at in self._background.items() if at < index]
        if earlier:
            await asyncio.wait(earlier)
            self.journal.check()

    async def settle(self) -> None:
        """Wait for the background appends to end (they stop the journal if they fail)."""
        while self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    # ------------------------------------------------------------------ completions

    def completion(self, index: int) -> Completion | None:
        """The completion of the entry at ``index``, if the proxy reported one."""
        return self._completions.get(index)

    async def wait(self, indices: Iterable[int], timeout_ms: int) -> bool:
        """Wait briefly for any of ``indices`` through the proxy; whether one got completed."""
        pending = sorted(set(indices))
        request = AwaitRequest(
            attempt=self.request.attempt, token=self.request.token, indices=pending, timeout_ms=timeout_ms
        )
        try:
            response = await self._callbacks.wait(f"{self.request.callback_url}/await", request)
        except SdkInternalError as exc:
            self.journal.stop(exc)
            raise
        if response is None:
            return False
        if response.cancelled:
            self._cancel_requested = True
        for completion in response.completions:
            self._completions.setdefault(completion.index, completion)
        return any(index in self._completions for index in pending)

    def suspend(self, waiting_on: Iterable[int]) -> NoReturn:
        """End the attempt: the proxy re-invokes the handler once any of ``waiting_on`` completes."""
        reason = _Suspend(sorted(set(waiting_on)))
        self.journal.stop(reason)
        raise reason

    # ------------------------------------------------------------------ cancellation

    def _cancel_due(self) -> bool:
        return self._cancel_requested and not self._cancel_raised

    def _cancel_at(self, index: int, awaiting: list[int] | None) -> Cancelling:
        self._cancel_raised = True
        return Cancelling(index, self.start_append(index, Cancel(awaiting=awaiting)))

    def cancel_at_await(self, awaiting: list[int]) -> Cancelling | None:
        """Where an await of the futures at ``awaiting`` (sorted indices) raises the cancellation, if it does.

        At the next index, whether the futures are complete or not: when it
        holds a recorded ``Cancel`` raised at an await of the same futures, or
        when it is new and the cancellation is due.
        """
        if self.journal.replaying:
            try:
                recorded = self.journal.recorded(self.journal.cursor)
            except SdkInternalError as exc:
                self.journal.stop(exc)
                raise
            if not isinstance(recorded, Cancel) or recorded.awaiting != awaiting:
                return None
        elif not self._cancel_due():
            return None
        slot = self.take(awaiting)
        assert isinstance(slot, Cancelling)
        return slot

    def cancel_in_slot(self, index: int, awaiting: list[int]) -> Cancelling | None:
        """The cancellation, raised in the new slot ``index`` an await already holds (``select``), if it is due."""
        return self._cancel_at(index, awaiting) if self._cancel_due() else None

    async def raise_cancelled(self, slot: Cancelling) -> NoReturn:
        """Wait until the ``Cancel`` entry is committed, then raise the cancellation."""
        if slot.appended is not None:
            await slot.appended
        raise InvocationCancelled()
