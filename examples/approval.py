"""An expense approval as a workflow: ask an approver, wait up to 7 days for
the decision, then pay the expense or tell the employee it was rejected.

Each expense is one workflow key, and its ``run`` executes once per key,
however often it is submitted. The decision arrives through the shared
handler ``decide``, which resolves the durable promise ``run`` waits on; a
decision that comes before ``run`` waits for it is kept. ``status`` answers
queries at any time, while ``run`` waits or after it ended. Nobody deciding
within 7 days rejects the expense automatically: the wait is a durable timer,
so it holds nothing and survives restarts.

Run it beside the proxy::

    uvicorn examples.approval:app --port 9081
    durable-proxy register http://127.0.0.1:9081

    # submit (once per key; a second submission attaches to the first)
    curl localhost:8080/Approval/exp-42/run/send --json '{"employee": "ada", "amount_cents": 120000,
        "description": "conference ticket"}'
    # query
    curl -X POST localhost:8080/Approval/exp-42/status
    # signal
    curl localhost:8080/Approval/exp-42/decide --json '{"approved": true, "approver": "grace"}'
    # attach: wait for the run's result
    curl localhost:8080/restate/workflow/Approval/exp-42/attach
"""

from __future__ import annotations

from datetime import timedelta

import msgspec

from handler_sdk import Endpoint, Workflow, WorkflowContext, WorkflowSharedContext, current_step

#: How long an approver has to decide before the expense is rejected automatically.
APPROVAL_TIMEOUT = timedelta(days=7)
#: The durable promise ``decide`` resolves and ``run`` waits on.
DECISION = "approval-decision"


class Expense(msgspec.Struct, frozen=True):
    employee: str
    amount_cents: int
    description: str = ""


class Decision(msgspec.Struct, frozen=True):
    approved: bool
    approver: str
    comment: str = ""


class ApprovalResult(msgspec.Struct, frozen=True):
    status: str  # approved | rejected | auto-rejected
    approver: str | None = None
    payout_id: str | None = None
    reason: str | None = None


class Backoffice:
    """The outside world of this example: replace with your chat, payroll and mail integrations.

    Each operation is keyed by the step's idempotency key, as a real API would
    be, and every physical call is logged in ``calls``.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []  # (operation, expense key), one per execution
        self.requests: dict[str, str] = {}
        self.payouts: dict[str, str] = {}
        self.rejections: dict[str, str] = {}

    def ask_for_approval(self, idempotency_key: str, key: str, expense: Expense) -> None:
        self.calls.append(("ask", key))
        self.requests.setdefault(idempotency_key, key)

    def pay(self, idempotency_key: str, key: str, expense: Expense) -> str:
        self.calls.append(("pay", key))
        return self.payouts.setdefault(idempotency_key, f"po_{key}_{expense.amount_cents}")

    def notify_rejection(self, idempotency_key: str, key: str, reason: str) -> None:
        self.calls.append(("notify-rejection", key))
        self.rejections.setdefault(idempotency_key, reason)


backoffice = Backoffice()


def ask_for_approval(key: str, expense: Expense) -> None:
    backoffice.ask_for_approval(current_step().idempotency_key, key, expense)


def pay(key: str, expense: Expense) -> str:
    return backoffice.pay(current_step().idempotency_key, key, expense)


def notify_rejection(key: str, reason: str) -> None:
    backoffice.notify_rejection(current_step().idempotency_key, key, reason)


approval = Workflow("Approval")


@approval.main()
async def run(ctx: WorkflowContext, expense: Expense) -> ApprovalResult:
    key = ctx.key()
    ctx.set("status", "waiting")
    await ctx.run("ask-for-approval", ask_for_approval, key, expense)
    winner, decision = await ctx.select(
        decision=ctx.promise(DECISION, type_hint=Decision).value(),
        timeout=ctx.timer(APPROVAL_TIMEOUT),
    )
    if winner == "decision" and decision.approved:
        payout_id = await ctx.run("pay", pay, key, expense)
        ctx.set("status", "approved")
        return ApprovalResult(status="approved", approver=decision.approver, payout_id=payout_id)
    if winner == "decision":
        status, approver = "rejected", decision.approver
        reason = decision.comment or f"rejected by {decision.approver}"
    else:
        status, approver = "auto-rejected", None
        reason = f"no decision within {APPROVAL_TIMEOUT.days} days"
    await ctx.run("notify-rejection", notify_rejection, key, reason)
    ctx.set("status", status)
    return ApprovalResult(status=status, approver=approver, reason=reason)


@approval.handler()
async def decide(ctx: WorkflowSharedContext, decision: Decision) -> None:
    """Record the decision; a second one fails with 409 (the promise is completed once)."""
    await ctx.promise(DECISION, type_hint=Decision).resolve(decision)


@approval.handler()
async def status(ctx: WorkflowSharedContext) -> str:
    """Where the expense stands: waiting, approved, rejected, auto-rejected (unknown before it started)."""
    return await ctx.get("status", type_hint=str) or "unknown"


app = Endpoint([approval]).asgi()
