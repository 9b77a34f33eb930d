"""The handler's view of its invocation: ``Context`` and the options of a step.

``Context`` is abstract so handlers depend on an interface, not on the SDK's
machinery; the SDK passes its own implementation, and tests may pass a fake.
Durable operations other than ``run`` (sleep, calls, awakeables, state) will
join it as further methods.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar, overload

__all__ = ["Context", "RunOptions"]

T = TypeVar("T")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RunOptions:
    """How ``ctx.run`` retries a failing step.

    By default (``max_attempts=None``) a failing step ends the whole attempt
    and the proxy retries the invocation later, replaying what was journaled.
    With ``max_attempts`` the step is retried in place, sleeping
    ``initial_interval * backoff_factor**n`` (at most ``max_interval``) between
    tries, and once the tries run out its failure is journaled as terminal.
    ``timeout`` bounds each try; a sync step keeps running in its worker
    thread after it timed out, because threads cannot be cancelled.
    """

    max_attempts: int | None = None
    initial_interval: timedelta = timedelta(milliseconds=100)
    backoff_factor: float = 2.0
    max_interval: timedelta = timedelta(seconds=10)
    timeout: timedelta | None = None

    def __post_init__(self) -> None:
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.backoff_factor < 1:
            raise ValueError(f"backoff_factor must be at least 1, got {self.backoff_factor}")
        for field in ("initial_interval", "max_interval", "timeout"):
            value: timedelta | None = getattr(self, field)
            if value is not None and value <= timedelta(0):
                raise ValueError(f"{field} must be positive, got {value}")

    def backoff(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (0 for the first retry)."""
        interval = self.initial_interval.total_seconds() * self.backoff_factor**retry
        return min(interval, self.max_interval.total_seconds())


class Context(abc.ABC):
    """Durable operations of one invocation, passed as a handler's first argument."""

    @property
    @abc.abstractmethod
    def invocation_id(self) -> str:
        """The id of the invocation, the same in every attempt."""

    @property
    @abc.abstractmethod
    def attempt(self) -> int:
        """The number of the current attempt of the invocation."""

    @property
    @abc.abstractmethod
    def headers(self) -> dict[str, str]:
        """The headers the invocation was started with."""

    @overload
    async def run(
        self,
        name: str,
        fn: Callable[..., Awaitable[T]],
        *args: Any,
        options: RunOptions | None = None,
        type_hint: type[T] | None = None,
    ) -> T: ...

    @overload
    async def run(
        self,
        name: str,
        fn: Callable[..., T],
        *args: Any,
        options: RunOptions | None = None,
        type_hint: type[T] | None = None,
    ) -> T: ...

    @abc.abstractmethod
    async def run(
        self,
        name: str,
        fn: Callable[..., T | Awaitable[T]],
        *args: Any,
        options: RunOptions | None = None,
        type_hint: type[T] | None = None,
    ) -> T:
        """Run ``fn(*args)`` as a journaled step and return its result.

        The result is journaled before it is returned, so a later attempt
        returns the recorded value instead of running ``fn`` again. The value
        returned is always decoded from its JSON form, as ``type_hint`` or
        ``fn``'s return annotation, so the first run and every replay see the
        same thing. ``name`` must be stable: replay checks it against the
        journal. A ``TerminalError`` raised by ``fn`` is journaled and
        re-raised; other exceptions are retried according to ``options``.
        Async functions are awaited, sync ones run in a worker thread.
        """
