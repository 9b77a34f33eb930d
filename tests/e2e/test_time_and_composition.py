"""Durable time, awakeables, calls and sends, and determinism, through the testing kit.

Every test runs the real proxy and the handlers in one process on the kit's
manual clock (``handler_sdk.testing.TestEnvironment``): a 30-day sleep returns
at once, and ``always_replay=True`` replays every step before the next one
runs, which is where a handler that is not replay-safe shows itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from handler_sdk import Context, Endpoint, Service, TerminalError
from handler_sdk.protocol import callee_invocation_id
from handler_sdk.testing import InvocationFailed, TestEnvironment

from .harness import HANDLER_URI, _Forward, eventually, open_runtime

REPLAY = pytest.mark.parametrize("always_replay", [False, True], ids=["live", "always-replay"])
DAY = timedelta(days=1)


def ms(when: datetime) -> int:
    return round(when.timestamp() * 1000)


def kinds(found: dict[str, Any]) -> list[tuple[str, str]]:
    return [(entry["kind"], entry["name"]) for entry in found["journal"]]


async def wait_until(check: Any, timeout_s: float = 5.0) -> None:
    """Poll ``check`` (sync) until it is true, or fail after the deadline (real time, not the kit's)."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.001)


# --------------------------------------------------------------------------- services

timing = Service("Timing")


@timing.handler()
async def nap(ctx: Context, days: int) -> str:
    await ctx.sleep(timedelta(days=days), name="nap")
    woke = await ctx.now("woke")
    return woke.isoformat()


#: What ``ordered_nap`` records, one line per invocation, in the order their sleeps ended.
woken_order: list[str] = []


def record_wake(label: str) -> None:
    woken_order.append(label)


@timing.handler()
async def ordered_nap(ctx: Context, hours: int) -> int:
    await ctx.sleep(timedelta(hours=hours))
    await ctx.run("record", record_wake, f"{hours}h")
    return hours


@pytest.fixture(autouse=True)
def _reset_module_state() -> None:
    woken_order.clear()
    handed_out.clear()
    attempts_seen["n"] = 0
    observed.clear()


approvals = Service("Approvals")
#: Awakeable ids handed out by the handlers, as a real one would e-mail them to an approver.
handed_out: list[str] = []


def hand_out(awakeable_id: str) -> None:
    handed_out.append(awakeable_id)


@approvals.handler()
async def request_approval(ctx: Context, delay_days: int) -> str:
    awakeable_id, decision = ctx.awakeable(type_hint=bool, name="approval")
    await ctx.run("send-approval-request", hand_out, awakeable_id)
    if delay_days:
        await ctx.sleep(timedelta(days=delay_days), name="busy")
    key, value = await ctx.select("decide", decision=decision, timeout=ctx.timer(timedelta(days=7), name="deadline"))
    if key == "timeout":
        return "auto-rejected"
    return "approved" if value else "rejected"


@approvals.handler()
async def race_then_sleep(ctx: Context) -> str:
    deadline = ctx.timer(timedelta(days=7), name="deadline")  # index 0: created before the awakeable
    awakeable_id, decision = ctx.awakeable(type_hint=bool, name="approval")  # index 1
    await ctx.run("send-approval-request", hand_out, awakeable_id)
    key, _ = await ctx.select("decide", timeout=deadline, decision=decision)
    # Replayed after the deadline has fired too: both are complete then, and the journal decides.
    await ctx.sleep(timedelta(days=10), name="cool-off")
    return "approved" if key == "decision" else "auto-rejected"


@approvals.handler()
async def wait_for_signal(ctx: Context) -> str:
    awakeable_id, signal = ctx.awakeable(type_hint=str)
    await ctx.run("hand-out", hand_out, awakeable_id)
    try:
        return f"resolved: {await signal}"
    except TerminalError as exc:
        return f"rejected {exc.status_code}: {exc.message}"


# --------------------------------------------------------------------------- durable sleeps


@REPLAY
async def test_a_thirty_day_sleep_returns_at_once_in_test_time(always_replay: bool) -> None:
    async with TestEnvironment([timing], always_replay=always_replay) as env:
        started = time.monotonic()
        invocation_id = await env.send("Timing", "nap", 30)
        woke = datetime.fromisoformat(await env.attach(invocation_id))
        assert time.monotonic() - started < 2.0
        assert env.now() - env.start >= timedelta(days=30)
        assert woke - env.start >= timedelta(days=30)
        found = await env.invocation(invocation_id)
        assert found["status"] == "completed"
        assert kinds(found) == [("sleep", "nap"), ("now", "woke")]
        sleep = found["journal"][0]
        assert sleep["completed"] is True
        assert sleep["entry"]["wake_at_ms"] == ms(env.start + timedelta(days=30))
        # The timer fired at its due time, never before.
        assert sleep["completed_at_ms"] >= sleep["entry"]["wake_at_ms"]


@REPLAY
async def test_sleeps_of_several_invocations_end_in_due_order(always_replay: bool) -> None:
    async with TestEnvironment([timing], always_replay=always_replay) as env:
        ids = {hours: await env.send("Timing", "ordered_nap", hours) for hours in (72, 1, 30, 5)}
        # Attaching to the longest skips time timer by timer; the others end on the way.
        assert await env.attach(ids[72]) == 72
        for hours, invocation_id in ids.items():
            assert await env.attach(invocation_id) == hours
        assert woken_order == ["1h", "5h", "30h", "72h"]
        ended = {hours: (await env.invocation(i))["completed_at_ms"] for hours, i in ids.items()}
        for hours, completed_at_ms in ended.items():
            assert completed_at_ms >= ms(env.start + timedelta(hours=hours))
        assert sorted(ended, key=lambda hours: ended[hours]) == [1, 5, 30, 72]


# --------------------------------------------------------------------------- awakeables and select


@REPLAY
async def test_an_approval_before_the_timeout_wins(always_replay: bool) -> None:
    async with TestEnvironment([approvals], always_replay=always_replay) as env:
        invocation_id = await env.send("Approvals", "request_approval", 0)
        await env.settle()  # suspended in the select, the request handed out
        assert len(handed_out) == 1
        await env.resolve_awakeable(handed_out[0], True)
        assert await env.attach(invocation_id) == "approved"
        assert env.now() - env.start < timedelta(days=7)
        found = await env.invocation(invocation_id)
        selects = [entry for entry in found["journal"] if entry["kind"] == "select"]
        assert len(selects) == 1
        assert selects[0]["entry"]["winner"] == 0  # the awakeable's index
        assert handed_out[0].endswith("_0") and invocation_id.removeprefix("inv_") in handed_out[0]


@REPLAY
async def test_no_approval_is_rejected_automatically_after_seven_days(always_replay: bool) -> None:
    async with TestEnvironment([approvals], always_replay=always_replay) as env:
        invocation_id = await env.send("Approvals", "request_approval", 0)
        assert await env.attach(invocation_id) == "auto-rejected"
        assert env.now() - env.start >= timedelta(days=7)
        found = await env.invocation(invocation_id)
        assert kinds(found) == [
            ("awakeable", "approval"),
            ("run", "send-approval-request"),
            ("sleep", "deadline"),
            ("select", "decide"),
        ]
        assert found["journal"][3]["entry"]["winner"] == 2
        assert found["journal"][0]["completed"] is False
        # A late approval finds the awakeable still open, but the handler has already decided.
        await env.resolve_awakeable(handed_out[0], True)
        assert (await env.invocation(invocation_id))["output"] == "auto-rejected"


@REPLAY
async def test_an_approval_that_arrives_before_the_handler_awaits_it_is_kept(always_replay: bool) -> None:
    async with TestEnvironment([approvals], always_replay=always_replay) as env:
        invocation_id = await env.send("Approvals", "request_approval", 1)
        await env.settle()  # the handler sleeps one day before it awaits the decision
        assert len(handed_out) == 1
        before = await env.invocation(invocation_id)
        assert before["status"] == "suspended"
        assert [kind for kind, _ in kinds(before)] == ["awakeable", "run", "sleep"]
        await env.resolve_awakeable(handed_out[0], True)
        assert await env.attach(invocation_id) == "approved"
        assert timedelta(days=1) <= env.now() - env.start < timedelta(days=7)
        found = await env.invocation(invocation_id)
        selects = [entry for entry in found["journal"] if entry["kind"] == "select"]
        assert len(selects) == 1
        assert selects[0]["entry"]["winner"] == 0
        # Once decided, the 7-day deadline changes nothing.
        await env.advance(timedelta(days=10))
        assert len([e for e in (await env.invocation(invocation_id))["journal"] if e["kind"] == "select"]) == 1


@REPLAY
async def test_a_replay_obeys_the_recorded_winner_when_both_have_completed_since(always_replay: bool) -> None:
    async with TestEnvironment([approvals], always_replay=always_replay) as env:
        invocation_id = await env.send("Approvals", "race_then_sleep")
        await env.settle()
        await env.resolve_awakeable(handed_out[0], True)
        assert await env.attach(invocation_id) == "approved"
        assert env.now() - env.start >= timedelta(days=10)
        found = await env.invocation(invocation_id)
        assert kinds(found) == [
            ("sleep", "deadline"),
            ("awakeable", "approval"),
            ("run", "send-approval-request"),
            ("select", "decide"),
            ("sleep", "cool-off"),
        ]
        # The deadline fired while the handler slept: on the last replay both were complete, and the
        # earlier one (index 0) would win a fresh race; the recorded winner, index 1, held.
        assert found["journal"][0]["completed"] is True
        assert found["journal"][3]["entry"]["winner"] == 1
        assert len(found["attempts"]) >= 2


@REPLAY
async def test_a_rejected_approval_wins_the_select_and_raises_its_terminal_error(always_replay: bool) -> None:
    async with TestEnvironment([approvals], always_replay=always_replay) as env:
        invocation_id = await env.send("Approvals", "request_approval", 0)
        await env.settle()
        await env.reject_awakeable(handed_out[0], "approver is on leave")
        with pytest.raises(InvocationFailed) as failed:
            await env.attach(invocation_id)
        assert (failed.value.status_code, failed.value.message) == (500, "approver is on leave")
        found = await env.invocation(invocation_id)
        assert [entry["entry"]["winner"] for entry in found["journal"] if entry["kind"] == "select"] == [0]


class HoldFirstAppend:
    """In front of the proxy's callbacks: holds the attempt's first journal append until ``release`` is set
    (at most ``limit_s``), so a test sees what the handler does before that entry is committed."""

    def __init__(self, target: ASGIApp, limit_s: float = 0.2) -> None:
        self.target = target
        self.limit_s = limit_s
        self.release = asyncio.Event()
        self.held = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].endswith("/journal") and not self.held:
            self.held = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.release.wait(), self.limit_s)
        await self.target(scope, receive, send)


