"""The whole loop in-process: ingress -> store -> invoker -> handler SDK -> callbacks -> result."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import msgspec

from handler_sdk import Context, RunOptions, Service, TerminalError

from .harness import running


class Order(msgspec.Struct):
    customer: str
    amount_cents: int


class Receipt(msgspec.Struct):
    customer: str
    charge: str
    steps: int


def make_service(calls: dict[str, int]) -> Service:
    svc = Service("Shop")

    def charge(order: Order) -> str:
        calls["charge"] = calls.get("charge", 0) + 1
        return f"ch_{order.customer}_{order.amount_cents}"

    async def ship(charge_id: str) -> int:
        calls["ship"] = calls.get("ship", 0) + 1
        return 2

    @svc.handler()
    async def buy(ctx: Context, order: Order) -> Receipt:
        charge_id = await ctx.run("charge", charge, order)
        steps = await ctx.run("ship", ship, charge_id)
        return Receipt(customer=order.customer, charge=charge_id, steps=steps)

    @svc.handler()
    async def ping(ctx: Context) -> str:
        return "pong"

    @svc.handler()
    async def refuse(ctx: Context, reason: str) -> str:
        raise TerminalError(f"refused: {reason}", status_code=409)

    return svc


async def test_call_runs_every_step_and_records_the_journal(tmp_path: Path) -> None:
    calls: dict[str, int] = {}
    async with running(tmp_path / "p.db", [make_service(calls)]) as h:
        response = await h.ingress.post("/Shop/buy", json={"customer": "ada", "amount_cents": 250})
        assert response.status_code == 200, response.text
        assert response.json() == {"customer": "ada", "charge": "ch_ada_250", "steps": 2}
        invocation_id = response.headers["x-restate-id"]
        assert invocation_id.startswith("inv_")
        found = await h.invocation(invocation_id)
        assert found["status"] == "completed"
        assert [(e["index"], e["kind"], e["name"]) for e in found["journal"]] == [
            (0, "run", "charge"),
            (1, "run", "ship"),
        ]
        assert found["journal"][0]["entry"]["result"] == "ch_ada_250"
        assert [a["outcome"] for a in found["attempts"]] == ["completed"]
        assert calls == {"charge": 1, "ship": 1}


async def test_restate_paths_send_attach_and_output(tmp_path: Path) -> None:
    async with running(tmp_path / "p.db", [make_service({})]) as h:
        sent = await h.ingress.post("/restate/send/Shop/buy", json={"customer": "bo", "amount_cents": 1})
        assert sent.status_code == 202
        body = sent.json()
        assert body["status"] == "Accepted"
        invocation_id = body["invocationId"]
        assert sent.headers["x-restate-id"] == invocation_id
        attached = await h.ingress.get(f"/restate/attach/{invocation_id}")
        assert attached.status_code == 200
        assert attached.json()["charge"] == "ch_bo_1"
        for path in (f"/restate/output/{invocation_id}", f"/restate/invocation/{invocation_id}/output",
                     f"/restate/invocation/{invocation_id}/attach"):  # fmt: skip
            again = await h.ingress.get(path)
            assert again.status_code == 200, path
            assert again.json() == attached.json()
        call = await h.ingress.post("/restate/call/Shop/ping")
        assert call.status_code == 200 and call.json() == "pong"
        classic = await h.ingress.post("/Shop/ping/send")
        assert classic.status_code == 202
        assert (await h.ingress.get("/restate/health")).status_code == 200


async def test_output_of_a_running_invocation_is_not_ready(tmp_path: Path) -> None:
    release = asyncio.Event()
    svc = Service("Slow")

    @svc.handler()
    async def wait(ctx: Context) -> str:
        await release.wait()
        return "done"

    async with running(tmp_path / "p.db", [svc]) as h:
        sent = await h.ingress.post("/Slow/wait/send")
        invocation_id = sent.json()["invocationId"]
        pending = await h.ingress.get(f"/restate/output/{invocation_id}")
        assert pending.status_code == 470
        assert pending.json() == {"message": "not ready"}
        release.set()
        attached = await h.ingress.get(f"/restate/attach/{invocation_id}")
        assert attached.json() == "done"


async def test_idempotency_key_gives_one_invocation_and_one_result(tmp_path: Path) -> None:
    calls: dict[str, int] = {}
    async with running(tmp_path / "p.db", [make_service(calls)]) as h:
        order = {"customer": "cy", "amount_cents": 9}
        headers = {"idempotency-key": "order-9"}
        responses = await asyncio.gather(*(h.ingress.post("/Shop/buy", json=order, headers=headers) for _ in range(20)))
        assert {r.status_code for r in responses} == {200}
        assert len({r.headers["x-restate-id"] for r in responses}) == 1
        assert len({r.content for r in responses}) == 1
        assert calls == {"charge": 1, "ship": 1}
        resent = await h.ingress.post("/Shop/buy/send", json=order, headers=headers)
        assert resent.status_code == 202 and resent.json()["status"] == "PreviouslyAccepted"
        assert resent.json()["invocationId"] == responses[0].headers["x-restate-id"]
        different = await h.ingress.post("/Shop/buy", json={"customer": "cy", "amount_cents": 10}, headers=headers)
        assert different.status_code == 422
        assert "order-9" in different.json()["message"]


async def test_bad_input_gets_a_clear_4xx_and_creates_nothing(tmp_path: Path) -> None:
    async with running(tmp_path / "p.db", [make_service({})], max_body_bytes=1024) as h:
        cases = [
            (await h.ingress.post("/Nope/buy", json={}), 404, "Nope"),
            (await h.ingress.post("/Shop/nope", json={}), 404, "nope"),
            (await h.ingress.post("/Shop/buy", content=b"{not json"), 400, "not valid JSON"),
            (await h.ingress.post("/Shop/buy", json={"customer": "x"}), 400, "amount_cents"),
            (await h.ingress.post("/Shop/buy", json={"customer": "x", "amount_cents": "ten"}), 400, "amount_cents"),
            (await h.ingress.post("/Shop/buy", content=b"[" + b"1," * 1000 + b"1]"), 413, "limit"),
            (await h.ingress.get("/Shop/buy"), 405, "POST"),
            (await h.ingress.post("/Shop/ping", json={"unexpected": 1}), 400, "takes no input"),
        ]
        for response, status, needle in cases:
            assert response.status_code == status, response.text
            body = response.json()
            assert needle in body["message"], body
            assert "Traceback" not in response.text
        listed = await h.admin.get("/invocations")
        assert listed.json()["invocations"] == []


async def test_terminal_error_ends_the_invocation_with_its_status(tmp_path: Path) -> None:
    async with running(tmp_path / "p.db", [make_service({})]) as h:
        response = await h.ingress.post("/Shop/refuse", json="out of stock")
        assert response.status_code == 409
        assert response.json() == {"code": 409, "message": "refused: out of stock"}
        found = await h.invocation(response.headers["x-restate-id"])
        assert found["status"] == "failed"
        assert found["attempt"] == 1


async def test_transient_failures_are_retried_with_the_journal(tmp_path: Path) -> None:
    calls = {"first": 0, "flaky": 0}
    svc = Service("Flaky")

    def first() -> str:
        calls["first"] += 1
        return "once"

    @svc.handler()
    async def run(ctx: Context) -> str:
        value = await ctx.run("first", first)
        calls["flaky"] += 1
        if calls["flaky"] < 3:
            raise RuntimeError(f"transient failure {calls['flaky']}")
        return value

    async with running(tmp_path / "p.db", [svc], retry_initial_interval_ms=1) as h:
        response = await h.ingress.post("/Flaky/run")
        assert response.status_code == 200 and response.json() == "once"
        found = await h.invocation(response.headers["x-restate-id"])
        assert calls == {"first": 1, "flaky": 3}
        assert [a["outcome"] for a in found["attempts"]] == ["retry", "retry", "completed"]
        assert "transient failure 1" in found["attempts"][0]["failure"]["message"]
        assert len(found["journal"]) == 1


async def test_after_the_last_attempt_the_invocation_fails_with_the_last_error(tmp_path: Path) -> None:
    svc = Service("Broken")

    @svc.handler()
    async def run(ctx: Context) -> str:
        raise ValueError("database is down")

    async with running(
        tmp_path / "p.db", [svc], retry_initial_interval_ms=1, retry_max_attempts=3, on_max_attempts="fail"
    ) as h:
        response = await h.ingress.post("/Broken/run")
        assert response.status_code == 500
        message = response.json()["message"]
        assert "gave up after 3 attempts" in message and "database is down" in message
        assert "Traceback" not in message
        found = await h.invocation(response.headers["x-restate-id"])
        assert found["status"] == "failed" and found["attempt"] == 3


async def test_step_retries_then_a_journaled_terminal_failure(tmp_path: Path) -> None:
    attempts = {"n": 0}
    svc = Service("Steps")

    def declined() -> str:
        attempts["n"] += 1
        raise ConnectionError("gateway timeout")

    @svc.handler()
    async def pay(ctx: Context) -> str:
        try:
            await ctx.run(
                "pay", declined, options=RunOptions(max_attempts=3, initial_interval=timedelta(milliseconds=1))
            )
        except TerminalError as exc:
            return f"compensated: {exc.message}"
        return "paid"

    async with running(tmp_path / "p.db", [svc]) as h:
        response = await h.ingress.post("/Steps/pay")
        assert response.status_code == 200
        assert response.json().startswith("compensated: step 'pay' failed after 3 attempts")
        found = await h.invocation(response.headers["x-restate-id"])
        assert found["journal"][0]["entry"]["failure"]["message"].startswith("step 'pay' failed after 3 attempts")
        assert attempts["n"] == 3
