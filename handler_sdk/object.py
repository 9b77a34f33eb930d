"""Virtual objects: handlers addressed by a key, with durable state per key.

``VirtualObject("Cart")`` is called as ``Cart/{key}/{handler}``. Exclusive
handlers (the default) run one at a time per key, so they can read, change
and write the key's state without races; shared handlers run concurrently
with everything and may only read it::

    cart = VirtualObject("Cart")

    @cart.handler()
    async def add(ctx: ObjectContext, item: str) -> list[str]:
        items = await ctx.get("items", type_hint=list[str]) or []
        items.append(item)
        ctx.set("items", items)
        return items

    @cart.handler(kind="shared")
    async def items(ctx: ObjectSharedContext) -> list[str]:
        return await ctx.get("items", type_hint=list[str]) or []
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from .service import F, Service

__all__ = ["VirtualObject"]


class VirtualObject(Service):
    """A named group of keyed handlers sharing the state of their key."""

    kind = "object"

    def handler(self, name: str | None = None, kind: Literal["exclusive", "shared"] = "exclusive") -> Callable[[F], F]:
        """Register a handler; it gets an ``ObjectContext`` (exclusive) or an ``ObjectSharedContext`` (shared).

        ``name`` defaults to the function's name, as for ``Service.handler``.
        """
        if kind not in ("exclusive", "shared"):
            raise ValueError(f"a virtual object handler is 'exclusive' or 'shared', not {kind!r}")
        return self._register(name, kind)