outside = Service("Outside")
#: The outside world of ``publish_ids``: a client of the ingress, what it got back, and the held append.
world: dict[str, Any] = {}


async def publish(awakeable_id: str, callee_id: str) -> list[int]:
    """Hand the ids to an outside world that uses them at once: it resolves the awakeable, polls the callee."""
    client: httpx.AsyncClient = world["ingress"]
    resolved = await client.post(f"/restate/awakeables/{awakeable_id}/resolve", json="from outside")
    output = await client.get(f"/restate/output/{callee_id}")
    world["statuses"] = [resolved.status_code, output.status_code]
    world["hold"].release.set()
    return world["statuses"]  # type: ignore[no-any-return]


@outside.handler()
async def echo(ctx: Context, text: str) -> str:
    return text


@outside.handler()
async def publish_ids(ctx: Context) -> str:
    awakeable_id, value = ctx.awakeable(type_hint=str)
    callee = ctx.call("Outside", "echo", "hi", type_hint=str)
    await ctx.run("publish", publish, awakeable_id, callee.invocation_id)
    return f"{await value} / {await callee}"


async def test_ids_handed_out_by_a_step_are_valid_when_the_step_runs(tmp_path: Path) -> None:
    """The documented pattern: create an awakeable (or start a call), hand its id out from a ``ctx.run`` step.

    Whoever gets the id may use it at once; the step must not run before the entries those ids name
    are committed, or the proxy answers 404 and the resolution is lost.
    """
    forward = _Forward()
    world["hold"] = hold = HoldFirstAppend(forward)
    endpoint = Endpoint([outside], callback_transport=httpx.ASGITransport(app=hold), suspend_after=timedelta(0))
    async with open_runtime(tmp_path / "p.db", endpoint.asgi(), forward, retry_initial_interval_ms=5) as h:
        try:
            assert (await h.admin.post("/deployments", json={"uri": HANDLER_URI})).status_code == 201
            world["ingress"] = h.ingress
            sent = await h.ingress.post("/Outside/publish_ids/send")
            invocation_id = sent.json()["invocationId"]
            await eventually(lambda: "statuses" in world)
            resolved, output = world["statuses"]
            assert resolved == 202, "the awakeable was handed out before it existed"
            assert output in (200, 470), "the callee id was handed out before the callee existed"
            attached = await h.ingress.get(f"/restate/attach/{invocation_id}")
            assert attached.json() == "from outside / hi"
        finally:
            world.clear()
            await endpoint.aclose()


