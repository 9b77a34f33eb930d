"""A shopping cart as a virtual object: one cart per key (say, per customer),
whose state lives in the proxy, not in a database of your own.

``add_item``, ``remove_item`` and ``checkout`` are exclusive: they run one at a
time per cart, in arrival order, so two concurrent adds never lose an item.
``view`` is shared: it runs alongside them and reads the committed cart.
``checkout`` calls the order service of ``examples/order_service.py`` (charge,
create the order, email, reserve stock) and empties the cart once the order
exists; a declined card leaves the cart as it was.

Run it beside the proxy::

    uvicorn examples.cart:app --port 9082
    durable-proxy register http://127.0.0.1:9082
    curl localhost:8080/Cart/ada/add_item --json '{"sku": "book", "quantity": 1, "price_cents": 2500}'
    curl -X POST localhost:8080/Cart/ada/view
    curl localhost:8080/Cart/ada/checkout --json '{"customer_email": "ada@example.com", "card": "tok_visa"}'
    durable-proxy objects show Cart ada
"""

from __future__ import annotations

import msgspec

from handler_sdk import Endpoint, ObjectContext, ObjectSharedContext, TerminalError, VirtualObject

from .order_service import Item, Order, OrderResult, orders, process_order

#: The state entry holding the cart's items.
ITEMS = "items"


class Payment(msgspec.Struct, frozen=True):
    customer_email: str
    card: str


cart = VirtualObject("Cart")


@cart.handler()
async def add_item(ctx: ObjectContext, item: Item) -> list[Item]:
    """Add ``item``; an item of a SKU already in the cart adds to its quantity."""
    if item.quantity <= 0:
        raise TerminalError(f"quantity must be positive, got {item.quantity}", status_code=400)
    items = await ctx.get(ITEMS, type_hint=list[Item]) or []
    for i, existing in enumerate(items):
        if existing.sku == item.sku:
            items[i] = Item(sku=item.sku, quantity=existing.quantity + item.quantity, price_cents=item.price_cents)
            break
    else:
        items.append(item)
    ctx.set(ITEMS, items)
    return items


@cart.handler()
async def remove_item(ctx: ObjectContext, sku: str) -> list[Item]:
    """Remove every unit of ``sku`` (nothing happens if it is not in the cart)."""
    items = [item for item in await ctx.get(ITEMS, type_hint=list[Item]) or [] if item.sku != sku]
    if items:
        ctx.set(ITEMS, items)
    else:
        ctx.clear(ITEMS)
    return items


@cart.handler(kind="shared")
async def view(ctx: ObjectSharedContext) -> list[Item]:
    return await ctx.get(ITEMS, type_hint=list[Item]) or []


@cart.handler()
async def checkout(ctx: ObjectContext, payment: Payment) -> OrderResult:
    """Order what is in the cart, then empty it. A failed order (e.g. a declined card) keeps the cart."""
    items = await ctx.get(ITEMS, type_hint=list[Item]) or []
    if not items:
        raise TerminalError(f"cart {ctx.key()} is empty", status_code=400)
    order = Order(customer_email=payment.customer_email, card=payment.card, items=items)
    result = await ctx.service_call(process_order, order)
    ctx.clear(ITEMS)
    return result


app = Endpoint([cart, orders]).asgi()
