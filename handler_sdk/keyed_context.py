"""The contexts of keyed handlers: virtual objects and workflows.

A virtual object or a workflow is addressed by a key, and each key has its
own state, a map from names to JSON values. Exclusive handlers (and a
workflow's ``run``) run one at a time per key and may change the state;
shared handlers run concurrently and only read it. The types say which is
which: only ``ObjectContext`` and ``WorkflowContext`` have ``set``,
``clear`` and ``clear_all``, so a type checker catches a shared handler that
tries to write.

State reads and writes are journaled: a replay returns the value the first
run read, and a write is applied by the proxy in the transaction that
commits it.
"""

from __future__ import annotations

import abc
from typing import Any, TypeVar, overload

from .context import Context
from .promise import DurablePromise

__all__ = ["ObjectContext", "ObjectSharedContext", "WorkflowContext", "WorkflowSharedContext"]

T = TypeVar("T")


class ObjectSharedContext(Context):
    """The context of a shared handler of a virtual object: the key and read-only state."""

    @abc.abstractmethod
    def key(self) -> str:
        """The key of the object (or workflow) this invocation runs for."""

    @overload
    async def get(self, name: str, type_hint: None = None) -> Any: ...

    @overload
    async def get(self, name: str, type_hint: type[T]) -> T | None: ...

    @abc.abstractmethod
    async def get(self, name: str, type_hint: type[T] | None = None) -> Any:
        """The value of the state entry ``name``, decoded as ``type_hint``; ``None`` if it is not set.

        The read is journaled, so a replay returns the same value even if the
        state changed since (which only a shared handler can observe).
        """

    @abc.abstractmethod
    async def state_keys(self) -> list[str]:
        """The names of the state entries that are set, sorted; journaled like ``get``."""


class ObjectContext(ObjectSharedContext):
    """The context of an exclusive handler of a virtual object: it may also change the state."""

    @abc.abstractmethod
    def set(self, name: str, value: Any) -> None:
        """Set the state entry ``name`` to ``value`` (anything JSON-encodable).

        Not awaited: later reads of this attempt see the value at once, and the
        proxy stores it when the entry is committed, before anything the
        handler journals afterwards and before the invocation ends.
        """

    @abc.abstractmethod
    def clear(self, name: str) -> None:
        """Remove the state entry ``name`` (nothing happens if it is not set)."""

    @abc.abstractmethod
    def clear_all(self) -> None:
        """Remove every state entry of the key."""


class WorkflowSharedContext(ObjectSharedContext):
    """The context of a workflow's shared handlers: read the state, signal the run through promises."""

    @overload
    def promise(self, name: str, type_hint: None = None) -> DurablePromise[Any]: ...

    @overload
    def promise(self, name: str, type_hint: type[T]) -> DurablePromise[T]: ...

    @abc.abstractmethod
    def promise(self, name: str, type_hint: type[T] | None = None) -> DurablePromise[Any]:
        """The workflow's durable promise ``name``, whose value decodes as ``type_hint``."""


class WorkflowContext(ObjectContext, WorkflowSharedContext):
    """The context of a workflow's ``run`` handler: state reads and writes, and promises."""
