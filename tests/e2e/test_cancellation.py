"""Cancel and kill, end to end through the testing kit.

Cancel: the handler raises ``InvocationCancelled`` at its next journaled action
or await of a durable future (complete or not), a ``cancel`` entry marks that point, and
its compensations run after it; the callees of its calls are cancelled too.
Kill: the invocation and its callees end at once with 409 "killed", and nothing
of theirs runs again.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

import pytest

from handler_sdk import Context, InvocationCancelled, Service, TerminalError
from handler_sdk.testing import InvocationFailed, TestEnvironment

REPLAY = pytest.mark.parametrize("always_replay", [False, True], ids=["live", "always-replay"])
MONTH = timedelta(days=30)

#: Side effects of the steps below, in the order they ran (a step runs once, replays do not repeat it).
effects: list[str] = []


@pytest.fixture(autouse=True)
def _reset_effects() -> None:
    effects.clear()


def effect(label: str) -> str:
    effects.append(label)
    return label


def kinds(found: dict[str, Any]) -> list[tuple[str, str]]:
    return [(entry["kind"], entry["name"]) for entry in found["journal"]]


holds = Service("Holds")


@holds.handler()
async def hold(ctx: Context, then: str) -> str:
    """Reserve, wait a month, confirm; a cancellation releases the reservation."""
    try:
        await ctx.run("reserve", effect, "reserve")
        await ctx.sleep(MONTH, name="hold")
        await ctx.run("confirm", effect, "confirm")
        return "confirmed"
    except InvocationCancelled:
        await ctx.run("release", effect, "release")
        if then == "return":
            return "released"
        raise
    finally:
        await ctx.run("audit", effect, "audit")


@holds.handler()
async def parent(ctx: Context) -> str:
    try:
        await ctx.run("parent-reserve", effect, "parent-reserve")
        return await ctx.call("Holds", "hold", "raise", type_hint=str, name="child")
    except TerminalError as exc:
        await ctx.run("parent-release", effect, f"parent-release after {exc.status_code}")
        raise


@holds.handler()
async def sender(ctx: Context) -> str:
    await ctx.send("Holds", "hold", "raise", name="fire-and-forget")
    await ctx.sleep(MONTH, name="own-hold")
    return "slept"


@holds.handler()
async def approval(ctx: Context) -> str:
    awakeable_id, decision = ctx.awakeable(type_hint=bool, name="approval")
    await ctx.run("hand-out", effect, awakeable_id)
    try:
        key, _ = await ctx.select("decide", decision=decision, timeout=ctx.timer(timedelta(days=7), name="deadline"))
    except InvocationCancelled:
        await ctx.run("withdraw", effect, "withdraw")
        return "withdrawn"
    return key


#: Set by ``slow_step`` once its step runs; the step then waits for ``gate["step"]``.
step_started: list[str] = []


async def wait_for_gate(label: str) -> str:
    step_started.append(label)
    await gate["step"].wait()
    return effect(label)


@holds.handler()
async def slow_step(ctx: Context) -> str:
    try:
        return await ctx.run("slow", wait_for_gate, "slow")
    finally:
        await ctx.run("cleanup", effect, "cleanup")


#: Holds ``gated_parent`` between its call and its await, while the test arranges the race.
gate: dict[str, asyncio.Event] = {}


@holds.handler()
async def gated_parent(ctx: Context) -> str:
    try:
        child = ctx.call("Holds", "hold", "raise", type_hint=str, name="child")
        await gate["open"].wait()  # not durable: the test holds this attempt here
        return await child
    except TerminalError as exc:
        await ctx.run("parent-release", effect, f"parent-release after {exc.status_code}")
        raise


async def started(env: TestEnvironment, handler: str, arg: Any = None) -> str:
    """Send an invocation and let it run until it waits (on a timer, a callee)."""
    invocation_id = await env.send("Holds", handler, arg)
    await env.settle()
    return invocation_id


@REPLAY
async def test_cancel_raises_in_the_sleep_and_the_compensation_runs_after_a_cancel_entry(always_replay: bool) -> None:
    async with TestEnvironment([holds], always_replay=always_replay) as env:
        invocation_id = await started(env, "hold", "raise")
        assert (await env.invocation(invocation_id))["status"] == "suspended"
        await env.cancel(invocation_id)
        with pytest.raises(InvocationFailed) as failed:
            await env.attach(invocation_id)
        assert (failed.value.status_code, failed.value.message) == (409, "cancelled")
        assert env.now() - env.start < MONTH  # raised at once, not when the sleep ended
        found = await env.invocation(invocation_id)
        assert found["status"] == "failed"
        assert found["failure"] == {"code": 409, "message": "cancelled"}
        assert kinds(found) == [
            ("run", "reserve"),
            ("sleep", "hold"),
            ("cancel", ""),
            ("run", "release"),
            ("run", "audit"),
        ]
        assert effects == ["reserve", "release", "audit"]


@REPLAY
async def test_a_handler_that_returns_after_compensating_completes(always_replay: bool) -> None:
    async with TestEnvironment([holds], always_replay=always_replay) as env:
        invocation_id = await started(env, "hold", "return")
        await env.cancel(invocation_id)
        assert await env.attach(invocation_id) == "released"
        found = await env.invocation(invocation_id)
        assert found["status"] == "completed"
        assert [kind for kind, _ in kinds(found)] == ["run", "sleep", "cancel", "run", "run"]
        assert effects == ["reserve", "release", "audit"]


@REPLAY
async def test_cancel_propagates_to_the_callee_which_compensates_too(always_replay: bool) -> None:
    async with TestEnvironment([holds], always_replay=always_replay) as env:
        parent_id = await started(env, "parent")
        parent_found = await env.invocation(parent_id)
        assert parent_found["status"] == "suspended"
        listed = (await env.admin.get("/invocations")).json()["invocations"]
        (child,) = [i for i in listed if i["parent_id"] == parent_id]
        assert child["status"] == "suspended"
        await env.cancel(parent_id)
        with pytest.raises(InvocationFailed) as failed:
            await env.attach(parent_id)
        assert (failed.value.status_code, failed.value.message) == (409, "cancelled")
        with pytest.raises(InvocationFailed) as child_failed:
            await env.attach(child["id"])
        assert (child_failed.value.status_code, child_failed.value.message) == (409, "cancelled")
        child_found = await env.invocation(child["id"])
        assert kinds(child_found) == [
            ("run", "reserve"),
            ("sleep", "hold"),
            ("cancel", ""),
            ("run", "release"),
            ("run", "audit"),
        ]
        parent_found = await env.invocation(parent_id)
        parent_kinds = [kind for kind, _ in kinds(parent_found)]
        assert parent_kinds[:2] == ["run", "call"]
        assert parent_kinds[-1] == "run" and parent_found["journal"][-1]["name"] == "parent-release"
        assert env.now() - env.start < MONTH
        assert sorted(effects) == sorted(["parent-reserve", "reserve", "release", "audit", "parent-release after 409"])


@REPLAY
async def test_kill_ends_the_invocation_and_its_callee_without_compensation(always_replay: bool) -> None:
    async with TestEnvironment([holds], always_replay=always_replay) as env:
        parent_id = await started(env, "parent")
        listed = (await env.admin.get("/invocations")).json()["invocations"]
        (child,) = [i for i in listed if i["parent_id"] == parent_id]
        before = {i: kinds(await env.invocation(i)) for i in (parent_id, child["id"])}
        await env.kill(parent_id)
        for invocation_id in (parent_id, child["id"]):
            with pytest.raises(InvocationFailed) as failed:
                await env.attach(invocation_id)
            assert (failed.value.status_code, failed.value.message) == (409, "killed")
        await env.advance(2 * MONTH)  # nothing of theirs runs again, not even when the child's timer was due
        for invocation_id in (parent_id, child["id"]):
            found = await env.invocation(invocation_id)
            assert found["status"] == "failed"
            assert found["failure"] == {"code": 409, "message": "killed"}
            assert kinds(found) == before[invocation_id]
            assert "cancel" not in [kind for kind, _ in kinds(found)]
        assert effects == ["parent-reserve", "reserve"]


async def test_cancel_or_kill_of_an_ended_invocation_is_a_409() -> None:
    async with TestEnvironment([holds]) as env:
        invocation_id = await started(env, "hold", "return")
        await env.advance(MONTH)
        assert await env.attach(invocation_id) == "confirmed"
        for method, path in (
            ("PATCH", f"/invocations/{invocation_id}/cancel"),
            ("PATCH", f"/invocations/{invocation_id}/kill"),
            ("DELETE", f"/invocations/{invocation_id}"),
            ("DELETE", f"/invocations/{invocation_id}?mode=kill"),
        ):
            response = await env.admin.request(method, path)
            assert response.status_code == 409, (method, path, response.text)
            assert response.json()["code"] == "already_ended"
            assert invocation_id in response.json()["message"]
        with pytest.raises(RuntimeError, match="already ended"):
            await env.cancel(invocation_id)
        found = await env.invocation(invocation_id)
        assert found["status"] == "completed" and found["cancel_requested"] is False


async def test_cancel_or_kill_of_an_unknown_invocation_is_a_404() -> None:
    async with TestEnvironment([holds]) as env:
        unknown = "inv_00000000000000000000000000"
        for method, path in (
            ("PATCH", f"/invocations/{unknown}/cancel"),
            ("POST", f"/invocations/{unknown}/kill"),
            ("DELETE", f"/invocations/{unknown}"),
            ("PATCH", "/invocations/not-an-id/cancel"),
        ):
            response = await env.admin.request(method, path)
            assert response.status_code == 404, (method, path, response.text)
            assert response.json()["code"] == "invocation_not_found"


async def test_an_unknown_stop_mode_is_a_400() -> None:
    async with TestEnvironment([holds]) as env:
        invocation_id = await started(env, "hold", "raise")
        for method, path in (
            ("PATCH", f"/invocations/{invocation_id}/pause"),
            ("DELETE", f"/invocations/{invocation_id}?mode=later"),
        ):
            response = await env.admin.request(method, path)
            assert response.status_code == 400, (method, path, response.text)
        assert (await env.invocation(invocation_id))["status"] == "suspended"


async def test_cancelling_an_invocation_that_has_not_started_ends_it_without_running() -> None:
    async with TestEnvironment([holds]) as env:
        invocation_id = await env.send("Holds", "hold", "raise", delay=timedelta(hours=1))
        assert (await env.invocation(invocation_id))["status"] == "scheduled"
        await env.cancel(invocation_id)
        with pytest.raises(InvocationFailed) as failed:
            await env.attach(invocation_id)
        assert (failed.value.status_code, failed.value.message) == (409, "cancelled")
        await env.advance(timedelta(hours=2))
        found = await env.invocation(invocation_id)
        assert found["journal"] == [] and found["attempts"] == []
        assert effects == []


async def test_a_second_cancel_is_accepted_and_compensates_once() -> None:
    async with TestEnvironment([holds]) as env:
        invocation_id = await started(env, "hold", "raise")
        await env.cancel(invocation_id)
        response = await env.admin.patch(f"/invocations/{invocation_id}/cancel")
        assert response.status_code == 202, response.text
        with pytest.raises(InvocationFailed):
            await env.attach(invocation_id)
        found = await env.invocation(invocation_id)
        assert [kind for kind, _ in kinds(found)].count("cancel") == 1
        assert effects == ["reserve", "release", "audit"]


async def poll(env: TestEnvironment, invocation_id: str, status: str, timeout_s: float = 5.0) -> dict[str, Any]:
    """The invocation once it has ``status`` (a deadline poll: the kit's settle would wait for the held attempt)."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = await env.invocation(invocation_id)
        if found["status"] == status:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{invocation_id} never became {status}: {found}")
        await asyncio.sleep(0.001)


async def test_killing_a_callee_fails_the_callers_call_with_409_killed() -> None:
    async with TestEnvironment([holds]) as env:
        parent_id = await started(env, "parent")
        listed = (await env.admin.get("/invocations")).json()["invocations"]
        (child,) = [i for i in listed if i["parent_id"] == parent_id]
        await env.kill(child["id"])
        # The caller is not killed: it gets the callee's end as a TerminalError and compensates.
        with pytest.raises(InvocationFailed) as failed:
            await env.attach(parent_id)
        assert (failed.value.status_code, failed.value.message) == (409, "killed")
        found = await env.invocation(parent_id)
        assert found["journal"][1]["failure"] == {"code": 409, "message": "killed"}
        assert "cancel" not in [kind for kind, _ in kinds(found)]
        assert effects == ["parent-reserve", "reserve", "parent-release after 409"]


async def test_cancel_does_not_follow_sends() -> None:
    async with TestEnvironment([holds]) as env:
        sender_id = await started(env, "sender")
        listed = (await env.admin.get("/invocations")).json()["invocations"]
        (sent,) = [i for i in listed if i["parent_id"] == sender_id]
        assert sent["status"] == "suspended"
        await env.cancel(sender_id)
        with pytest.raises(InvocationFailed) as failed:
            await env.attach(sender_id)
        assert failed.value.status_code == 409
        assert (await env.invocation(sent["id"]))["status"] == "suspended"  # not the sender's to cancel
        assert await env.attach(sent["id"]) == "confirmed"
        assert effects == ["reserve", "confirm", "audit"]


@REPLAY
async def test_cancel_raises_in_a_select_at_the_select(always_replay: bool) -> None:
    async with TestEnvironment([holds], always_replay=always_replay) as env:
        invocation_id = await started(env, "approval")
        await env.cancel(invocation_id)
        assert await env.attach(invocation_id) == "withdrawn"
        found = await env.invocation(invocation_id)
        assert kinds(found) == [
            ("awakeable", "approval"),
            ("run", "hand-out"),
            ("sleep", "deadline"),
            ("cancel", ""),
            ("run", "withdraw"),
        ]
        assert env.now() - env.start < timedelta(days=7)
        # The awakeable handed out before the cancellation is still addressable, but nobody waits for it.
        late = await env.ingress.post(f"/restate/awakeables/{effects[0]}/resolve", json=True)
        assert late.status_code == 202, late.text
        assert (await env.invocation(invocation_id))["output"] == "withdrawn"


async def test_kill_stops_a_running_attempt_and_nothing_more_is_journaled() -> None:
    gate["step"] = asyncio.Event()
    step_started.clear()
    async with TestEnvironment([holds]) as env:
        invocation_id = await env.send("Holds", "slow_step")
        deadline = time.monotonic() + 5
        while not step_started:
            assert time.monotonic() < deadline, "the step never started"
            await asyncio.sleep(0.001)
        assert (await env.invocation(invocation_id))["status"] == "running"
        await env.kill(invocation_id)
        with pytest.raises(InvocationFailed) as failed:
            await env.attach(invocation_id)
        assert (failed.value.status_code, failed.value.message) == (409, "killed")
        gate["step"].set()
        await env.settle()
        found = await env.invocation(invocation_id)
        assert found["journal"] == []
        assert [a["outcome"] for a in found["attempts"]] == ["killed"]
        assert effects == []  # neither the step's result nor the finally block's cleanup


async def test_the_caller_compensates_even_when_the_cancelled_callee_ends_first() -> None:
    gate["open"] = asyncio.Event()
    async with TestEnvironment([holds]) as env:
        parent_id = await env.send("Holds", "gated_parent")
        child_id = ""
        deadline = time.monotonic() + 5
        while not child_id:
            listed = (await env.admin.get("/invocations")).json()["invocations"]
            child_id = next((i["id"] for i in listed if i["parent_id"] == parent_id), "")
            assert time.monotonic() < deadline, "the callee never started"
            await asyncio.sleep(0.001)
        await poll(env, child_id, "suspended")  # the callee sleeps its month
        assert (await env.invocation(parent_id))["status"] == "running"  # held at the gate
        await env.cancel(parent_id)
        await poll(env, child_id, "failed")  # the callee compensated and ended 409 before the caller looked
        gate["open"].set()
        with pytest.raises(InvocationFailed) as failed:
            await env.attach(parent_id)
        assert failed.value.status_code == 409
        assert "reserve" in effects and "release" in effects  # the callee's own compensation ran
        found = await env.invocation(parent_id)
        # Raised at the await of the call (index 0), although the call was complete by then.
        assert kinds(found) == [("call", "child"), ("cancel", ""), ("run", "parent-release")]
        assert found["journal"][1]["entry"] == {"kind": "cancel", "awaiting": [0]}
        assert "parent-release after 409" in effects
