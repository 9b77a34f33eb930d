"""examples/subscription.py: a trial, a conversion check, then monthly billing until cancelled.

Months of durable sleeps run in milliseconds on the testing kit's clock.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from examples import subscription
from examples.subscription import BILLING_PERIOD, TRIAL, Billing, subscriptions
from handler_sdk.testing import TestEnvironment

REPLAY = pytest.mark.parametrize("always_replay", [False, True], ids=["live", "always-replay"])


@pytest.fixture(autouse=True)
def billing(monkeypatch: pytest.MonkeyPatch) -> Billing:
    """A fresh fake billing provider for each test (the example keeps one at module level)."""
    fresh = Billing()
    monkeypatch.setattr(subscription, "billing", fresh)
    return fresh


def plan(customer: str) -> dict[str, object]:
    return {"customer": customer, "plan": "pro", "price_cents": 1200}


@REPLAY
async def test_a_trial_that_is_not_converted_expires_after_14_days(always_replay: bool, billing: Billing) -> None:
    async with TestEnvironment([subscriptions], always_replay=always_replay) as env:
        result = await env.call("SubscriptionService", "run", plan("ada"))
        assert result == {"customer": "ada", "status": "trial-expired", "invoices": []}
        assert env.now() - env.start >= TRIAL
        assert env.now() - env.start < TRIAL + BILLING_PERIOD
        assert billing.closed == ["ada"]
        assert billing.invoices == {}


async def test_nothing_happens_before_the_trial_ends(billing: Billing) -> None:
    async with TestEnvironment([subscriptions]) as env:
        billing.converted.add("bo")
        invocation_id = await env.send("SubscriptionService", "run", plan("bo"))
        await env.advance(TRIAL - timedelta(minutes=1))
        found = await env.invocation(invocation_id)
        assert found["status"] == "suspended"
        assert [entry["kind"] for entry in found["journal"]] == ["sleep"]
        assert billing.invoices == {}
        await env.advance(timedelta(minutes=1))
        assert len(billing.invoices) == 1


@REPLAY
@pytest.mark.parametrize("months", [1, 3])
async def test_a_converted_customer_is_billed_monthly_until_cancelled(
    always_replay: bool, months: int, billing: Billing
) -> None:
    async with TestEnvironment([subscriptions], always_replay=always_replay) as env:
        billing.converted.add("cy")
        invocation_id = await env.send("SubscriptionService", "run", plan("cy"))
        # The first month is billed when the trial ends, each later one a billing period after.
        await env.advance(TRIAL + BILLING_PERIOD * (months - 1) + timedelta(days=15))
        assert len(billing.invoices) == months
        assert (await env.invocation(invocation_id))["status"] == "suspended"
        assert billing.closed == []
        await env.cancel(invocation_id)
        result = await env.attach(invocation_id)
        assert result["status"] == "cancelled"
        assert result["customer"] == "cy"
        assert len(result["invoices"]) == months
        assert sorted(result["invoices"]) == sorted(billing.invoices.values())
        assert len(set(result["invoices"])) == months  # one invoice per month, never charged twice
        assert billing.closed == ["cy"]
        found = await env.invocation(invocation_id)
        assert found["status"] == "completed"
        names = [(entry["kind"], entry["name"]) for entry in found["journal"]]
        assert names[-2:] == [("cancel", ""), ("run", "close-account")]
        assert names.count(("run", "charge-month")) == months
        # Cancelled for good: no more bills however long we wait.
        await env.advance(BILLING_PERIOD * 3)
        assert len(billing.invoices) == months


async def test_a_cancel_during_the_trial_closes_the_account_without_billing(billing: Billing) -> None:
    async with TestEnvironment([subscriptions]) as env:
        billing.converted.add("di")
        invocation_id = await env.send("SubscriptionService", "run", plan("di"))
        await env.advance(timedelta(days=3))
        await env.cancel(invocation_id)
        result = await env.attach(invocation_id)
        assert result == {"customer": "di", "status": "cancelled", "invoices": []}
        assert billing.closed == ["di"]
        assert billing.invoices == {}
        assert env.now() - env.start < TRIAL
