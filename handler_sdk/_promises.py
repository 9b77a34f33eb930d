"""``DurablePromise`` on the attempt's journal.

Each method takes its journal index when it is called and appends its entry
in the background; the proxy completes the entry. ``value()`` (``get_promise``)
is completed once the promise is, which may be much later, so it is an
ordinary durable future. ``peek()`` and ``resolve()``/``reject()`` are
completed in the commit of their entry, and the completion comes back in the
append's acknowledgement, so awaiting them never waits for anything more. They
are single actions, not awaits of a future: a cancellation is raised at the
index they take, never after it.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import msgspec

from ._attempt import Attempt, Cancelling
from ._await import until_done
from ._futures import DurableFuture
from .errors import InputError, InvocationCancelled, TerminalError, _AttemptFailed
from .promise import DurablePromise
from .protocol import PROTOCOL_VIOLATION, CompletePromise, Failure, GetPromise, JournalEntry, PeekPromise
from .serde import Codec, codec_for, encode_json

T = TypeVar("T")

_NONE: Codec[None] = codec_for(None)


class _Peeked(msgspec.Struct, frozen=True):
    """The completion of a ``peek_promise`` entry."""

    resolved: bool
    value: msgspec.Raw = msgspec.Raw(b"null")


_peeked_decoder = msgspec.json.Decoder(_Peeked)

#: Takes the journal index of an action (named for error messages), or the cancellation that falls on it.
TakeSlot = Callable[[str], int | Cancelling]


class AttemptPromise(DurablePromise[T]):
    """A promise of the workflow whose invocation ``attempt`` runs."""

    def __init__(self, attempt: Attempt, take: TakeSlot, name: str, codec: Codec[T]) -> None:
        # ``take`` is the context's, so promises obey the same rules as every other action (no nesting in steps).
        self._attempt = attempt
        self._take = take
        self._name = name
        self._codec = codec

    @property
    def name(self) -> str:
        return self._name

    def value(self) -> DurableFuture[T]:
        index = self._take_now("promise.value()")
        return self._future(index, GetPromise(name=self._name), self._codec)

    def peek(self) -> Coroutine[Any, Any, T | None]:
        slot = self._take("promise.peek()")
        if isinstance(slot, Cancelling):
            return self._attempt.raise_cancelled(slot)
        return self._peek(self._future(slot, PeekPromise(name=self._name), _NONE))

    async def _peek(self, future: DurableFuture[None]) -> T | None:
        await until_done(self._attempt, [future], interruptible=False)
        completion = self._attempt.completion(future.index)
        assert completion is not None
        if completion.failure is not None:
            raise TerminalError(completion.failure.message, status_code=completion.failure.code)
        try:
            peeked = _peeked_decoder.decode(completion.result)
        except msgspec.DecodeError as exc:
            message = f"the completion of peek_promise at journal index {future.index} is malformed: {exc}"
            reason = _AttemptFailed(Failure(code=PROTOCOL_VIOLATION, message=message))
            self._attempt.journal.stop(reason)
            raise reason from None
        if not peeked.resolved:
            return None
        return self._decoded(future.index, peeked.value)

    def resolve(self, value: T) -> Coroutine[Any, Any, None]:
        encoded = msgspec.Raw(encode_json(value))  # before the index is taken: a bad value leaves no hole
        return self._complete(CompletePromise(name=self._name, value=encoded), "promise.resolve()")

    def reject(self, message: str, code: int = 500) -> Coroutine[Any, Any, None]:
        failure = Failure(code=code, message=message)
        return self._complete(CompletePromise(name=self._name, failure=failure), "promise.reject()")

    def _complete(self, entry: CompletePromise, what: str) -> Coroutine[Any, Any, None]:
        slot = self._take(what)
        if isinstance(slot, Cancelling):
            return self._attempt.raise_cancelled(slot)
        return _result_of(self._future(slot, entry, _NONE))

    def _take_now(self, what: str) -> int:
        self._attempt.journal.check()
        slot = self._take(what)
        if isinstance(slot, Cancelling):
            raise InvocationCancelled()
        return slot

    def _future(self, index: int, entry: JournalEntry, codec: Codec[Any]) -> DurableFuture[Any]:
        """The future of the entry at ``index``: checked if recorded, else appended in the background."""
        if self._attempt.replayed(index, entry) is not None:
            return DurableFuture(self._attempt, index, codec)
        pending = self._attempt.start_append(index, entry)
        return DurableFuture(self._attempt, index, codec, journaled=pending)

    def _decoded(self, index: int, value: msgspec.Raw) -> T:
        try:
            return self._codec.decode(bytes(value))
        except InputError as exc:
            message = f"the value of promise {self._name!r} (journal index {index}) does not decode: {exc.message}"
            reason = _AttemptFailed(Failure(message=message))
            self._attempt.journal.stop(reason)
            raise reason from None


async def _result_of(future: DurableFuture[None]) -> None:
    await until_done(future._attempt, [future], interruptible=False)
    future._result()
