"""Durable futures: the results of journal entries that the proxy completes later.

A ``DurableFuture`` stands for one completable entry (a sleep, a call, an
awakeable, a wait for a workflow's promise) at a fixed journal index. Its
result is the entry's completion, which the proxy sends with the
``InvokeRequest``, in the acknowledgement of the entry's append (when it could
complete the entry in the same commit) or in answer to a brief wait;
awaiting a future whose completion is not known yet suspends the handler, and
the proxy re-invokes it once the completion exists.
"""

from __future__ import annotations

from collections.abc import Awaitable, Generator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ._await import result_of
from .errors import InputError, TerminalError, _AttemptFailed
from .protocol import Failure

if TYPE_CHECKING:
    from ._attempt import Attempt
    from .serde import Codec

__all__ = ["CallFuture", "DurableFuture"]

T = TypeVar("T")


class DurableFuture(Generic[T]):
    """The eventual result of a durable action (``ctx.timer``, ``ctx.call``, ``ctx.awakeable``, ``promise.value()``).

    ``await future`` returns the result, decoded as the type the action
    declared, or raises ``TerminalError`` if the action failed. It can be
    awaited any number of times, and passed to ``ctx.select`` or
    ``ctx.gather``. Futures belong to the invocation that created them.
    """

    __slots__ = ("_attempt", "_codec", "_index", "_journaled", "_wake_at_ms")

    def __init__(
        self,
        attempt: Attempt,
        index: int,
        codec: Codec[T],
        *,
        journaled: Awaitable[None] | None = None,
        wake_at_ms: int | None = None,
    ) -> None:
        self._attempt = attempt
        self._index = index
        self._codec = codec
        #: The pending append of the future's entry (an awaitable), ``None`` once it is recorded.
        self._journaled = journaled
        #: For timers: when the proxy completes it, so a far-off one suspends at once.
        self._wake_at_ms = wake_at_ms

    @property
    def index(self) -> int:
        """The journal index of the entry this future belongs to."""
        return self._index

    def done(self) -> bool:
        """Whether the result is known now (awaiting it will not wait)."""
        return self._attempt.completion(self._index) is not None

    def __await__(self) -> Generator[Any, None, T]:
        return result_of(self).__await__()

    def __repr__(self) -> str:
        state = "done" if self.done() else "pending"
        return f"<{type(self).__name__} index={self._index} {state}>"

    # Used by the waiting machinery and the combinators.

    async def _until_journaled(self) -> None:
        if self._journaled is not None:
            await self._journaled

    def _worth_waiting(self, now_ms: int, budget_ms: int) -> bool:
        """Whether a brief in-process wait can plausibly see it complete."""
        return self._wake_at_ms is None or self._wake_at_ms - now_ms <= budget_ms

    def _result(self) -> T:
        """The decoded result; ``TerminalError`` if the action failed. Only once done."""
        completion = self._attempt.completion(self._index)
        assert completion is not None
        if completion.failure is not None:
            raise TerminalError(completion.failure.message, status_code=completion.failure.code)
        try:
            return self._codec.decode(bytes(completion.result))
        except InputError as exc:
            message = (
                f"the result of journal index {self._index} does not decode as {self._codec.type!r}: {exc.message}"
            )
            reason = _AttemptFailed(Failure(message=message))
            self._attempt.journal.stop(reason)
            raise reason from None


class CallFuture(DurableFuture[T]):
    """The result of ``ctx.call``; ``invocation_id`` names the callee's invocation."""

    __slots__ = ("_invocation_id",)

    def __init__(
        self, attempt: Attempt, index: int, codec: Codec[T], *, invocation_id: str, journaled: Awaitable[None] | None
    ) -> None:
        super().__init__(attempt, index, codec, journaled=journaled)
        self._invocation_id = invocation_id

    @property
    def invocation_id(self) -> str:
        """The id of the callee's invocation: the same on every replay."""
        return self._invocation_id
