"""The testing kit itself: ``handler_sdk.testing.TestEnvironment``.

Its clock is manual: ``advance`` fires the timers that fall due, in due order,
each at its due time; ``settle`` waits until nothing can happen without the
test; ``call`` and ``attach`` skip time while the test waits on a result,
unless ``auto_skip=False``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import handler_sdk.testing
from handler_sdk import Context, Service, TerminalError
from handler_sdk.testing import InvocationFailed, TestEnvironment
from tests import postgres

kit = Service("Kit")
#: What the handlers below did, in order: (label, the handler's ctx.now() at the time).
log: list[tuple[str, str]] = []
#: Awakeable ids handed out by ``wait_for_outside``.
handed_out: list[str] = []
#: How often each step function really ran (replays do not run them).
step_runs: dict[str, int] = {}


@pytest.fixture(autouse=True)
def _reset() -> None:
    log.clear()
    handed_out.clear()
    step_runs.clear()


def record(label: str, at: str) -> None:
    log.append((label, at))


def counted(label: str) -> str:
    step_runs[label] = step_runs.get(label, 0) + 1
    return label


@kit.handler()
async def nap(ctx: Context, minutes: int) -> str:
    await ctx.sleep(timedelta(minutes=minutes))
    woke = await ctx.now()
    await ctx.run("record", record, f"{minutes}m", woke.isoformat())
    return woke.isoformat()


@kit.handler()
async def wait_for_outside(ctx: Context) -> str:
    awakeable_id, value = ctx.awakeable(type_hint=str)
    await ctx.run("hand-out", handed_out.append, awakeable_id)
    return f"got {await value}"


@kit.handler()
async def three_steps(ctx: Context) -> list[str]:
    return [await ctx.run(label, counted, label) for label in ("one", "two", "three")]


@kit.handler()
async def refuse(ctx: Context, code: int) -> str:
    raise TerminalError(f"no, with {code}", status_code=code)


@kit.handler()
async def clock(ctx: Context) -> str:
    return (await ctx.now()).isoformat()


async def wait_until(check: Callable[[], Any], timeout_s: float = 5.0) -> None:
    """Poll until ``check()`` (sync or async) is true: a real-time deadline, independent of the kit's clock."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.001)


async def test_settle_waits_for_suspension_and_advance_fires_timers_in_due_order_at_their_due_time() -> None:
    async with TestEnvironment([kit]) as env:
        ids = [await env.send("Kit", "nap", minutes) for minutes in (180, 60, 120)]
        await env.settle()
        assert env.now() == env.start  # settling never moves time
        assert [(await env.invocation(i))["status"] for i in ids] == ["suspended"] * 3
        assert log == []
        await env.advance(timedelta(minutes=90))
        assert env.now() == env.start + timedelta(minutes=90)
        assert log == [("60m", (env.start + timedelta(minutes=60)).isoformat())]
        await env.advance(timedelta(hours=2))
        assert env.now() == env.start + timedelta(minutes=210)
        assert log == [
            (f"{minutes}m", (env.start + timedelta(minutes=minutes)).isoformat()) for minutes in (60, 120, 180)
        ]
        assert [(await env.invocation(i))["status"] for i in ids] == ["completed"] * 3


async def test_a_timer_due_exactly_at_the_target_fires() -> None:
    async with TestEnvironment([kit]) as env:
        invocation_id = await env.send("Kit", "nap", 30)
        await env.advance(timedelta(minutes=30))
        assert (await env.invocation(invocation_id))["status"] == "completed"
        assert env.now() == env.start + timedelta(minutes=30)


async def test_advance_without_pending_work_just_moves_time() -> None:
    async with TestEnvironment([kit]) as env:
        await env.settle()
        assert env.now() == env.start
        await env.advance(timedelta(hours=5))
        assert env.now() == env.start + timedelta(hours=5)
        await env.advance(timedelta(0))
        assert env.now() == env.start + timedelta(hours=5)
        # Handlers read the same clock.
        assert await env.call("Kit", "clock") == (env.start + timedelta(hours=5)).isoformat()
        assert (await env.admin.get("/invocations")).json()["invocations"][0]["handler"] == "clock"


async def test_call_skips_time_to_the_next_timer_while_it_waits() -> None:
    async with TestEnvironment([kit]) as env:
        woke = await env.call("Kit", "nap", 60 * 24 * 30)
        assert woke == (env.start + timedelta(days=30)).isoformat()
        assert env.now() == env.start + timedelta(days=30)


async def test_a_call_that_waits_for_the_outside_is_resolved_by_the_test_concurrently() -> None:
    async with TestEnvironment([kit]) as env:

        async def approver() -> None:
            await wait_until(lambda: handed_out)
            await env.resolve_awakeable(handed_out[0], "the go-ahead")

        result, _ = await asyncio.gather(env.call("Kit", "wait_for_outside"), approver())
        assert result == "got the go-ahead"
        assert env.now() == env.start  # nothing to skip to: the kit waited for the test


async def test_without_auto_skip_the_test_moves_time() -> None:
    async with TestEnvironment([kit], auto_skip=False) as env:

        async def one_hour_later() -> None:
            async def suspended() -> bool:
                listed = (await env.admin.get("/invocations")).json()["invocations"]
                return bool(listed) and listed[0]["status"] == "suspended"

            await wait_until(suspended)
            assert env.now() == env.start  # the call did not skip ahead by itself
            await env.advance(timedelta(hours=1))

        woke, _ = await asyncio.gather(env.call("Kit", "nap", 60), one_hour_later())
        assert woke == (env.start + timedelta(hours=1)).isoformat()
        assert env.now() == env.start + timedelta(hours=1)


