"""The handler's view of its invocation: ``Context`` and the options of a step.

``Context`` is abstract so handlers depend on an interface, not on the SDK's
machinery; the SDK passes its own implementation, and tests may pass a fake.
Every method that journals something takes its journal index when it is
called, so concurrent actions keep the same indices on every replay.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from random import Random
from typing import TYPE_CHECKING, Any, TypeVar, overload
from uuid import UUID

from ._futures import CallFuture, DurableFuture

if TYPE_CHECKING:
    from .service import HandlerDefinition

__all__ = ["Context", "RunOptions"]

T = TypeVar("T")
I = TypeVar("I")  # noqa: E741
O = TypeVar("O")  # noqa: E741


def _definition(handler: Callable[..., Any]) -> HandlerDefinition:
    definition: HandlerDefinition | None = getattr(handler, "__durable_handler__", None)
    if definition is None:
        raise TypeError(f"{handler!r} is not a handler: decorate it with @service.handler()")
    return definition


def _check_argument(definition: HandlerDefinition, arg: Any) -> None:
    if arg is not None and not definition.takes_input:
        raise TypeError(f"handler '{definition.service}/{definition.name}' takes no input, got {arg!r}")


_CALLERS = {"service": "service_call", "object": "object_call", "workflow": "workflow_call"}
#: What each kind of service is called in messages.
NOUNS = {"service": "service", "object": "virtual object", "workflow": "workflow"}


def _check_target(definition: HandlerDefinition, key: str | None, kind: str | None = None) -> None:
    """Refuse a call that names the wrong kind of target, or a keyed one without its key."""
    target = f"'{definition.service}/{definition.name}'"
    noun = NOUNS[definition.service_kind]
    if kind is not None and definition.service_kind != kind:
        method = _CALLERS[definition.service_kind]
        raise TypeError(f"{target} is a handler of a {noun}, not of a {NOUNS[kind]}: use ctx.{method}")
    if definition.keyed and key is None:
        raise TypeError(f"{target} is a handler of a {noun}: pass the key of the {noun}")


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

    # ------------------------------------------------------------------ time

    @abc.abstractmethod
    async def sleep(self, delta: timedelta, name: str = "") -> None:
        """Sleep durably for ``delta``; the wake-up time is journaled.

        A long sleep does not hold the handler: it suspends, and the proxy
        invokes it again (replaying) once the time has come, even after a
        restart. ``delta`` must not be negative. ``name`` labels the journal
        entry and is checked on replay.
        """

    @abc.abstractmethod
    async def sleep_until(self, when: datetime, name: str = "") -> None:
        """Sleep durably until ``when``, a timezone-aware datetime (naive ones raise ``ValueError``)."""

    @abc.abstractmethod
    def timer(self, delta: timedelta, name: str = "") -> DurableFuture[None]:
        """A durable timer that completes after ``delta``, without awaiting it.

        Use it to race other futures, e.g.
        ``await ctx.select(done=future, timeout=ctx.timer(timedelta(days=1)))``.
        """

    @abc.abstractmethod
    def timer_until(self, when: datetime, name: str = "") -> DurableFuture[None]:
        """A durable timer that completes at ``when`` (timezone-aware), without awaiting it."""

    @abc.abstractmethod
    async def now(self, name: str = "") -> datetime:
        """The current time (UTC, timezone-aware), journaled: replays see the same value."""

    # ------------------------------------------------------------------ calls

    @overload
    def call(
        self,
        service: str,
        handler: str,
        arg: Any = None,
        *,
        key: str | None = None,
        type_hint: None = None,
        name: str = "",
    ) -> CallFuture[Any]: ...

    @overload
    def call(
        self,
        service: str,
        handler: str,
        arg: Any = None,
        *,
        key: str | None = None,
        type_hint: type[T],
        name: str = "",
    ) -> CallFuture[T]: ...

    @abc.abstractmethod
    def call(
        self,
        service: str,
        handler: str,
        arg: Any = None,
        *,
        key: str | None = None,
        type_hint: type[T] | None = None,
        name: str = "",
    ) -> CallFuture[Any]:
        """Call ``service/handler`` with ``arg`` and return a future of its result.

        The call is journaled and the proxy starts the callee exactly once;
        ``future.invocation_id`` is the callee's id. ``await`` the future for
        the result, decoded as ``type_hint`` (plain JSON without one); a callee
        that failed raises ``TerminalError`` with its status code. While the
        callee runs, the caller suspends instead of holding a connection.
        """

    @abc.abstractmethod
    async def send(
        self,
        service: str,
        handler: str,
        arg: Any = None,
        *,
        key: str | None = None,
        delay: timedelta | None = None,
        name: str = "",
    ) -> str:
        """Start ``service/handler`` with ``arg`` without waiting for its result.

        Returns the callee's invocation id once the proxy has durably recorded
        the request; with ``delay`` the callee starts that much later.
        """

    @overload
    def service_call(
        self, handler: Callable[[Context], Awaitable[O]], *, key: str | None = None, name: str = ""
    ) -> CallFuture[O]: ...

    @overload
    def service_call(
        self, handler: Callable[[Context, I], Awaitable[O]], arg: I, *, key: str | None = None, name: str = ""
    ) -> CallFuture[O]: ...

    def service_call(
        self, handler: Callable[..., Awaitable[Any]], arg: Any = None, *, key: str | None = None, name: str = ""
    ) -> CallFuture[Any]:
        """``ctx.call`` for a handler function decorated with ``@service.handler()``.

        The target is read from the decorated function and the result is
        decoded as its declared return type, e.g.
        ``greeting = await ctx.service_call(greet, "Ada")``.
        """
        definition = _definition(handler)
        _check_argument(definition, arg)
        _check_target(definition, key)
        output_type: Any = definition.output_codec.type
        return self.call(definition.service, definition.name, arg, key=key, type_hint=output_type, name=name)

    @overload
    def service_send(
        self,
        handler: Callable[[Context], Awaitable[Any]],
        *,
        key: str | None = None,
        delay: timedelta | None = None,
        name: str = "",
    ) -> Awaitable[str]: ...

    @overload
    def service_send(
        self,
        handler: Callable[[Context, I], Awaitable[Any]],
        arg: I,
        *,
        key: str | None = None,
        delay: timedelta | None = None,
        name: str = "",
    ) -> Awaitable[str]: ...

    def service_send(
        self,
        handler: Callable[..., Awaitable[Any]],
        arg: Any = None,
        *,
        key: str | None = None,
        delay: timedelta | None = None,
        name: str = "",
    ) -> Awaitable[str]:
        """``ctx.send`` for a handler function decorated with ``@service.handler()``.

        Returns the callee's invocation id once the send is durable.
        """
        definition = _definition(handler)
        _check_argument(definition, arg)
        _check_target(definition, key)
        return self.send(definition.service, definition.name, arg, key=key, delay=delay, name=name)

    # ------------------------------------------------------------------ objects and workflows

    @overload
    def object_call(self, handler: Callable[[Any], Awaitable[O]], key: str, *, name: str = "") -> CallFuture[O]: ...

    @overload
    def object_call(
        self, handler: Callable[[Any, I], Awaitable[O]], key: str, arg: I, *, name: str = ""
    ) -> CallFuture[O]: ...

    def object_call(
        self, handler: Callable[..., Awaitable[Any]], key: str, arg: Any = None, *, name: str = ""
    ) -> CallFuture[Any]:
        """Call a virtual object's handler (decorated with ``@obj.handler()``) for ``key``.

        ``total = await ctx.object_call(add_item, "cart-7", item)``; like ``service_call`` otherwise.
        """
        return self._keyed_call("object", handler, key, arg, name)

    @overload
    def object_send(
        self, handler: Callable[[Any], Awaitable[Any]], key: str, *, delay: timedelta | None = None, name: str = ""
    ) -> Awaitable[str]: ...

    @overload
    def object_send(
        self,
        handler: Callable[[Any, I], Awaitable[Any]],
        key: str,
        arg: I,
        *,
        delay: timedelta | None = None,
        name: str = "",
    ) -> Awaitable[str]: ...

    def object_send(
        self,
        handler: Callable[..., Awaitable[Any]],
        key: str,
        arg: Any = None,
        *,
        delay: timedelta | None = None,
        name: str = "",
    ) -> Awaitable[str]:
        """Send to a virtual object's handler for ``key``; returns the callee's invocation id once durable."""
        return self._keyed_send("object", handler, key, arg, delay, name)

    @overload
    def workflow_call(self, handler: Callable[[Any], Awaitable[O]], key: str, *, name: str = "") -> CallFuture[O]: ...

    @overload
    def workflow_call(
        self, handler: Callable[[Any, I], Awaitable[O]], key: str, arg: I, *, name: str = ""
    ) -> CallFuture[O]: ...

    def workflow_call(
        self, handler: Callable[..., Awaitable[Any]], key: str, arg: Any = None, *, name: str = ""
    ) -> CallFuture[Any]:
        """Call a workflow's handler (its ``run``, or a shared one) for the workflow ``key``."""
        return self._keyed_call("workflow", handler, key, arg, name)

    @overload
    def workflow_send(
        self, handler: Callable[[Any], Awaitable[Any]], key: str, *, delay: timedelta | None = None, name: str = ""
    ) -> Awaitable[str]: ...

    @overload
    def workflow_send(
        self,
        handler: Callable[[Any, I], Awaitable[Any]],
        key: str,
        arg: I,
        *,
        delay: timedelta | None = None,
        name: str = "",
    ) -> Awaitable[str]: ...

    def workflow_send(
        self,
        handler: Callable[..., Awaitable[Any]],
        key: str,
        arg: Any = None,
        *,
        delay: timedelta | None = None,
        name: str = "",
    ) -> Awaitable[str]:
        """Send to a workflow's handler for the workflow ``key``, e.g. start its ``run`` without waiting."""
        return self._keyed_send("workflow", handler, key, arg, delay, name)

    def _keyed_call(
        self, kind: str, handler: Callable[..., Awaitable[Any]], key: str, arg: Any, name: str
    ) -> CallFuture[Any]:
        definition = _definition(handler)
        _check_argument(definition, arg)
        _check_target(definition, key, kind)
        output_type: Any = definition.output_codec.type
        return self.call(definition.service, definition.name, arg, key=key, type_hint=output_type, name=name)

    def _keyed_send(
        self,
        kind: str,
        handler: Callable[..., Awaitable[Any]],
        key: str,
        arg: Any,
        delay: timedelta | None,
        name: str,
    ) -> Awaitable[str]:
        definition = _definition(handler)
        _check_argument(definition, arg)
        _check_target(definition, key, kind)
        return self.send(definition.service, definition.name, arg, key=key, delay=delay, name=name)

    # ------------------------------------------------------------------ awakeables

    @overload
    def awakeable(self, type_hint: None = None, name: str = "") -> tuple[str, DurableFuture[Any]]: ...

    @overload
    def awakeable(self, type_hint: type[T], name: str = "") -> tuple[str, DurableFuture[T]]: ...

    @abc.abstractmethod
    def awakeable(self, type_hint: type[T] | None = None, name: str = "") -> tuple[str, DurableFuture[Any]]:
        """A promise the outside world resolves: returns ``(awakeable_id, future)``.

        Hand the id to whoever will resolve it (from a ``ctx.run`` step, so it
        is sent once); they complete it through the proxy's ingress, and
        ``await future`` returns the value, decoded as ``type_hint``, or
        raises ``TerminalError`` if they rejected it.
        """

    # ------------------------------------------------------------------ combinators

    @abc.abstractmethod
    async def select(self, name: str = "", /, **futures: DurableFuture[Any]) -> tuple[str, Any]:
        """Wait for the first of ``futures`` to complete; returns ``(its keyword, its result)``.

        ``await ctx.select(approved=promise, timeout=ctx.timer(timedelta(days=7)))``.
        The winner is journaled, so a replay picks the same one even if others
        have completed since; when several are complete at once the earliest
        created wins. A failed winner raises its ``TerminalError``. ``name``
        (positional) labels the journal entry.
        """

    @abc.abstractmethod
    async def gather(self, *futures: DurableFuture[Any]) -> list[Any]:
        """Wait for all ``futures`` and return their results, in order.

        If any failed, the ``TerminalError`` of the first failed one (in
        argument order) is raised once all are complete.
        """

    # ------------------------------------------------------------------ determinism

    @abc.abstractmethod
    def random(self) -> Random:
        """A random generator seeded per invocation: replays draw the same numbers.

        It is one object for the whole attempt, so the draws repeat as long as
        the handler draws in the same order; do not use it inside ``ctx.run``
        steps, whose code does not re-run on replay.
        """

    @abc.abstractmethod
    def uuid4(self) -> UUID:
        """A version-4 UUID drawn from ``random()``: the same on every replay."""
