"""The SDK's ``Context``: every durable action, built on the attempt's journal.

Each method takes its journal index when it is called, in call order. Methods
that return a future (``call``, ``timer``, ``awakeable``) check a replayed
entry at once and start the append of a new one in the background; the
others return a coroutine that finishes the action when awaited. When the
cancellation falls on the index a method takes, a method returning a
coroutine raises ``InvocationCancelled`` once the ``Cancel`` entry is
committed, and one returning a future raises it at once (the entry is
committed before anything later, and before the attempt answers). Awaiting a
future, ``select`` and ``gather`` may raise it too (see ``_attempt``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from random import Random
from typing import Any
from uuid import UUID

import msgspec

from . import _combinators
from ._attempt import Attempt, Cancelling
from ._await import awaited
from ._futures import CallFuture, DurableFuture
from ._run import run_step
from .context import Context, RunOptions
from .errors import InvocationCancelled
from .protocol import (
    Awakeable,
    Call,
    JournalEntry,
    Now,
    Send,
    Sleep,
    awakeable_id,
    callee_invocation_id,
)
from .serde import codec_for, encode_json
from .step import in_step

_DEFAULT_OPTIONS = RunOptions()
_MS = timedelta(milliseconds=1)


def _aware_ms(when: datetime) -> int:
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"{when!r} is a naive datetime: pass a timezone-aware one, e.g. datetime.now(UTC)")
    return round(when.timestamp() * 1000)


def _delta_ms(what: str, delta: timedelta) -> int:
    if delta < timedelta(0):
        raise ValueError(f"{what} must not be negative, got {delta}")
    return delta // _MS


def _payload(arg: Any) -> msgspec.Raw:
    """The JSON of a call's argument; encoded before the call takes an index, so a bad one leaves no hole."""
    return msgspec.Raw(encode_json(arg))