async def test_a_second_resolve_is_refused_with_409() -> None:
    async with TestEnvironment([approvals]) as env:
        invocation_id = await env.send("Approvals", "wait_for_signal")
        await env.settle()
        awakeable_id = handed_out[0]
        malformed = await env.ingress.post(f"/restate/awakeables/{awakeable_id}/resolve", content=b"{go")
        assert malformed.status_code == 400  # refused, and the awakeable stays open
        first = await env.ingress.post(f"/restate/awakeables/{awakeable_id}/resolve", json="go")
        assert first.status_code == 202
        for verb, body in (("resolve", b'"again"'), ("reject", b"too late")):
            again = await env.ingress.post(f"/restate/awakeables/{awakeable_id}/{verb}", content=body)
            assert again.status_code == 409
            assert again.json()["code"] == "already_completed"
            assert awakeable_id in again.json()["message"]
            assert "already resolved or rejected" in again.json()["message"]
        assert await env.attach(invocation_id) == "resolved: go"


async def test_unknown_and_malformed_awakeable_ids_are_404() -> None:
    async with TestEnvironment([approvals]) as env:
        invocation_id = await env.send("Approvals", "wait_for_signal")
        await env.settle()
        body = invocation_id.removeprefix("inv_")
        unknown = [
            "awk_nope_1",
            "nope",
            "awk_",
            "awk_nope_x",
            "awk__1",
            f"awk_{body}_1",  # index 1 of this invocation is a run step, not an awakeable
            f"awk_{body}_99",  # past the end of its journal
        ]
        for awakeable_id in unknown:
            for path in (f"/restate/awakeables/{awakeable_id}/resolve", f"/restate/a/{awakeable_id}/reject"):
                response = await env.ingress.post(path, json=True)
                assert response.status_code == 404, (path, response.text)
                assert response.json()["code"] in ("awakeable_not_found", "not_found"), response.text
        # The short form resolves the real one.
        real = await env.ingress.post(f"/restate/a/{handed_out[0]}/resolve", json="short")
        assert real.status_code == 202
        assert await env.attach(invocation_id) == "resolved: short"


