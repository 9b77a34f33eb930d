"""The order flow, made durable: charge the card, create the order, email the
customer, reserve the stock. If the process dies half-way, the proxy resumes
the invocation on another instance and the card is charged once.

Run it beside the proxy (``make run`` does all of this)::

    uvicorn examples.order_service:app --port 9080
    durable-proxy register http://127.0.0.1:9080/durable
    curl localhost:8080/OrderService/process_order --json '{"customer_email": "ada@example.com",
        "card": "tok_visa", "items": [{"sku": "book", "quantity": 1, "price_cents": 2500}]}'
"""

from __future__ import annotations

from datetime import timedelta

import msgspec
from fastapi import FastAPI

from handler_sdk import Context, Endpoint, RunOptions, Service, TerminalError, current_step

from .shop import CardDeclined, Shop, default_shop


class Item(msgspec.Struct, frozen=True):
    sku: str
    quantity: int
    price_cents: int


class Order(msgspec.Struct, frozen=True):
    customer_email: str
    card: str
    items: list[Item]


class OrderResult(msgspec.Struct, frozen=True):
    order_id: str
    payment_id: str
    amount_cents: int


#: The outside world. Tests swap in an instrumented one.
shop: Shop = default_shop()


def charge_payment(order: Order) -> str:
    amount = sum(item.quantity * item.price_cents for item in order.items)
    try:
        # The step's idempotency key is stable across retries and replays, so a
        # charge whose result was lost in a crash is not made twice.
        return shop.charge(current_step().idempotency_key, order.card, amount)
    except CardDeclined as exc:
        raise TerminalError(str(exc), status_code=402) from None


def create_order(order: Order, payment_id: str) -> str:
    return shop.create_order(current_step().idempotency_key, payment_id, order.customer_email)


def send_confirmation_email(email: str, order_id: str) -> None:
    shop.send_email(current_step().idempotency_key, email, f"Your order {order_id} is confirmed")


def update_inventory(items: list[Item]) -> None:
    totals: dict[str, int] = {}
    for item in items:
        totals[item.sku] = totals.get(item.sku, 0) + item.quantity
    shop.reserve(current_step().idempotency_key, totals)


orders = Service("OrderService")


@orders.handler()
async def process_order(ctx: Context, order: Order) -> OrderResult:
    if not order.items:
        raise TerminalError("an order needs at least one item", status_code=400)
    payment_id = await ctx.run(
        "charge-payment",
        charge_payment,
        order,
        options=RunOptions(max_attempts=3, initial_interval=timedelta(seconds=1)),
    )
    order_id = await ctx.run("create-order", create_order, order, payment_id)
    await ctx.run("send-confirmation-email", send_confirmation_email, order.customer_email, order_id)
    await ctx.run("update-inventory", update_inventory, order.items)
    amount = sum(item.quantity * item.price_cents for item in order.items)
    return OrderResult(order_id=order_id, payment_id=payment_id, amount_cents=amount)


app = FastAPI(title="Order service")
app.mount("/durable", Endpoint([orders]).asgi())


@app.get("/")
async def index() -> dict[str, str]:
    return {"service": "orders", "durable_endpoint": "/durable"}
