"""The retry policy counts consecutive failed attempts: suspensions in between do not use up the budget."""

from __future__ import annotations

from datetime import timedelta

from handler_sdk import Context, Service
from handler_sdk.testing import TestEnvironment

svc = Service("Sleepy")
failures = {"left": 0}


@svc.handler()
async def many_naps(ctx: Context, naps: int) -> str:
    for i in range(naps):
        await ctx.sleep(timedelta(seconds=1), name=f"nap-{i}")
    if failures["left"]:
        failures["left"] -= 1
        raise RuntimeError("transient")
    return "rested"


async def test_suspensions_do_not_count_against_the_retry_budget() -> None:
    failures["left"] = 2
    async with TestEnvironment([svc], retry_max_attempts=3, on_max_attempts="fail") as env:
        assert await env.call("Sleepy", "many_naps", 6) == "rested"
        listed = (await env.admin.get("/invocations")).json()["invocations"]
        found = await env.invocation(listed[0]["id"])
        outcomes = [a["outcome"] for a in found["attempts"]]
        assert outcomes == ["suspended"] * 6 + ["retry", "retry", "completed"]


async def test_consecutive_failures_still_use_up_the_budget() -> None:
    failures["left"] = 5
    async with TestEnvironment([svc], retry_max_attempts=3, on_max_attempts="fail") as env:
        invocation_id = await env.send("Sleepy", "many_naps", 2)
        try:
            await env.attach(invocation_id)
        except Exception as exc:
            assert "gave up after 3 attempts" in str(exc)
        else:
            raise AssertionError("the invocation should have failed")
        outcomes = [a["outcome"] for a in (await env.invocation(invocation_id))["attempts"]]
        assert outcomes == ["suspended", "suspended", "retry", "retry", "failed"]