@REPLAY
async def test_a_rejected_awakeable_raises_terminal_error_with_the_reason(always_replay: bool) -> None:
    async with TestEnvironment([approvals], always_replay=always_replay) as env:
        invocation_id = await env.send("Approvals", "wait_for_signal")
        await env.settle()
        await env.reject_awakeable(handed_out[0], "the approver said no")
        assert await env.attach(invocation_id) == "rejected 500: the approver said no"
        found = await env.invocation(invocation_id)
        assert found["journal"][0]["failure"] == {"code": 500, "message": "the approver said no"}


# --------------------------------------------------------------------------- calls and sends

workers = Service("Workers")
callers = Service("Callers")


@workers.handler()
async def square(ctx: Context, n: int) -> int:
    return await ctx.run("square", lambda: n * n)


@workers.handler()
async def refuse(ctx: Context, reason: str) -> int:
    raise TerminalError(f"refused: {reason}", status_code=418)


@workers.handler()
async def clock_in(ctx: Context, label: str) -> str:
    started = await ctx.now("started")
    return f"{label}@{started.isoformat()}"


@callers.handler()
async def call_square(ctx: Context, n: int) -> dict[str, Any]:
    by_name = ctx.call("Workers", "square", n, type_hint=int)
    by_function = ctx.service_call(square, n + 1)
    return {
        "results": [await by_name, await by_function],
        "callees": [by_name.invocation_id, by_function.invocation_id],
    }


