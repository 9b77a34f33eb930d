"""examples/approval.py: a workflow that waits up to 7 days for a decision, signalled through a durable promise."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta
from typing import Any

import pytest

from examples import approval as approval_module
from examples.approval import APPROVAL_TIMEOUT, Backoffice, Expense, approval
from handler_sdk.testing import InvocationFailed, TestEnvironment

REPLAY = pytest.mark.parametrize("always_replay", [False, True], ids=["live", "always-replay"])
EXPENSE = {"employee": "ada", "amount_cents": 120_000, "description": "conference ticket"}


@pytest.fixture(autouse=True)
def backoffice(monkeypatch: pytest.MonkeyPatch) -> Backoffice:
    """A fresh fake backoffice for each test (the example keeps one at module level)."""
    fresh = Backoffice()
    monkeypatch.setattr(approval_module, "backoffice", fresh)
    return fresh


class SlowAsk(Backoffice):
    """A backoffice whose approval request waits until the test lets it finish."""

    def __init__(self) -> None:
        super().__init__()
        self.asking = threading.Event()
        self.finish = threading.Event()

    def ask_for_approval(self, idempotency_key: str, key: str, expense: Expense) -> None:
        self.asking.set()
        if not self.finish.wait(timeout=10):
            raise TimeoutError("the test never let the approval request finish")
        super().ask_for_approval(idempotency_key, key, expense)


def step_names(found: dict[str, Any]) -> list[str]:
    return [entry["name"] for entry in found["journal"] if entry["kind"] == "run"]


@REPLAY
async def test_an_approved_expense_is_paid(always_replay: bool, backoffice: Backoffice) -> None:
    async with TestEnvironment([approval], always_replay=always_replay) as env:
        invocation_id = await env.send("Approval", "run", EXPENSE, key="exp-1")
        await env.settle()
        assert backoffice.calls == [("ask", "exp-1")]
        assert await env.call("Approval", "decide", {"approved": True, "approver": "grace"}, key="exp-1") is None
        result = await env.attach(invocation_id)
        assert result == {"status": "approved", "approver": "grace", "payout_id": "po_exp-1_120000", "reason": None}
        assert await env.call("Approval", "status", key="exp-1") == "approved"
        assert backoffice.calls == [("ask", "exp-1"), ("pay", "exp-1")]
        assert backoffice.rejections == {}
        assert step_names(await env.invocation(invocation_id)) == ["ask-for-approval", "pay"]
        assert env.now() - env.start < APPROVAL_TIMEOUT


@REPLAY
async def test_a_rejected_expense_notifies_the_employee(always_replay: bool, backoffice: Backoffice) -> None:
    async with TestEnvironment([approval], always_replay=always_replay) as env:
        invocation_id = await env.send("Approval", "run", EXPENSE, key="exp-2")
        await env.settle()
        decision = {"approved": False, "approver": "grace", "comment": "over budget"}
        await env.call("Approval", "decide", decision, key="exp-2")
        result = await env.attach(invocation_id)
        assert result == {"status": "rejected", "approver": "grace", "payout_id": None, "reason": "over budget"}
        assert await env.call("Approval", "status", key="exp-2") == "rejected"
        assert list(backoffice.rejections.values()) == ["over budget"]
        assert backoffice.payouts == {}
        assert step_names(await env.invocation(invocation_id)) == ["ask-for-approval", "notify-rejection"]


@REPLAY
async def test_no_decision_within_7_days_rejects_automatically(always_replay: bool, backoffice: Backoffice) -> None:
    async with TestEnvironment([approval], always_replay=always_replay) as env:
        result = await env.call("Approval", "run", EXPENSE, key="exp-3")
        assert result == {
            "status": "auto-rejected",
            "approver": None,
            "payout_id": None,
            "reason": "no decision within 7 days",
        }
        assert env.now() - env.start >= timedelta(days=7)
        assert await env.call("Approval", "status", key="exp-3") == "auto-rejected"
        assert backoffice.calls == [("ask", "exp-3"), ("notify-rejection", "exp-3")]
        # Too late: the promise is still open, so a decision is accepted, but the run has ended without it.
        await env.call("Approval", "decide", {"approved": True, "approver": "grace"}, key="exp-3")
        assert await env.call("Approval", "status", key="exp-3") == "auto-rejected"
        assert backoffice.payouts == {}


@REPLAY
async def test_the_status_query_answers_while_the_run_waits(always_replay: bool) -> None:
    async with TestEnvironment([approval], always_replay=always_replay) as env:
        assert await env.call("Approval", "status", key="exp-4") == "unknown"
        invocation_id = await env.send("Approval", "run", EXPENSE, key="exp-4")
        await env.settle()
        await env.advance(timedelta(days=3))
        assert await env.call("Approval", "status", key="exp-4") == "waiting"
        assert (await env.invocation(invocation_id))["status"] == "suspended"
        assert env.now() - env.start < APPROVAL_TIMEOUT
        await env.call("Approval", "decide", {"approved": True, "approver": "grace"}, key="exp-4")
        assert (await env.attach(invocation_id))["status"] == "approved"
        assert env.now() - env.start < APPROVAL_TIMEOUT


@REPLAY
async def test_a_decision_before_the_run_waits_for_it_is_kept(
    always_replay: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow = SlowAsk()
    monkeypatch.setattr(approval_module, "backoffice", slow)
    async with TestEnvironment([approval], always_replay=always_replay) as env:
        invocation_id = await env.send("Approval", "run", EXPENSE, key="exp-5")
        try:
            assert await asyncio.to_thread(slow.asking.wait, 5), "the approval request never started"
            # run is inside its first step, far from its select: the signal must be kept for it.
            decided = await env.ingress.post("/Approval/exp-5/decide", json={"approved": True, "approver": "grace"})
            assert decided.status_code == 200, decided.text
            found = await env.admin.get("/objects/Approval/exp-5")
            promises = found.json()["promises"]
            assert [(p["name"], p["value"]) for p in promises] == [
                ("approval-decision", {"approved": True, "approver": "grace", "comment": ""})
            ]
            assert found.json()["lock_holder"] == invocation_id
        finally:
            slow.finish.set()
        result = await env.attach(invocation_id)
        assert result["status"] == "approved"
        assert env.now() == env.start, "no time passed: the decision was there when run asked for it"
        assert slow.calls == [("ask", "exp-5"), ("pay", "exp-5")]


async def test_a_second_decision_is_refused() -> None:
    async with TestEnvironment([approval]) as env:
        invocation_id = await env.send("Approval", "run", EXPENSE, key="exp-6")
        await env.call("Approval", "decide", {"approved": False, "approver": "grace"}, key="exp-6")
        with pytest.raises(InvocationFailed) as refused:
            await env.call("Approval", "decide", {"approved": True, "approver": "linus"}, key="exp-6")
        assert refused.value.status_code == 409
        assert (await env.attach(invocation_id))["status"] == "rejected"


async def test_submitting_an_expense_twice_runs_it_once(backoffice: Backoffice) -> None:
    async with TestEnvironment([approval]) as env:
        first = await env.ingress.post("/Approval/exp-7/run/send", json=EXPENSE)
        second = await env.ingress.post("/Approval/exp-7/run/send", json=EXPENSE)
        assert (first.status_code, first.json()["status"]) == (202, "Accepted")
        assert (second.status_code, second.json()["status"]) == (202, "PreviouslyAccepted")
        assert second.json()["invocationId"] == first.json()["invocationId"]
        await env.call("Approval", "decide", {"approved": True, "approver": "grace"}, key="exp-7")
        attached = await env.ingress.get("/restate/workflow/Approval/exp-7/attach")
        assert attached.status_code == 200
        assert attached.json()["status"] == "approved"
        assert backoffice.calls == [("ask", "exp-7"), ("pay", "exp-7")]


async def test_a_decision_that_does_not_fit_is_refused_before_anything_runs() -> None:
    async with TestEnvironment([approval]) as env:
        response = await env.ingress.post("/Approval/exp-8/decide", json={"approved": "maybe"})
        assert response.status_code == 400
        assert "invalid input for Approval/decide" in response.json()["message"]
        assert (await env.admin.get("/invocations")).json()["invocations"] == []
