"""A poison invocation: a handler that fails on every attempt is paused after the retry policy's last
attempt (``on_max_attempts = "pause"``, the default) instead of failing. It holds on to its callers and
its key while the rest of the service keeps working; an operator fixes the cause and resumes it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from handler_sdk import Context, ObjectContext, Service, VirtualObject

from .harness import Harness, running

#: The bug: while True every attempt of the poison handlers fails. "Deploying the fix" sets it to False.
BROKEN = {"on": True}
steps: dict[str, int] = {}

shop = Service("Poison")
ledger = VirtualObject("Ledger")


def reserve(order: str) -> str:
    steps[order] = steps.get(order, 0) + 1
    return f"reserved {order}"


@shop.handler()
async def checkout(ctx: Context, order: str) -> str:
    reserved = await ctx.run("reserve", reserve, order)
    if BROKEN["on"]:
        raise RuntimeError(f"the tax service is down (order {order})")
    return f"{reserved}, charged"


@shop.handler()
async def ping(ctx: Context) -> str:
    return "pong"


@ledger.handler()
async def add(ctx: ObjectContext, amount: int) -> int:
    if BROKEN["on"] and amount < 0:
        raise RuntimeError("negative amounts crash the ledger")
    total: int = (await ctx.get("total", type_hint=int) or 0) + amount
    ctx.set("total", total)
    return total


@pytest.fixture(autouse=True)
def broken() -> Iterator[None]:
    BROKEN["on"] = True
    steps.clear()
    yield
    BROKEN["on"] = True


SETTINGS: dict[str, Any] = {"retry_max_attempts": 3, "retry_initial_interval_ms": 1}


def is_paused(found: dict[str, Any]) -> bool:
    return bool(found["status"] == "paused")


async def send(h: Harness, path: str, body: Any) -> str:
    sent = await h.ingress.post(f"{path}/send", json=body)
    assert sent.status_code == 202, sent.text
    invocation_id: str = sent.json()["invocationId"]
    return invocation_id


async def test_a_poison_invocation_pauses_and_completes_after_the_fix_and_a_resume(tmp_path: Path) -> None:
    async with running(tmp_path / "p.db", [shop, ledger], **SETTINGS) as h:
        invocation_id = await send(h, "/Poison/checkout", "o-1")
        attached = asyncio.create_task(h.ingress.get(f"/restate/attach/{invocation_id}"))

        found = await h.wait_for(invocation_id, is_paused)
        assert (found["attempt"], found["failure"], found["completed_at_ms"]) == (3, None, None)
        assert "the tax service is down (order o-1)" in found["last_failure"]["message"]
        assert [a["outcome"] for a in found["attempts"]] == ["retry", "retry", "paused"]
        assert "the tax service is down" in found["attempts"][-1]["failure"]["message"]
        assert [e["name"] for e in found["journal"]] == ["reserve"]
        listed = (await h.admin.get("/invocations", params={"status": "paused"})).json()["invocations"]
        assert [i["id"] for i in listed] == [invocation_id]
        assert listed[0]["last_failure"] == found["last_failure"]

        # The rest of the service keeps working while it is paused.
        for _ in range(5):
            other = await h.ingress.post("/Poison/ping")
            assert other.status_code == 200 and other.json() == "pong"
        # Nothing will retry it (no timer, no attempt task), and its client is still waiting: it has not ended.
        timers = await h.runtime.store.due_timers(2**62, 1_000)
        assert invocation_id not in {t.invocation_id for t in timers}
        assert h.runtime.invoker.running_attempt(invocation_id) is None
        assert (await h.invocation(invocation_id))["attempt"] == 3
        assert not attached.done()
        assert (await h.ingress.get(f"/restate/output/{invocation_id}")).status_code == 470

        # Resuming without a fix: a fresh budget of 3 attempts, then paused again. The counter goes on.
        resumed = await h.admin.patch(f"/invocations/{invocation_id}/resume")
        assert resumed.status_code == 202, resumed.text
        found = await h.wait_for(invocation_id, lambda i: is_paused(i) and i["attempt"] == 6)
        assert found["attempts_at_resume"] == 3
        assert [a["outcome"] for a in found["attempts"]] == ["retry", "retry", "paused"] * 2
        assert not attached.done()

        # Deploy the fix, resume: it completes, and the client that waited all along gets the result.
        BROKEN["on"] = False
        assert (await h.admin.patch(f"/invocations/{invocation_id}/resume")).status_code == 202
        response = await asyncio.wait_for(attached, 10)
        assert response.status_code == 200 and response.json() == "reserved o-1, charged"
        found = await h.invocation(invocation_id)
        assert (found["status"], found["attempt"]) == ("completed", 7)
        assert steps == {"o-1": 1}  # the journaled step never ran again

        # Only a paused invocation can be resumed.
        again = await h.admin.patch(f"/invocations/{invocation_id}/resume")
        assert again.status_code == 409 and "completed, not paused" in again.json()["message"]
        unknown = await h.admin.patch("/invocations/inv_nope/resume")
        assert unknown.status_code == 404
        bad = await h.admin.patch(f"/invocations/{invocation_id}/nap")
        assert bad.status_code == 400 and "resume" in bad.json()["message"]


async def test_a_paused_object_invocation_keeps_its_key_locked_until_it_is_resumed(tmp_path: Path) -> None:
    async with running(tmp_path / "p.db", [shop, ledger], **SETTINGS) as h:
        assert (await h.ingress.post("/Ledger/acct-1/add", json=5)).json() == 5
        poison = await send(h, "/Ledger/acct-1/add", -2)
        await h.wait_for(poison, is_paused)
        behind = await send(h, "/Ledger/acct-1/add", 10)
        # Another key of the same object is not held up.
        assert (await h.ingress.post("/Ledger/acct-2/add", json=1)).json() == 1
        view = (await h.admin.get("/objects/Ledger/acct-1")).json()
        assert (view["lock_holder"], view["queue"]) == (poison, [behind])

        BROKEN["on"] = False
        assert (await h.admin.patch(f"/invocations/{poison}/resume")).status_code == 202
        assert (await h.ingress.get(f"/restate/attach/{poison}")).json() == 3
        assert (await h.ingress.get(f"/restate/attach/{behind}")).json() == 13


async def test_killing_a_paused_invocation_ends_it_for_its_waiting_client(tmp_path: Path) -> None:
    async with running(tmp_path / "p.db", [shop, ledger], **SETTINGS) as h:
        invocation_id = await send(h, "/Poison/checkout", "o-2")
        attached = asyncio.create_task(h.ingress.get(f"/restate/attach/{invocation_id}"))
        await h.wait_for(invocation_id, is_paused)
        assert (await h.admin.patch(f"/invocations/{invocation_id}/kill")).status_code == 202
        response = await asyncio.wait_for(attached, 10)
        assert response.status_code == 409 and response.json()["message"] == "killed"
        found = await h.invocation(invocation_id)
        assert found["status"] == "failed" and "tax service" in found["last_failure"]["message"]


async def test_with_on_max_attempts_fail_the_invocation_fails_as_before(tmp_path: Path) -> None:
    async with running(tmp_path / "p.db", [shop, ledger], on_max_attempts="fail", **SETTINGS) as h:
        response = await h.ingress.post("/Poison/checkout", json="o-3")
        assert response.status_code == 500
        message = response.json()["message"]
        assert "gave up after 3 attempts" in message and "the tax service is down" in message
        found = await h.invocation(response.headers["x-restate-id"])
        assert (found["status"], found["attempt"]) == ("failed", 3)
        assert [a["outcome"] for a in found["attempts"]] == ["retry", "retry", "failed"]