@callers.handler()
async def call_unknown(ctx: Context) -> str:
    outcomes = []
    for service, handler, arg in (("Nowhere", "nothing", 1), ("Workers", "nothing", 1), ("Workers", "square", "7")):
        try:
            await ctx.call(service, handler, arg)
        except TerminalError as exc:
            outcomes.append(f"{exc.status_code}: {exc.message}")
    return " | ".join(outcomes)


@callers.handler()
async def call_refuse(ctx: Context) -> str:
    try:
        await ctx.service_call(refuse, "no thanks")
    except TerminalError as exc:
        return f"caught {exc.status_code}: {exc.message}"
    return "not refused"


@callers.handler()
async def call_refuse_uncaught(ctx: Context) -> int:
    return await ctx.service_call(refuse, "passed on")


@callers.handler()
async def gather_squares(ctx: Context, numbers: list[int]) -> list[int]:
    return await ctx.gather(*[ctx.service_call(square, n) for n in numbers])


@callers.handler()
async def gather_with_a_refusal(ctx: Context) -> str:
    calls = [ctx.service_call(square, 2), ctx.service_call(refuse, "first"), ctx.service_call(refuse, "second")]
    try:
        await ctx.gather(*calls)
    except TerminalError as exc:
        # Raised once all were complete: the last square is done too.
        return f"{exc.status_code}: {exc.message}; square done: {calls[0].done()}"
    return "no failure"


@callers.handler()
async def send_nowhere(ctx: Context) -> str:
    return await ctx.send("Nowhere", "nothing", 1)


@callers.handler()
async def send_clock_in(ctx: Context, delay_hours: int) -> dict[str, str]:
    sent_at = await ctx.now("sent-at")
    callee = await ctx.send("Workers", "clock_in", "sent", delay=timedelta(hours=delay_hours) if delay_hours else None)
    return {"callee": callee, "sent_at": sent_at.isoformat()}


@REPLAY
async def test_a_call_returns_the_callee_result_and_the_callee_is_its_own_invocation(always_replay: bool) -> None:
    async with TestEnvironment([workers, callers], always_replay=always_replay) as env:
        invocation_id = await env.send("Callers", "call_square", 7)
        result = await env.attach(invocation_id)
        assert result["results"] == [49, 64]
        found = await env.invocation(invocation_id)
        assert [kind for kind, _ in kinds(found)] == ["call", "call"]
        for index, callee_id in enumerate(result["callees"]):
            assert callee_id == callee_invocation_id(invocation_id, index)
            callee = await env.invocation(callee_id)
            assert callee["service"] == "Workers" and callee["handler"] == "square"
            assert callee["parent_id"] == invocation_id
            assert callee["parent_index"] == index
            assert callee["status"] == "completed"
            assert found["journal"][index]["result"] == callee["output"]


async def test_a_call_to_an_unknown_target_or_with_bad_input_fails_in_a_way_the_caller_can_catch() -> None:
    async with TestEnvironment([workers, callers]) as env:
        invocation_id = await env.send("Callers", "call_unknown")
        outcome = await env.attach(invocation_id)
        unknown_service, unknown_handler, bad_input = outcome.split(" | ")
        assert unknown_service.startswith("404: ") and "Nowhere" in unknown_service
        assert unknown_handler.startswith("404: ") and "nothing" in unknown_handler
        assert bad_input.startswith("400: ") and "Workers/square" in bad_input
        found = await env.invocation(invocation_id)
        assert [(entry["kind"], entry["failure"]["code"]) for entry in found["journal"]] == [
            ("call", 404),
            ("call", 404),
            ("call", 400),
        ]
        # No callee was started for any of them.
        listed = (await env.admin.get("/invocations")).json()["invocations"]
        assert [i["id"] for i in listed] == [invocation_id]


