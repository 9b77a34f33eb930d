"""Services and the handlers registered on them.

Everything that can be checked about a handler is checked when it is
decorated (that it is async, its arity, that its types have JSON codecs), so a
mistake fails at import time instead of on the first invocation.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import Any, ClassVar, TypeVar, get_type_hints

from .context import NOUNS, Context
from .errors import InputError
from .keyed_context import ObjectContext, ObjectSharedContext, WorkflowContext, WorkflowSharedContext
from .protocol import HandlerKind, HandlerManifest, ServiceKind, ServiceManifest
from .serde import Codec, codec_for

__all__ = ["HandlerDefinition", "Service"]

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

#: The attribute ``@service.handler()`` sets on the function it registers.
HANDLER_ATTRIBUTE = "__durable_handler__"

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def _check_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"{kind} name {name!r} is not valid: it must match [A-Za-z_][A-Za-z0-9_]*")
    return name


#: The context type each kind of handler gets, by the kind of its service and its own kind.
CONTEXT_TYPES: Mapping[tuple[ServiceKind, HandlerKind | None], type[Any]] = MappingProxyType(
    {
        ("service", None): Context,
        ("object", "exclusive"): ObjectContext,
        ("object", "shared"): ObjectSharedContext,
        ("workflow", "workflow"): WorkflowContext,
        ("workflow", "shared"): WorkflowSharedContext,
    }
)


@dataclasses.dataclass(frozen=True, slots=True)
class HandlerDefinition:
    """A registered handler with the codecs of its input and output.

    ``kind`` is ``None`` for the handlers of a plain service; ``service_kind``
    is the kind of the service, object or workflow it belongs to.
    """

    service: str
    name: str
    fn: Callable[..., Awaitable[Any]]
    takes_input: bool
    input_codec: Codec[Any]
    output_codec: Codec[Any]
    kind: HandlerKind | None = None
    service_kind: ServiceKind = "service"

    @property
    def keyed(self) -> bool:
        """Whether invocations of the handler are addressed by a key (objects and workflows)."""
        return self.service_kind != "service"

    def decode_input(self, data: bytes) -> Any:
        """The handler argument; a handler without one accepts only an empty body or ``null``."""
        if self.takes_input:
            return self.input_codec.decode(data)
        if data.strip() not in (b"", b"null"):
            raise InputError(f"handler '{self.service}/{self.name}' takes no input, got {data[:100]!r}")
        return None

    async def invoke(self, ctx: Context, argument: Any) -> Any:
        if self.takes_input:
            return await self.fn(ctx, argument)
        return await self.fn(ctx)

    def manifest(self) -> HandlerManifest:
        return HandlerManifest(
            name=self.name,
            kind=self.kind,
            input_schema=self.input_codec.json_schema() if self.takes_input else None,
            output_schema=self.output_codec.json_schema(),
            takes_input=self.takes_input,
        )


def _definition(
    service: str, name: str, fn: Callable[..., Any], kind: HandlerKind | None, service_kind: ServiceKind
) -> HandlerDefinition:
    where = f"handler {getattr(fn, '__qualname__', fn)!r}"
    if not inspect.iscoroutinefunction(fn):
        raise TypeError(f"{where} must be an async function (async def)")
    parameters = list(inspect.signature(fn).parameters.values())
    positional = [p for p in parameters if p.kind in _POSITIONAL]
    extra = [p.name for p in parameters if p.kind not in _POSITIONAL and p.default is inspect.Parameter.empty]
    if len(positional) not in (1, 2) or extra:
        raise TypeError(f"{where} must take (ctx) or (ctx, input) as its only parameters")
    try:
        hints = get_type_hints(fn, include_extras=True)
    except Exception as exc:
        raise TypeError(f"{where} has annotations that cannot be resolved: {exc}") from exc
    _check_context_annotation(where, hints.get(positional[0].name), CONTEXT_TYPES[service_kind, kind])
    takes_input = len(positional) == 2
    input_type = hints.get(positional[1].name, Any) if takes_input else None
    try:
        input_codec = codec_for(input_type)
        output_codec = codec_for(hints.get("return", Any))
    except TypeError as exc:
        raise TypeError(f"{where}: {exc}") from exc
    return HandlerDefinition(service, name, fn, takes_input, input_codec, output_codec, kind, service_kind)


def _check_context_annotation(where: str, annotation: Any, given: type[Any]) -> None:
    """Refuse a handler that declares a context with more methods than it will get (a shared one writing state)."""
    if isinstance(annotation, type) and issubclass(annotation, Context) and not issubclass(given, annotation):
        raise TypeError(
            f"{where} is called with a {given.__name__}, but its first parameter is annotated {annotation.__name__}"
        )


class Service:
    """A named group of handlers, the unit the proxy discovers and routes to."""

    #: What the proxy is told this is: a plain service, a virtual object or a workflow.
    kind: ClassVar[ServiceKind] = "service"

    def __init__(self, name: str) -> None:
        self._name = _check_name(NOUNS[self.kind], name)
        self._handlers: dict[str, HandlerDefinition] = {}

    @property
    def name(self) -> str:
        return self._name

    @property
    def handlers(self) -> Mapping[str, HandlerDefinition]:
        return MappingProxyType(self._handlers)

    def handler(self, name: str | None = None) -> Callable[[F], F]:
        """Register an ``async def h(ctx)`` or ``async def h(ctx, input)``; returns it.

        The handler is named after the function unless ``name`` is given. The
        function is returned unchanged except for a ``__durable_handler__``
        attribute (its ``HandlerDefinition``: service, name and types), which
        ``ctx.service_call`` and ``ctx.service_send`` read.
        """
        return self._register(name, None)

    def _register(self, name: str | None, kind: HandlerKind | None) -> Callable[[F], F]:
        """The decorator registering a handler of ``kind``, named ``name`` or after the function."""
        if name is not None:
            _check_name("handler", name)

        def register(fn: F) -> F:
            handler_name = _check_name("handler", name or fn.__name__)
            if handler_name in self._handlers:
                noun = NOUNS[self.kind]
                raise ValueError(f"{noun} {self._name!r} already has a handler named {handler_name!r}")
            definition = _definition(self._name, handler_name, fn, kind, self.kind)
            self._check_new(definition)
            self._handlers[handler_name] = definition
            # Lets ctx.service_call(fn, ...) find the target and the types of fn.
            setattr(fn, HANDLER_ATTRIBUTE, definition)
            return fn

        return register

    def _check_new(self, definition: HandlerDefinition) -> None:
        """Refuse a handler that cannot be added to the ones registered so far."""

    def check(self) -> None:
        """Raise ``ValueError`` if the service is not complete (``Endpoint`` calls it)."""

    def manifest(self) -> ServiceManifest:
        return ServiceManifest(
            name=self._name, kind=self.kind, handlers=[h.manifest() for h in self._handlers.values()]
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._name!r}, handlers={sorted(self._handlers)})"
