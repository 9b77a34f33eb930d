"""Durable promises: named values of one workflow run, completed once, awaited from any of its handlers.

A workflow's ``run`` handler and its shared handlers reach the same promise by
name through ``ctx.promise(name)``; whoever resolves (or rejects) it first
wins, and every waiter, now or later, sees that outcome. Promises live as long
as the workflow key: a signal sent before ``run`` waits for it is not lost.
"""

from __future__ import annotations

import abc
from collections.abc import Generator
from typing import Any, Generic, TypeVar

from ._futures import DurableFuture

__all__ = ["DurablePromise"]

T = TypeVar("T")


class DurablePromise(abc.ABC, Generic[T]):
    """A workflow's named promise, from ``ctx.promise(name, type_hint=T)``.

    Creating it journals nothing; each of its methods is a journaled action.
    ``await promise`` is ``await promise.value()``.
    """

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """The promise's name within the workflow."""

    @abc.abstractmethod
    def value(self) -> DurableFuture[T]:
        """A future of the promise's value: it completes once the promise is resolved.

        Awaiting it suspends the handler until then, like any durable future,
        and it can be raced in ``ctx.select``, e.g.
        ``await ctx.select(decision=ctx.promise("decision").value(), timeout=ctx.timer(timedelta(days=7)))``.
        A rejected promise raises ``TerminalError``.
        """

    @abc.abstractmethod
    async def peek(self) -> T | None:
        """The value if the promise is resolved now, ``None`` if it is not; ``TerminalError`` if rejected."""

    @abc.abstractmethod
    async def resolve(self, value: T) -> None:
        """Resolve the promise with ``value``; ``TerminalError`` (409) if it was already completed."""

    @abc.abstractmethod
    async def reject(self, message: str, code: int = 500) -> None:
        """Reject the promise: its waiters raise ``TerminalError(message, status_code=code)``.

        Raises ``TerminalError`` (409) if the promise was already completed.
        """

    def __await__(self) -> Generator[Any, None, T]:
        return self.value().__await__()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"