@REPLAY
async def test_a_callee_terminal_error_reaches_the_caller_with_its_status(always_replay: bool) -> None:
    async with TestEnvironment([workers, callers], always_replay=always_replay) as env:
        assert await env.call("Callers", "call_refuse") == "caught 418: refused: no thanks"
        with pytest.raises(InvocationFailed) as failed:
            await env.call("Callers", "call_refuse_uncaught")
        assert failed.value.status_code == 418
        assert failed.value.message == "refused: passed on"


@REPLAY
async def test_gather_over_several_calls(always_replay: bool) -> None:
    async with TestEnvironment([workers, callers], always_replay=always_replay) as env:
        invocation_id = await env.send("Callers", "gather_squares", [1, 2, 3, 4, 5])
        assert await env.attach(invocation_id) == [1, 4, 9, 16, 25]
        found = await env.invocation(invocation_id)
        assert [kind for kind, _ in kinds(found)] == ["call"] * 5
        listed = (await env.admin.get("/invocations", params={"limit": 100})).json()["invocations"]
        children = [i for i in listed if i["parent_id"] == invocation_id]
        assert sorted(i["parent_index"] for i in children) == [0, 1, 2, 3, 4]


@REPLAY
async def test_gather_raises_the_first_failure_in_argument_order(always_replay: bool) -> None:
    async with TestEnvironment([workers, callers], always_replay=always_replay) as env:
        assert await env.call("Callers", "gather_with_a_refusal") == "418: refused: first; square done: True"


async def test_a_send_to_an_unknown_target_fails_the_invocation_with_a_clear_message() -> None:
    async with TestEnvironment([workers, callers], retry_max_attempts=2) as env:
        with pytest.raises(InvocationFailed) as failed:
            await env.call("Callers", "send_nowhere")
        assert failed.value.status_code == 500
        assert "gave up after 2 attempts" in failed.value.message
        assert "Nowhere" in failed.value.message
        assert failed.value.invocation_id is not None
        found = await env.invocation(failed.value.invocation_id)
        assert found["journal"] == []  # the send was refused, never journaled


@REPLAY
async def test_a_send_returns_the_callee_id_and_the_callee_runs(always_replay: bool) -> None:
    async with TestEnvironment([workers, callers], always_replay=always_replay) as env:
        invocation_id = await env.send("Callers", "send_clock_in", 0)
        result = await env.attach(invocation_id)
        callee = result["callee"]
        assert callee.startswith("inv_") and callee != invocation_id
        assert (await env.attach(callee)).startswith("sent@")
        found = await env.invocation(callee)
        assert found["parent_id"] == invocation_id
        assert found["status"] == "completed"
        caller = await env.invocation(invocation_id)
        assert [kind for kind, _ in kinds(caller)] == ["now", "send"]


@REPLAY
async def test_a_delayed_send_starts_no_earlier_than_due(always_replay: bool) -> None:
    async with TestEnvironment([workers, callers], always_replay=always_replay) as env:
        result = await env.call("Callers", "send_clock_in", 5)
        sent_at = datetime.fromisoformat(result["sent_at"])
        callee = await env.invocation(result["callee"])
        assert callee["status"] == "scheduled"
        output = await env.attach(result["callee"])
        started = datetime.fromisoformat(output.split("@", 1)[1])
        assert started - sent_at >= timedelta(hours=5)
        assert env.now() - env.start >= timedelta(hours=5)


@pytest.mark.parametrize("delay", ["1h", "PT1H", "60m", "3600s"])
async def test_an_ingress_send_with_a_delay_starts_no_earlier_than_due(delay: str) -> None:
    async with TestEnvironment([workers]) as env:
        sent = await env.ingress.post("/Workers/clock_in/send", params={"delay": delay}, json="ingress")
        assert sent.status_code == 202, sent.text
        invocation_id = sent.json()["invocationId"]
        await env.settle()
        assert (await env.invocation(invocation_id))["status"] == "scheduled"
        await env.advance(timedelta(minutes=59))
        assert (await env.invocation(invocation_id))["status"] == "scheduled"
        output = await env.attach(invocation_id)
        started = datetime.fromisoformat(output.split("@", 1)[1])
        assert started - env.start >= timedelta(hours=1)
        restate_path = await env.ingress.post(
            "/restate/send/Workers/clock_in", params={"delay": "PT1H"}, json="restate-path"
        )
        assert restate_path.status_code == 202