async def test_start_sets_the_clock_and_must_be_timezone_aware() -> None:
    start = datetime(2031, 6, 1, 12, 0, tzinfo=UTC)
    async with TestEnvironment([kit], start=start) as env:
        assert env.start == start and env.now() == start
        assert await env.call("Kit", "clock") == start.isoformat()
    with pytest.raises(ValueError, match="timezone-aware"):
        TestEnvironment([kit], start=datetime(2031, 6, 1))


@pytest.mark.parametrize("always_replay", [False, True], ids=["live", "always-replay"])
async def test_always_replay_ends_an_attempt_after_every_new_step(always_replay: bool) -> None:
    async with TestEnvironment([kit], always_replay=always_replay) as env:
        invocation_id = await env.send("Kit", "three_steps")
        assert await env.attach(invocation_id) == ["one", "two", "three"]
        attempts = (await env.invocation(invocation_id))["attempts"]
        if always_replay:
            # Each ends "resumed": suspended with nothing to wait for, re-invoked at once.
            assert [a["outcome"] for a in attempts] == ["resumed"] * 3 + ["completed"]
        else:
            assert [a["outcome"] for a in attempts] == ["completed"]
        assert step_runs == {"one": 1, "two": 1, "three": 1}  # replays return the journaled results


async def test_failures_are_reported_as_a_client_would_see_them() -> None:
    async with TestEnvironment([kit]) as env:
        with pytest.raises(InvocationFailed) as failed:
            await env.call("Kit", "refuse", 422)
        assert (failed.value.status_code, failed.value.message) == (422, "no, with 422")
        assert failed.value.invocation_id is not None and failed.value.invocation_id.startswith("inv_")
        assert (await env.invocation(failed.value.invocation_id))["status"] == "failed"
        attached = await env.send("Kit", "refuse", 503)
        with pytest.raises(InvocationFailed) as again:
            await env.attach(attached)
        assert (again.value.status_code, again.value.invocation_id) == (503, attached)
        with pytest.raises(InvocationFailed) as unknown:
            await env.send("Nowhere", "nothing")
        assert unknown.value.status_code == 404 and unknown.value.invocation_id is None
        with pytest.raises(InvocationFailed) as missing:
            await env.call("Kit", "nothing")
        assert missing.value.status_code == 404
        with pytest.raises(InvocationFailed) as not_there:
            await env.attach("inv_00000000000000000000000000")
        assert not_there.value.status_code == 404
        for action in (env.cancel, env.kill):
            with pytest.raises(RuntimeError, match="not found"):
                await action("inv_00000000000000000000000000")
        with pytest.raises(RuntimeError, match="not found"):
            await env.resolve_awakeable("awk_nope_1", True)
        with pytest.raises(RuntimeError, match="not found"):
            await env.reject_awakeable("awk_nope_1", "no")


async def test_an_idempotency_key_gives_one_invocation() -> None:
    async with TestEnvironment([kit]) as env:
        first = await env.call("Kit", "three_steps", idempotency_key="job-1")
        second = await env.call("Kit", "three_steps", idempotency_key="job-1")
        assert first == second == ["one", "two", "three"]
        assert len((await env.admin.get("/invocations")).json()["invocations"]) == 1
        assert step_runs == {"one": 1, "two": 1, "three": 1}


async def test_a_journal_file_outlives_its_environment(tmp_path: Path) -> None:
    db = tmp_path / "journal.db"
    async with TestEnvironment([kit], db_path=db) as env:
        invocation_id = await env.send("Kit", "nap", 60)
        await env.settle()
        assert (await env.invocation(invocation_id))["status"] == "suspended"
    assert db.exists()
    # A new proxy on the same journal (the clock starts over at ``start``) resumes the invocation.
    async with TestEnvironment([kit], db_path=db) as env:
        assert await env.attach(invocation_id) == (env.start + timedelta(hours=1)).isoformat()
        assert log == [("60m", (env.start + timedelta(hours=1)).isoformat())]


async def test_a_database_outlives_its_environment(tmp_path: Path) -> None:
    # A SQLite path, or a PostgreSQL URL with DURABLE_TEST_STORE=postgresql.
    database = await postgres.database_for(tmp_path / "journal.db")
    async with TestEnvironment([kit], database=database) as env:
        invocation_id = await env.send("Kit", "nap", 60)
        await env.settle()
        assert (await env.invocation(invocation_id))["status"] == "suspended"
    async with TestEnvironment([kit], database=database) as env:
        assert await env.attach(invocation_id) == (env.start + timedelta(hours=1)).isoformat()


def test_database_and_db_path_are_one_or_the_other(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not both"):
        TestEnvironment([kit], database=str(tmp_path / "a.db"), db_path=tmp_path / "b.db")


async def test_default_database_gives_each_environment_without_one_its_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    given: list[Path] = []

    async def fresh() -> str:
        given.append(tmp_path / f"journal-{len(given)}.db")
        return str(given[-1])

    monkeypatch.setattr(handler_sdk.testing, "default_database", fresh)
    async with TestEnvironment([kit]) as env:
        await env.send("Kit", "nap", 1)
    async with TestEnvironment([kit]) as env:
        assert (await env.admin.get("/invocations")).json()["invocations"] == [], "a database of its own"
    async with TestEnvironment([kit], db_path=tmp_path / "mine.db"):
        pass
    assert given == [tmp_path / "journal-0.db", tmp_path / "journal-1.db"]
    assert all(path.exists() for path in given)