class InvocationContext(Context):
    """``Context`` of one attempt of one invocation."""

    def __init__(self, attempt: Attempt) -> None:
        self._attempt = attempt
        self._random: Random | None = None

    @property
    def invocation_id(self) -> str:
        return self._attempt.invocation_id

    @property
    def attempt(self) -> int:
        return self._attempt.request.attempt

    @property
    def headers(self) -> dict[str, str]:
        return dict(self._attempt.request.headers)

    # ------------------------------------------------------------------ slots

    def _take(self, what: str, awaiting: list[int] | None = None) -> int | Cancelling:
        if in_step():
            raise RuntimeError(
                f"{what} was called inside a step function; durable actions cannot be nested in a step, "
                "call them from the handler itself"
            )
        return self._attempt.take(awaiting)

    def _take_now(self, what: str) -> int:
        """A slot for a method that returns at once: the journal is checked, a cancellation raised."""
        self._attempt.journal.check()
        slot = self._take(what)
        if isinstance(slot, Cancelling):
            raise InvocationCancelled()
        return slot

    async def _record(self, index: int, requested: JournalEntry) -> JournalEntry:
        """The recorded entry at ``index`` (checked against ``requested``), or ``requested`` journaled now."""
        recorded = self._attempt.replayed(index, requested)
        if recorded is not None:
            return recorded
        await self._attempt.append(index, requested)
        return requested

    def _start(self, index: int, requested: JournalEntry) -> asyncio.Task[None] | None:
        """Like ``_record``, for methods returning a future: the pending append, ``None`` on replay."""
        if self._attempt.replayed(index, requested) is not None:
            return None
        return self._attempt.start_append(index, requested)

    # ------------------------------------------------------------------ run

    def run(
        self,
        name: str,
        fn: Callable[..., Any],
        *args: Any,
        options: RunOptions | None = None,
        type_hint: Any = None,
    ) -> Coroutine[Any, Any, Any]:
        # Not ``async def``: the index must be taken now, in call order, not when
        # the event loop gets around to starting the coroutine.
        if in_step():
            raise RuntimeError(
                f"ctx.run({name!r}) was called inside a step function; steps cannot be nested, "
                "call ctx.run from the handler itself"
            )
        slot = self._attempt.take()
        if isinstance(slot, Cancelling):
            return self._attempt.raise_cancelled(slot)
        return run_step(self._attempt, slot, name, fn, args, options or _DEFAULT_OPTIONS, type_hint)

    # ------------------------------------------------------------------ time

    def sleep(self, delta: timedelta, name: str = "") -> Coroutine[Any, Any, None]:
        delta_ms = _delta_ms("the sleep duration", delta)
        return self._sleep(lambda: self._attempt.clock.now_ms() + delta_ms, name)

    def sleep_until(self, when: datetime, name: str = "") -> Coroutine[Any, Any, None]:
        wake_at_ms = _aware_ms(when)
        return self._sleep(lambda: wake_at_ms, name)

    def _sleep(self, wake_at: Callable[[], int], name: str) -> Coroutine[Any, Any, None]:
        slot = self._take("ctx.sleep")
        if isinstance(slot, Cancelling):
            return self._attempt.raise_cancelled(slot)
        return self._await_timer(slot, wake_at, name)

    async def _await_timer(self, index: int, wake_at: Callable[[], int], name: str) -> None:
        await self._timer(index, wake_at, name)

    def timer(self, delta: timedelta, name: str = "") -> DurableFuture[None]:
        delta_ms = _delta_ms("the timer duration", delta)
        index = self._take_now("ctx.timer")
        return self._timer(index, lambda: self._attempt.clock.now_ms() + delta_ms, name)

    def timer_until(self, when: datetime, name: str = "") -> DurableFuture[None]:
        wake_at_ms = _aware_ms(when)
        index = self._take_now("ctx.timer_until")
        return self._timer(index, lambda: wake_at_ms, name)

    def _timer(self, index: int, wake_at: Callable[[], int], name: str) -> DurableFuture[None]:
        # The clock is read for a new entry only; a replay keeps the recorded wake-up time.
        recorded = self._attempt.replayed(index, Sleep(name=name, wake_at_ms=0))
        if recorded is not None:
            assert isinstance(recorded, Sleep)
            return DurableFuture(self._attempt, index, codec_for(None), wake_at_ms=recorded.wake_at_ms)
        entry = Sleep(name=name, wake_at_ms=wake_at())
        pending = self._attempt.start_append(index, entry)
        return DurableFuture(self._attempt, index, codec_for(None), journaled=pending, wake_at_ms=entry.wake_at_ms)

    def now(self, name: str = "") -> Coroutine[Any, Any, datetime]:
        slot = self._take("ctx.now")
        if isinstance(slot, Cancelling):
            return self._attempt.raise_cancelled(slot)
        return self._now(slot, name)

    async def _now(self, index: int, name: str) -> datetime:
        entry = await self._record(index, Now(name=name, now_ms=self._attempt.clock.now_ms()))
        assert isinstance(entry, Now)
        return datetime.fromtimestamp(entry.now_ms / 1000, tz=UTC)

    # ------------------------------------------------------------------ calls

    def call(
        self,
        service: str,
        handler: str,
        arg: Any = None,
        *,
        key: str | None = None,
        type_hint: Any = None,
        name: str = "",
    ) -> CallFuture[Any]:
        codec = codec_for(Any if type_hint is None else type_hint)
        requested = Call(name=name, service=service, handler=handler, key=key, input=_payload(arg))
        index = self._take_now("ctx.call")
        pending = self._start(index, requested)
        callee = callee_invocation_id(self.invocation_id, index)
        return CallFuture(self._attempt, index, codec, invocation_id=callee, journaled=pending)

    def send(
        self,
        service: str,
        handler: str,
        arg: Any = None,
        *,
        key: str | None = None,
        delay: timedelta | None = None,
        name: str = "",
    ) -> Coroutine[Any, Any, str]:
        delay_ms = 0 if delay is None else _delta_ms("the send delay", delay)
        requested = Send(name=name, service=service, handler=handler, key=key, input=_payload(arg), delay_ms=delay_ms)
        slot = self._take("ctx.send")
        if isinstance(slot, Cancelling):
            return self._attempt.raise_cancelled(slot)
        return self._send(slot, requested)

    async def _send(self, index: int, requested: Send) -> str:
        await self._record(index, requested)
        return callee_invocation_id(self.invocation_id, index)

    # ------------------------------------------------------------------ awakeables

    def awakeable(self, type_hint: Any = None, name: str = "") -> tuple[str, DurableFuture[Any]]:
        codec = codec_for(Any if type_hint is None else type_hint)
        index = self._take_now("ctx.awakeable")
        pending = self._start(index, Awakeable(name=name))
        return awakeable_id(self.invocation_id, index), DurableFuture(self._attempt, index, codec, journaled=pending)

    # ------------------------------------------------------------------ combinators

    def select(self, name: str = "", /, **futures: DurableFuture[Any]) -> Coroutine[Any, Any, tuple[str, Any]]:
        _combinators.check_select(self._attempt, futures)
        slot = self._take("ctx.select", awaited(futures.values()))
        if isinstance(slot, Cancelling):
            return self._attempt.raise_cancelled(slot)
        return _combinators.select(self._attempt, slot, name, futures)

    def gather(self, *futures: DurableFuture[Any]) -> Coroutine[Any, Any, list[Any]]:
        _combinators.check_gather(self._attempt, futures)
        return _combinators.gather(self._attempt, futures)

    # ------------------------------------------------------------------ determinism

    def random(self) -> Random:
        if self._random is None:
            self._random = Random(self._attempt.request.random_seed)
        return self._random

    def uuid4(self) -> UUID:
        return UUID(int=self.random().getrandbits(128), version=4)