async def test_a_bad_delay_is_a_400() -> None:
    async with TestEnvironment([workers]) as env:
        for delay in ("soon", "", "-1h", "1y", "PT", "P1W", "1h!", "1e3s", "999999999999999d", "1" + "0" * 400 + "ms"):
            response = await env.ingress.post("/Workers/clock_in/send", params={"delay": delay}, json="x")
            assert response.status_code == 400, (delay, response.text)
            assert "delay" in response.json()["message"]
        on_a_call = await env.ingress.post("/Workers/clock_in", params={"delay": "1h"}, json="x")
        assert on_a_call.status_code == 400
        assert "sends only" in on_a_call.json()["message"]
        too_long = await env.ingress.post("/Workers/clock_in/send", params={"delay": "40000d"}, json="x")
        assert "too long" in too_long.json()["message"]
        listed = (await env.admin.get("/invocations")).json()["invocations"]
        assert listed == []


# --------------------------------------------------------------------------- determinism

determinism = Service("Determinism")
#: What every attempt of ``draws`` saw, in order: (now, random, uuid).
observed: list[tuple[str, float, str]] = []


@determinism.handler()
async def draws(ctx: Context) -> dict[str, Any]:
    before = await ctx.now("before")
    number = ctx.random().random()
    uuid = str(ctx.uuid4())
    observed.append((before.isoformat(), number, uuid))
    await ctx.sleep(DAY)
    after = await ctx.now("after")
    return {"before": before.isoformat(), "after": after.isoformat(), "random": number, "uuid": uuid}


async def test_now_random_and_uuid4_are_the_same_in_every_replay() -> None:
    async with TestEnvironment([determinism], always_replay=True) as env:
        invocation_id = await env.send("Determinism", "draws")
        result = await env.attach(invocation_id)
        found = await env.invocation(invocation_id)
        assert len(found["attempts"]) >= 4  # replayed after every step
        # Every attempt that got past the first ctx.now saw the same values, even those run a day later.
        assert len(observed) >= 3
        assert set(observed) == {(result["before"], result["random"], result["uuid"])}
        journal = {entry["name"]: entry for entry in found["journal"] if entry["kind"] == "now"}
        assert journal["before"]["entry"]["now_ms"] == ms(datetime.fromisoformat(result["before"]))
        assert journal["after"]["entry"]["now_ms"] == ms(datetime.fromisoformat(result["after"]))
        assert datetime.fromisoformat(result["before"]) == env.start
        assert datetime.fromisoformat(result["after"]) - env.start >= DAY
        # Another invocation of the same handler draws from another seed.
        other = await env.call("Determinism", "draws")
        assert other["random"] != result["random"]
        assert other["uuid"] != result["uuid"]


# The outside world a careless handler reads: it changes with every attempt.
attempts_seen = {"n": 0}
nondeterministic = Service("Careless")


@nondeterministic.handler()
async def branchy(ctx: Context) -> str:
    attempts_seen["n"] += 1
    if attempts_seen["n"] == 1:
        await ctx.run("reserve-seat", lambda: "seat-1")
    else:
        await ctx.run("charge-card", lambda: "ch_1")
    await ctx.run("confirm", lambda: "ok")
    return "done"


@REPLAY
async def test_always_replay_catches_a_handler_that_branches_on_a_global(always_replay: bool) -> None:
    async with TestEnvironment([nondeterministic], always_replay=always_replay, retry_max_attempts=3) as env:
        if not always_replay:
            # One attempt runs it start to end: the bug goes unnoticed.
            assert await env.call("Careless", "branchy") == "done"
            return
        with pytest.raises(InvocationFailed) as failed:
            await env.call("Careless", "branchy")
        assert failed.value.status_code == 500
        message = failed.value.message
        assert "gave up after 3 attempts" in message
        assert "journal mismatch at index 0" in message
        assert "run 'reserve-seat'" in message and "run 'charge-card'" in message
        assert failed.value.invocation_id is not None
        found = await env.invocation(failed.value.invocation_id)
        assert found["status"] == "failed"
        assert kinds(found) == [("run", "reserve-seat")]  # the mismatch did not advance the journal
        assert found["attempts"][-1]["failure"]["code"] == 570
        assert found["last_failure"]["code"] == 570
