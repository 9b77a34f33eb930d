"""A subscription's whole life as one durable handler: a 14-day trial, a
conversion check, then a monthly billing loop that runs until the
subscription is cancelled. The sleeps are durable timers: the handler holds
nothing while it waits, for days or months, and survives any restart.

Cancel a subscription with ``durable-proxy invocations cancel ID``: the
handler gets ``InvocationCancelled`` at its next step and closes the account.
"""

from __future__ import annotations

from datetime import timedelta

import msgspec

from handler_sdk import Context, Endpoint, InvocationCancelled, Service, current_step

TRIAL = timedelta(days=14)
BILLING_PERIOD = timedelta(days=30)


class Subscription(msgspec.Struct, frozen=True):
    customer: str
    plan: str
    price_cents: int


class SubscriptionResult(msgspec.Struct, frozen=True):
    customer: str
    status: str
    invoices: list[str]


class Billing:
    """The outside world of this example: replace with your billing provider."""

    def __init__(self) -> None:
        self.converted: set[str] = set()
        self.invoices: dict[str, str] = {}
        self.closed: list[str] = []

    def has_payment_method(self, customer: str) -> bool:
        return customer in self.converted

    def invoice(self, idempotency_key: str, customer: str, cents: int) -> str:
        return self.invoices.setdefault(idempotency_key, f"in_{customer}_{len(self.invoices) + 1}")

    def close_account(self, customer: str) -> None:
        self.closed.append(customer)


billing = Billing()


def has_payment_method(customer: str) -> bool:
    return billing.has_payment_method(customer)


def charge_month(customer: str, cents: int) -> str:
    return billing.invoice(current_step().idempotency_key, customer, cents)


def close_account(customer: str) -> None:
    billing.close_account(customer)


subscriptions = Service("SubscriptionService")


@subscriptions.handler()
async def run(ctx: Context, sub: Subscription) -> SubscriptionResult:
    invoices: list[str] = []
    try:
        await ctx.sleep(TRIAL)
        if not await ctx.run("conversion-check", has_payment_method, sub.customer):
            await ctx.run("close-account", close_account, sub.customer)
            return SubscriptionResult(customer=sub.customer, status="trial-expired", invoices=invoices)
        while True:
            invoices.append(await ctx.run("charge-month", charge_month, sub.customer, sub.price_cents))
            await ctx.sleep(BILLING_PERIOD)
    except InvocationCancelled:
        await ctx.run("close-account", close_account, sub.customer)
        return SubscriptionResult(customer=sub.customer, status="cancelled", invoices=invoices)


app = Endpoint([subscriptions]).asgi()
