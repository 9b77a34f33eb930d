"""Size limits end an invocation with a clear error; a full disk is a 503 that loses and corrupts nothing."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from handler_sdk import Context, Service
from proxy.store.sqlite import SQLiteStore
from tests.postgres import sqlite_only

from .harness import Harness, running

svc = Service("Sizes")
release = asyncio.Event()


@svc.handler()
async def big_step(ctx: Context, size: int) -> int:
    value = await ctx.run("big", lambda: "x" * size)
    return len(value)


@svc.handler()
async def many_steps(ctx: Context, count: int) -> int:
    for i in range(count):
        await ctx.run(f"step-{i}", lambda i=i: i)
    return count


@svc.handler()
async def big_output(ctx: Context, size: int) -> str:
    return "y" * size


@svc.handler()
async def blob(ctx: Context, data: str) -> int:
    return len(data)


@svc.handler()
async def waits(ctx: Context) -> str:
    await ctx.run("before", lambda: "b")
    await release.wait()
    return await ctx.run("after", lambda: "a")


async def test_an_entry_over_the_limit_fails_the_invocation_with_a_clear_error(tmp_path: Path) -> None:
    async with running(tmp_path / "p.db", [svc], max_entry_bytes=1_000) as h:
        small = await h.ingress.post("/Sizes/big_step", json=100)
        assert small.status_code == 200 and small.json() == 100
        response = await h.ingress.post("/Sizes/big_step", json=5_000)
        assert response.status_code == 413
        assert "max_entry_bytes" in response.json()["message"]
        found = await h.invocation(response.headers["x-restate-id"])
        assert found["status"] == "failed" and found["journal"] == []
        output = await h.ingress.post("/Sizes/big_output", json=5_000)
        assert output.status_code == 413 and "output" in output.json()["message"]


async def test_a_journal_over_the_limit_fails_the_invocation(tmp_path: Path) -> None:
    async with running(tmp_path / "p.db", [svc], max_journal_entries=3) as h:
        assert (await h.ingress.post("/Sizes/many_steps", json=3)).status_code == 200
        response = await h.ingress.post("/Sizes/many_steps", json=5)
        assert response.status_code == 413 and "max_journal_entries" in response.json()["message"]
        found = await h.invocation(response.headers["x-restate-id"])
        assert [e["index"] for e in found["journal"]] == [0, 1, 2]
    async with running(tmp_path / "q.db", [svc], max_journal_bytes=200) as h:
        response = await h.ingress.post("/Sizes/many_steps", json=50)
        assert response.status_code == 413 and "max_journal_bytes" in response.json()["message"]


async def _set_page_limit(h: Harness, pages: int | None) -> None:
    store = h.runtime.store
    assert isinstance(store, SQLiteStore)

    def limit(conn: sqlite3.Connection) -> None:
        current = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages if pages is not None else current}")

    await store.writer.run(limit)


@sqlite_only("fills the database with SQLite's max_page_count and checks it with PRAGMA integrity_check")
async def test_a_full_disk_is_a_503_and_the_proxy_recovers_when_space_returns(tmp_path: Path) -> None:
    release.clear()
    async with running(tmp_path / "p.db", [svc]) as h:
        running_one = (await h.ingress.post("/Sizes/waits/send")).json()["invocationId"]
        await h.wait_for(running_one, lambda i: len(i["journal"]) == 1)
        await _set_page_limit(h, None)  # the database may not grow by a single page
        accepted = 0
        for _ in range(500):  # fill the pages it has left
            full = await h.ingress.post("/Sizes/blob/send", json="z" * 20_000)
            if full.status_code != 202:
                break
            accepted += 1
        assert full.status_code == 503
        assert "full" in full.json()["message"] and "nothing was recorded" in full.json()["message"]
        listed = (await h.admin.get("/invocations", params={"limit": 1000})).json()["invocations"]
        assert len(listed) == accepted + 1, "every 202 was recorded, the 503 was not"
        release.set()  # the running handler's next step may meet the full disk: its append is retried
        await _set_page_limit(h, 1_000_000)
        done = await h.wait_for(running_one, lambda i: i["status"] == "completed")
        assert [e["name"] for e in done["journal"]] == ["before", "after"]
        again = await h.ingress.post("/Sizes/many_steps", json=1)
        assert again.status_code == 200
        for invocation in listed:
            await h.wait_for(invocation["id"], lambda i: i["status"] == "completed")
        store = h.runtime.store
        assert isinstance(store, SQLiteStore)
        check = await store.writer.run(lambda conn: conn.execute("PRAGMA integrity_check").fetchone()[0])
        assert check == "ok"
