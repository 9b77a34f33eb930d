"""``GET /metrics`` on the admin port after real invocations: the counts add up, the histograms make sense."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from handler_sdk import Context, Service, TerminalError
from proxy.store.base import InvocationStatus, JournalStore, StoreUnavailable
from tests.proxy.metrics_text import Family, parse

from .harness import Harness, running

shop = Service("Shop")
flaky_failures = {"left": 0}


async def _double(x: int) -> int:
    return 2 * x


@shop.handler()
async def steps(ctx: Context, x: int) -> int:
    for i in range(3):
        x = await ctx.run(f"step-{i}", _double, x)
    return x


@shop.handler()
async def boom(ctx: Context) -> None:
    await ctx.run("before", _double, 1)
    raise TerminalError("no such thing", status_code=404)


@shop.handler()
async def flaky(ctx: Context) -> str:
    await ctx.run("first", _double, 1)
    if flaky_failures["left"]:
        flaky_failures["left"] -= 1
        raise RuntimeError("transient")
    return "ok"


@shop.handler()
async def nap(ctx: Context) -> None:
    await ctx.sleep(timedelta(hours=1), name="long")


async def scrape(h: Harness, **headers: str) -> dict[str, Family]:
    response = await h.admin.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return parse(response.text)


async def test_a_scrape_counts_invocations_attempts_steps_and_store_writes(tmp_path: Path) -> None:
    flaky_failures["left"] = 1
    async with running(tmp_path / "p.db", [shop], retry_initial_interval_ms=1) as h:
        before = await scrape(h)
        assert before["durable_invocations"].value(status="completed") == 0
        for x in range(4):
            response = await h.ingress.post("/Shop/steps", json=x)
            assert response.status_code == 200 and response.json() == 8 * x
        assert (await h.ingress.post("/Shop/boom")).status_code == 404
        assert (await h.ingress.post("/Shop/flaky")).json() == "ok"
        napping = (await h.ingress.post("/Shop/nap/send")).json()["invocationId"]
        await h.wait_for(napping, lambda i: i["status"] == "suspended")

        m = await scrape(h)
        invocations = m["durable_invocations"]
        assert invocations.value(status="completed") == 5
        assert invocations.value(status="failed") == 1
        assert invocations.value(status="suspended") == 1
        assert invocations.value(status="running") == 0
        assert m["durable_pending_timers"].value() == 1
        assert m["durable_attempts_running"].value() == 0

        assert m["durable_invocations_started_total"].value(service="Shop") == 7
        ended = m["durable_invocations_ended_total"]
        assert ended.value(outcome="completed") == 5 and ended.value(outcome="failed") == 1

        attempts = m["durable_attempts_total"]
        assert attempts.value(service="Shop", outcome="completed") == 5
        assert attempts.value(service="Shop", outcome="failed") == 1
        assert attempts.value(service="Shop", outcome="retry") == 1
        assert attempts.value(service="Shop", outcome="suspended") == 1
        assert attempts.get(service="Shop", outcome="abandoned") == 0
        assert m["durable_retries_total"].value(service="Shop") == 1

        duration = m["durable_invocation_duration_seconds"]
        assert duration.value("_count", service="Shop") == 6, "the ends committed by attempts"
        assert duration.value("_sum", service="Shop") < 60

        step = m["durable_step_duration_seconds"]
        # 4 x 3 steps, 1 before the failure, 1 in the flaky handler's first attempt (replayed, not re-run, later).
        assert step.value("_count", service="Shop", kind="run") == 12 + 1 + 1
        assert step.value("_count", service="Shop", kind="sleep") == 1
        buckets = step.buckets(service="Shop", kind="run")
        assert buckets[-1][1] == 14 and buckets[-2][0] == 600.0
        assert buckets[8][0] == 0.5 and buckets[8][1] == 14, "in-process steps take well under half a second"

        appends = m["durable_append_duration_seconds"]
        assert appends.value("_count") == 15
        assert 0 < appends.value("_sum") < 15 * 0.5

        writes = m["durable_store_write_duration_seconds"]
        assert writes.value("_count", verb="append") == 15
        assert writes.value("_count", verb="create_invocation") == 7
        assert writes.value("_count", verb="complete") == 5
        assert writes.value("_count", verb="fail") == 1
        assert writes.value("_count", verb="suspend") == 1
        assert writes.value("_count", verb="backoff") == 1
        assert writes.value("_count", verb="register_deployment") == 1
        assert writes.value("_sum", verb="append") <= appends.value("_sum"), "the commit is part of the append"

        assert m["durable_fenced_writes_total"].value(kind="append") == 0
        assert m["durable_fenced_writes_total"].value(kind="end") == 0
        assert m["durable_takeovers_total"].value() == 0
        assert m["durable_timers_fired_total"].value() == 1, "the flaky handler's backoff"
        assert m["durable_metrics_store_errors_total"].value() == 0
        (build,) = m["durable_build_info"].label_sets()
        assert m["durable_build_info"].value(**build) == 1

        # Counters only go up between scrapes; the store's gauges follow the store.
        again = await scrape(h)
        assert again["durable_invocations_started_total"].value(service="Shop") == 7
        assert again["durable_store_write_duration_seconds"].value("_count", verb="append") == 15


async def test_the_metrics_need_the_admin_token_when_there_is_one(tmp_path: Path) -> None:
    async with running(tmp_path / "p.db", [shop], register=False, admin_token="admin-secret") as h:
        assert (await h.admin.get("/metrics")).status_code == 401
        families = await scrape(h, authorization="Bearer admin-secret")
        assert "durable_invocations" in families
        assert (await h.admin.get("/health")).status_code == 200


async def test_a_store_that_cannot_be_read_leaves_out_only_its_gauges(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with running(tmp_path / "p.db", [shop], register=False) as h:

        async def unavailable(self: JournalStore) -> dict[InvocationStatus, int]:
            raise StoreUnavailable("disk on fire")

        with monkeypatch.context() as patch:
            # On the store's class, for the duration of the scrape (stores have no instance __dict__).
            patch.setattr(type(h.runtime.store), "invocation_counts", unavailable)
            m = await scrape(h)
        assert m["durable_invocations"].samples == {} and m["durable_pending_timers"].samples == {}
        assert m["durable_metrics_store_errors_total"].value() == 1
        assert m["durable_attempts_running"].value() == 0
        m = await scrape(h)
        assert m["durable_invocations"].value(status="completed") == 0
