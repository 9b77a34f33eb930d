"""Virtual objects and workflows against the real proxy in a ``TestEnvironment``, with and without always-replay."""

from datetime import timedelta
from typing import Any

import pytest

from handler_sdk import (
    ObjectContext,
    ObjectSharedContext,
    TerminalError,
    VirtualObject,
    Workflow,
    WorkflowContext,
    WorkflowSharedContext,
)
from handler_sdk.testing import TestEnvironment

cart = VirtualObject("Cart")
#: How often the step of ``add`` really ran, by item.
step_runs: dict[str, int] = {}


@pytest.fixture(autouse=True)
def _reset() -> None:
    step_runs.clear()


def count(item: str) -> None:
    step_runs[item] = step_runs.get(item, 0) + 1


@cart.handler()
async def add(ctx: ObjectContext, item: str) -> list[str]:
    items = await ctx.get("items", type_hint=list[str]) or []
    items.append(item)
    ctx.set("items", items)
    await ctx.run("count", count, item)
    await ctx.sleep(timedelta(minutes=1))
    return items


@cart.handler()
async def empty(ctx: ObjectContext) -> list[str]:
    ctx.clear_all()
    return await ctx.state_keys()


@cart.handler(kind="shared")
async def items(ctx: ObjectSharedContext) -> list[str]:
    return await ctx.get("items", type_hint=list[str]) or []


approval = Workflow("Approval")


@approval.main()
async def run(ctx: WorkflowContext, amount: int) -> str:
    ctx.set("status", "waiting")
    key, approved = await ctx.select(
        decision=ctx.promise("decision", type_hint=bool).value(), timeout=ctx.timer(timedelta(days=7))
    )
    outcome = "timed out" if key == "timeout" else ("approved" if approved else "denied")
    ctx.set("status", outcome)
    return f"{amount}: {outcome}"


@approval.handler()
async def decide(ctx: WorkflowSharedContext, approved: bool) -> str:
    try:
        await ctx.promise("decision").resolve(approved)
    except TerminalError as exc:
        return f"{exc.status_code}"
    return "decided"


@approval.handler()
async def status(ctx: WorkflowSharedContext) -> list[Any]:
    return [await ctx.get("status"), await ctx.promise("decision", type_hint=bool).peek()]


@pytest.mark.parametrize("always_replay", [False, True], ids=["normal", "always-replay"])
async def test_object_state_survives_invocations(always_replay: bool) -> None:
    async with TestEnvironment([cart], always_replay=always_replay) as env:
        assert await env.call("Cart", "add", "apple", key="c1") == ["apple"]
        assert await env.call("Cart", "add", "pear", key="c1") == ["apple", "pear"]
        assert await env.call("Cart", "add", "fig", key="c2") == ["fig"]
        assert await env.call("Cart", "items", key="c1") == ["apple", "pear"]
        assert await env.call("Cart", "empty", key="c1") == []
        assert await env.call("Cart", "items", key="c1") == []
        assert await env.call("Cart", "items", key="c2") == ["fig"]
    assert step_runs == {"apple": 1, "pear": 1, "fig": 1}


@pytest.mark.parametrize("always_replay", [False, True], ids=["normal", "always-replay"])
async def test_workflow_waits_for_its_promise(always_replay: bool) -> None:
    async with TestEnvironment([approval], always_replay=always_replay) as env:
        invocation_id = await env.send("Approval", "run", 120, key="exp-1")
        await env.settle()
        assert await env.call("Approval", "status", key="exp-1") == ["waiting", None]
        assert await env.call("Approval", "decide", True, key="exp-1") == "decided"
        assert await env.call("Approval", "decide", False, key="exp-1") == "409"
        assert await env.attach(invocation_id) == "120: approved"
        assert await env.call("Approval", "status", key="exp-1") == ["approved", True]


async def test_workflow_times_out() -> None:
    async with TestEnvironment([approval]) as env:
        assert await env.call("Approval", "run", 7, key="exp-2") == "7: timed out"
        assert env.now() - env.start >= timedelta(days=7)
