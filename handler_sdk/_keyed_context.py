"""The SDK's contexts of keyed handlers, one class per kind of handler.

Each kind gets exactly the methods its public type declares: a shared
handler's context has no ``set`` at all (``AttributeError``), so a shared
handler cannot journal a state write, whatever its annotations say.

Like every action, state reads and writes and promise actions take their
journal index when they are called. ``get`` and ``state_keys`` do all their
work then too (reading the local state in call order), and the coroutine they
return only hands over the value.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

from ._attempt import Attempt, Cancelling
from ._context import InvocationContext
from ._promises import AttemptPromise
from ._state import KeyedState
from .keyed_context import ObjectContext, ObjectSharedContext, WorkflowContext, WorkflowSharedContext
from .promise import DurablePromise
from .protocol import HandlerKind, ServiceKind
from .serde import codec_for, encode_json
from .service import HandlerDefinition

T = TypeVar("T")


async def _ready(value: T) -> T:
    return value


class ObjectSharedInvocationContext(InvocationContext, ObjectSharedContext):
    """``ObjectSharedContext`` of one attempt: the key, and journaled reads of its state."""

    def __init__(self, attempt: Attempt) -> None:
        super().__init__(attempt)
        key = attempt.request.key
        if key is None:
            raise ValueError(f"invocation {attempt.invocation_id} of a keyed handler has no key")
        self._key = key
        self._state = KeyedState(attempt, attempt.request.state)

    def key(self) -> str:
        return self._key

    def get(self, name: str, type_hint: Any = None) -> Coroutine[Any, Any, Any]:
        codec = codec_for(Any if type_hint is None else type_hint)
        slot = self._take("ctx.get")
        if isinstance(slot, Cancelling):
            return self._attempt.raise_cancelled(slot)
        return _ready(self._state.get(slot, name, codec))

    def state_keys(self) -> Coroutine[Any, Any, list[str]]:
        slot = self._take("ctx.state_keys")
        if isinstance(slot, Cancelling):
            return self._attempt.raise_cancelled(slot)
        return _ready(self._state.keys(slot))


class ObjectInvocationContext(ObjectSharedInvocationContext, ObjectContext):
    """``ObjectContext`` of one attempt: reads and writes of the key's state."""

    def set(self, name: str, value: Any) -> None:
        encoded = encode_json(value)  # before the index is taken: a bad value leaves no hole
        self._state.set(self._take_now("ctx.set"), name, encoded)

    def clear(self, name: str) -> None:
        self._state.clear(self._take_now("ctx.clear"), name)

    def clear_all(self) -> None:
        self._state.clear_all(self._take_now("ctx.clear_all"))


class WorkflowSharedInvocationContext(ObjectSharedInvocationContext, WorkflowSharedContext):
    """``WorkflowSharedContext`` of one attempt: state reads and the workflow's promises."""

    def promise(self, name: str, type_hint: Any = None) -> DurablePromise[Any]:
        codec = codec_for(Any if type_hint is None else type_hint)
        return AttemptPromise(self._attempt, self._take, name, codec)


class WorkflowInvocationContext(ObjectInvocationContext, WorkflowSharedInvocationContext, WorkflowContext):
    """``WorkflowContext`` of one attempt (a workflow's ``run``): state reads and writes, promises."""


_IMPLEMENTATIONS: dict[tuple[ServiceKind, HandlerKind | None], type[InvocationContext]] = {
    ("service", None): InvocationContext,
    ("object", "exclusive"): ObjectInvocationContext,
    ("object", "shared"): ObjectSharedInvocationContext,
    ("workflow", "workflow"): WorkflowInvocationContext,
    ("workflow", "shared"): WorkflowSharedInvocationContext,
}


def new_context(definition: HandlerDefinition, attempt: Attempt) -> InvocationContext:
    """The context ``definition``'s handler is called with in ``attempt``."""
    return _IMPLEMENTATIONS[definition.service_kind, definition.kind](attempt)
