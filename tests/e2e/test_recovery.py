"""Fencing, replay checks, timeouts and recovery, in-process (the real-process versions kill processes)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import msgspec
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from handler_sdk import Context, Service
from handler_sdk.protocol import INVOKE_CONTENT_TYPE, AppendRequest, Run, json_encoder
from proxy.app import Runtime
from proxy.clock import ManualClock
from proxy.config import Settings

from .harness import _Forward, database, handler_app_for, open_runtime, running


async def test_append_from_a_superseded_attempt_is_rejected(tmp_path: Path) -> None:
    failures = {"left": 1}
    svc = Service("Once")

    @svc.handler()
    async def run(ctx: Context) -> str:
        await ctx.run("step", lambda: "value")
        if failures["left"]:
            failures["left"] -= 1
            raise RuntimeError("first attempt fails after its step")
        return "ok"

    async with running(tmp_path / "p.db", [svc], retry_initial_interval_ms=1) as h:
        response = await h.ingress.post("/Once/run")
        invocation_id = response.headers["x-restate-id"]
        found = await h.invocation(invocation_id)
        assert [a["attempt"] for a in found["attempts"]] == [1, 2]
        url = f"/_durable/v1/invocations/{invocation_id}/journal"
        entry = msgspec.Raw(json_encoder.encode(Run(name="late", result=msgspec.Raw(b'"zombie"'))))

        def append(attempt: int, token: str, index: int = 1) -> AppendRequest:
            return AppendRequest(attempt=attempt, token=token, index=index, entry=entry)

        headers = {"content-type": INVOKE_CONTENT_TYPE}
        stale = await h.ingress.post(
            url, content=json_encoder.encode(append(1, h.runtime.signer.token(invocation_id, 1))), headers=headers
        )
        assert stale.status_code == 409 and stale.json()["code"] == "fenced"
        forged = await h.ingress.post(url, content=json_encoder.encode(append(2, "forged")), headers=headers)
        assert forged.status_code == 403
        other = await h.ingress.post(
            "/_durable/v1/invocations/inv_00000000000000000000000000/journal",
            content=json_encoder.encode(append(2, h.runtime.signer.token(invocation_id, 2))),
            headers=headers,
        )
        assert other.status_code == 403
        garbage = await h.ingress.post(url, content=b"{]", headers=headers)
        assert garbage.status_code == 400
        assert h.runtime.callbacks.fenced_appends == 1
        after = await h.invocation(invocation_id)
        assert [e["name"] for e in after["journal"]] == ["step"]
        assert after["status"] == "completed"


async def test_a_journal_mismatch_is_shown_and_does_not_advance_the_invocation(tmp_path: Path) -> None:
    version = {"n": 1}
    svc = Service("Changing")

    @svc.handler()
    async def run(ctx: Context) -> str:
        await ctx.run("reserve-seat" if version["n"] == 1 else "charge-card", lambda: 1)
        if version["n"] == 1:
            version["n"] = 2  # a redeploy that renamed the step
            raise RuntimeError("crash after the first step")
        await ctx.run("confirm", lambda: 2)
        return "done"

    async with running(
        tmp_path / "p.db", [svc], retry_initial_interval_ms=5, retry_max_attempts=4, on_max_attempts="fail"
    ) as h:
        sent = await h.ingress.post("/Changing/run/send")
        invocation_id = sent.json()["invocationId"]
        found = await h.wait_for(invocation_id, lambda i: i["status"] == "failed")
        assert [e["name"] for e in found["journal"]] == ["reserve-seat"]
        message = found["failure"]["message"]
        assert "reserve-seat" in message and "charge-card" in message and "index 0" in message
        mismatches = [a for a in found["attempts"] if a["failure"] and "journal mismatch" in a["failure"]["message"]]
        assert [a["attempt"] for a in mismatches] == [2, 3, 4]
        assert mismatches[0]["failure"]["code"] == 570


async def test_a_silent_attempt_is_abandoned_fenced_and_retried(tmp_path: Path) -> None:
    clock = ManualClock()
    entered = asyncio.Event()
    hang = {"first": True}
    ran: list[int] = []
    svc = Service("Hangs")

    def before(attempt: int) -> str:
        ran.append(attempt)
        return "x"

    @svc.handler()
    async def run(ctx: Context) -> str:
        await ctx.run("before", before, ctx.attempt)
        if hang["first"]:
            hang["first"] = False
            entered.set()
            await asyncio.Event().wait()  # hangs until the proxy gives up on it
        return "finished"

    async with running(
        tmp_path / "p.db", [svc], clock=clock, inactivity_timeout_ms=1_000, retry_initial_interval_ms=100
    ) as h:
        sent = await h.ingress.post("/Hangs/run/send")
        invocation_id = sent.json()["invocationId"]
        await asyncio.wait_for(entered.wait(), 10)
        clock.advance(999)
        await asyncio.sleep(0.05)
        assert (await h.invocation(invocation_id))["status"] == "running"
        clock.advance(1)
        found = await h.wait_for(invocation_id, lambda i: i["status"] == "backing_off")
        assert "made no progress" in found["last_failure"]["message"]
        clock.advance(100)
        done = await h.wait_for(invocation_id, lambda i: i["status"] == "completed")
        assert ran == [1]
        assert [a["outcome"] for a in done["attempts"]] == ["retry", "completed"]


async def test_invocations_in_flight_resume_after_a_proxy_restart(tmp_path: Path) -> None:
    db = tmp_path / "p.db"
    entered = asyncio.Event()
    block = {"on": True}
    executions = {"charge": 0}
    svc = Service("Resume")

    def charge() -> str:
        executions["charge"] += 1
        return "ch_1"

    @svc.handler()
    async def run(ctx: Context) -> str:
        charged = await ctx.run("charge", charge)
        if block["on"]:
            entered.set()
            await asyncio.Event().wait()
        shipped = await ctx.run("ship", lambda: "sh_1")
        return f"{charged}/{shipped}"

    app, forward = handler_app_for([svc])
    async with open_runtime(db, app, forward) as first:
        assert (await first.admin.post("/deployments", json={"uri": "http://handlers"})).status_code == 201
        sent = await first.ingress.post("/Resume/run/send", headers={"idempotency-key": "k1"})
        invocation_id = sent.json()["invocationId"]
        await asyncio.wait_for(entered.wait(), 10)
    # The first proxy is gone with the attempt still running in the store.
    block["on"] = False
    async with open_runtime(db, app, forward) as second:
        again = await second.ingress.post("/Resume/run", headers={"idempotency-key": "k1"})
        assert again.status_code == 200 and again.json() == "ch_1/sh_1"
        assert again.headers["x-restate-id"] == invocation_id
        found = await second.invocation(invocation_id)
        assert [e["name"] for e in found["journal"]] == ["charge", "ship"]
        assert [a["outcome"] for a in found["attempts"]] == ["abandoned", "completed"]
        assert executions["charge"] == 1


async def test_a_handler_answering_garbage_is_a_protocol_error_on_the_attempt(tmp_path: Path) -> None:
    async def garbage_app(scope: Scope, receive: Receive, send: Send) -> None:  # a broken "SDK"
        path = scope["path"]
        if path == "/discover":
            manifest = {"services": [{"name": "Bad", "handlers": [{"name": "run", "takes_input": False}]}]}
            response = Response(json.dumps(manifest), media_type="application/vnd.durable.manifest.v1+json")
        else:
            response = Response(b"<html>oops</html>", media_type=INVOKE_CONTENT_TYPE)
        await response(scope, receive, send)

    async with open_runtime(
        tmp_path / "p.db",
        garbage_app,
        _Forward(),
        retry_initial_interval_ms=1,
        retry_max_attempts=2,
        on_max_attempts="fail",
    ) as h:
        assert (await h.admin.post("/deployments", json={"uri": "http://handlers"})).status_code == 201
        response = await h.ingress.post("/Bad/run")
        assert response.status_code == 500
        assert "invalid protocol message" in response.json()["message"]
        found = await h.invocation(response.headers["x-restate-id"])
        assert found["journal"] == []
        assert all(a["failure"]["code"] == 571 for a in found["attempts"])


async def test_registration_errors_are_clear(tmp_path: Path) -> None:
    async with running(tmp_path / "p.db", [], register=False) as h:
        bad = await h.admin.post("/deployments", json={"url": "x"})
        assert bad.status_code == 400 and "uri" in bad.json()["message"]
        scheme = await h.admin.post("/deployments", json={"uri": "ftp://x"})
        assert scheme.status_code == 400
        unknown = await h.admin.get("/invocations/inv_nope")
        assert unknown.status_code == 404
        route = await h.admin.get("/nothing-here")
        assert route.status_code == 404 and route.json()["code"] == "not_found"


async def test_httpx_errors_reaching_a_dead_instance_are_retried_elsewhere(tmp_path: Path) -> None:
    svc = Service("Twice")

    @svc.handler()
    async def run(ctx: Context) -> str:
        return await ctx.run("s", lambda: "ok")

    app, forward = handler_app_for([svc])
    dead = {"on": True}

    class Flaky(httpx.AsyncBaseTransport):
        def __init__(self) -> None:
            self.inner = httpx.ASGITransport(app=app)

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if request.url.host == "dead" and dead["on"]:
                raise httpx.ConnectError("connection refused", request=request)
            return await self.inner.handle_async_request(request)

    async with Runtime.open(
        Settings(db=await database(tmp_path / "p.db"), retry_initial_interval_ms=1),
        transport=Flaky(),
        callback_base="http://proxy",
    ) as rt:
        forward.target = rt.ingress
        async with (
            httpx.AsyncClient(transport=httpx.ASGITransport(app=rt.admin), base_url="http://admin") as admin,
            httpx.AsyncClient(transport=httpx.ASGITransport(app=rt.ingress), base_url="http://proxy") as ingress,
        ):
            dead["on"] = False
            assert (await admin.post("/deployments", json={"uri": "http://dead"})).status_code == 201
            assert (await admin.post("/deployments", json={"uri": "http://alive"})).status_code == 201
            listed = (await admin.get("/deployments")).json()["deployments"]
            assert len(listed) == 1 and sorted(listed[0]["endpoints"]) == ["http://alive", "http://dead"]
            dead["on"] = True
            for _ in range(4):
                response = await ingress.post("/Twice/run")
                assert response.status_code == 200 and response.json() == "ok"
