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
from typing import Any, TypeVar, get_type_hints

from .context import Context
from .errors import InputError
from .protocol import HandlerManifest, ServiceManifest
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


@dataclasses.dataclass(frozen=True, slots=True)
class HandlerDefinition:
    """A registered handler with the codecs of its input and output."""

    service: str
    name: str
    fn: Callable[..., Awaitable[Any]]
    takes_input: bool
    input_codec: Codec[Any]
    output_codec: Codec[Any]

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
            input_schema=self.input_codec.json_schema() if self.takes_input else None,
            output_schema=self.output_codec.json_schema(),
            takes_input=self.takes_input,
        )


def _definition(service: str, name: str, fn: Callable[..., Any]) -> HandlerDefinition:
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
    takes_input = len(positional) == 2
    input_type = hints.get(positional[1].name, Any) if takes_input else None
    try:
        input_codec = codec_for(input_type)
        output_codec = codec_for(hints.get("return", Any))
    except TypeError as exc:
        raise TypeError(f"{where}: {exc}") from exc
    return HandlerDefinition(service, name, fn, takes_input, input_codec, output_codec)


class Service:
    """A named group of handlers, the unit the proxy discovers and routes to."""

    def __init__(self, name: str) -> None:
        self._name = _check_name("service", name)
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
        if name is not None:
            _check_name("handler", name)

        def register(fn: F) -> F:
            handler_name = _check_name("handler", name or fn.__name__)
            if handler_name in self._handlers:
                raise ValueError(f"service {self._name!r} already has a handler named {handler_name!r}")
            definition = self._handlers[handler_name] = _definition(self._name, handler_name, fn)
            # Lets ctx.service_call(fn, ...) find the target and the types of fn.
            setattr(fn, HANDLER_ATTRIBUTE, definition)
            return fn

        return register

    def manifest(self) -> ServiceManifest:
        return ServiceManifest(name=self._name, handlers=[h.manifest() for h in self._handlers.values()])

    def __repr__(self) -> str:
        return f"Service({self._name!r}, handlers={sorted(self._handlers)})"
