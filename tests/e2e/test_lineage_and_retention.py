"""Calls carry the caller's trace context; finished workflows are purged after their retention."""

from __future__ import annotations

from datetime import timedelta

from handler_sdk import Context, Service, Workflow, WorkflowContext, WorkflowSharedContext
from handler_sdk.testing import TestEnvironment

from .harness import eventually

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

tracing = Service("Tracing")


@tracing.handler()
async def outer(ctx: Context) -> dict[str, str]:
    inner_headers = await ctx.call("Tracing", "inner", type_hint=dict[str, str])
    return {"outer": ctx.headers.get("traceparent", ""), "inner": inner_headers.get("traceparent", "")}


@tracing.handler()
async def inner(ctx: Context) -> dict[str, str]:
    return ctx.headers


async def test_a_callee_inherits_the_trace_context_but_not_the_credentials() -> None:
    async with TestEnvironment([tracing]) as env:
        response = await env.ingress.post(
            "/Tracing/outer", headers={"traceparent": TRACEPARENT, "authorization": "Bearer secret"}
        )
        assert response.status_code == 200, response.text
        assert response.json() == {"outer": TRACEPARENT, "inner": TRACEPARENT}
        outer_id = response.headers["x-restate-id"]
        listed = (await env.admin.get("/invocations")).json()["invocations"]
        callee = next(i for i in listed if i["handler"] == "inner")
        assert callee["parent_id"] == outer_id and callee["parent_index"] == 0
        found = await env.invocation(outer_id)
        assert "secret" not in str(found), "credentials are never stored"


signup = Workflow("Signup")


@signup.main()
async def run(ctx: WorkflowContext, user: str) -> str:
    ctx.set("user", user)
    return f"welcome {user}"


@signup.handler()
async def who(ctx: WorkflowSharedContext) -> str:
    return await ctx.get("user", type_hint=str) or ""


async def test_a_finished_workflow_is_kept_for_its_retention_then_purged() -> None:
    async with TestEnvironment([signup]) as env:
        assert await env.call("Signup", "run", "ada", key="k1") == "welcome ada"
        retention = timedelta(milliseconds=env.runtime.settings.workflow_retention_ms)

        await env.advance(retention - timedelta(minutes=2))
        assert await env.runtime.purge() == 0
        kept = await env.ingress.get("/restate/workflow/Signup/k1/output")
        assert kept.status_code == 200 and kept.json() == "welcome ada"
        assert (await env.admin.get("/objects/Signup/k1")).json()["state"] == {"user": "ada"}

        # The proxy purges in the background, every purge interval of its clock.
        await env.advance(timedelta(minutes=3))
        await eventually(lambda: _status(env, "/restate/workflow/Signup/k1/output", 404))
        assert (await env.admin.get("/objects/Signup/k1")).json()["state"] == {}
        # The key is free again: a new run starts.
        assert await env.call("Signup", "run", "bo", key="k1") == "welcome bo"


async def _status(env: TestEnvironment, path: str, expected: int) -> bool:
    return (await env.ingress.get(path)).status_code == expected
