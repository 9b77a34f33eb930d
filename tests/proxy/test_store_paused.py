"""Paused invocations: pause after the last attempt, resume with a fresh retry budget, cancel and kill
(the JournalStore contract, every backend), plus the index behind listing them (SQLite)."""

from __future__ import annotations

import sqlite3

import pytest

from proxy.store._ops import INVOCATION_COLUMNS, UNFINISHED
from proxy.store.base import CompletionRow, Effects, Ended, JournalStore, StoredFailure, TimerRow
from proxy.store.sqlite import SQLiteStore
from tests.proxy.conftest import StoreFactory
from tests.proxy.helpers import BOOM, append, call, claim, new, start, status_of

KILLED = StoredFailure(code=499, message="killed by the operator")


async def paused(store: JournalStore, invocation_id: str = "inv-1") -> int:
    """Create, claim and pause an invocation after its first attempt; returns that attempt."""
    attempt = await start(store, invocation_id)
    assert await store.pause(invocation_id, attempt, BOOM, 2_000)
    return attempt


async def test_pause_keeps_the_invocation_unfinished_with_its_last_failure(store: JournalStore) -> None:
    attempt = await paused(store)
    inv = await store.get_invocation("inv-1")
    assert inv is not None
    assert (inv.status, inv.attempt, inv.last_failure, inv.failure) == ("paused", attempt, BOOM, None)
    assert (inv.done, inv.completed_at_ms, inv.next_run_at_ms, inv.modified_at_ms) == (False, None, None, 2_000)
    assert (inv.attempts_at_resume, inv.attempts_since_resume) == (0, 1)
    attempts = await store.get_attempts("inv-1")
    assert [(a.attempt, a.outcome, a.failure, a.ended_at_ms) for a in attempts] == [(1, "paused", BOOM, 2_000)]
    # Not runnable, not claimable, not recovered on start; listed by its status.
    assert await store.list_runnable() == []
    assert await store.claim("inv-1", None, 2_100) is None
    assert await store.abandon_running(2_200) == 0
    assert [i.id for i in await store.list_invocations(status="paused")] == ["inv-1"]
    assert await store.list_invocations(status="failed") == []
    assert await status_of(store, "inv-1") == "paused"


async def test_pause_is_fenced_like_backoff(store: JournalStore) -> None:
    assert not await store.pause("unknown", 1, BOOM, 2_000)
    attempt = await start(store)
    assert not await store.pause("inv-1", attempt + 1, BOOM, 2_000)  # not the current attempt
    await store.abandon_running(2_100)  # the attempt is superseded
    assert not await store.pause("inv-1", attempt, BOOM, 2_200)
    assert await status_of(store, "inv-1") == "pending"
    again = await claim(store, "inv-1", 2_300)
    assert await store.pause("inv-1", again.invocation.attempt, BOOM, 2_400)
    assert not await store.pause("inv-1", again.invocation.attempt, BOOM, 2_500)  # paused: no longer running
    # A paused invocation takes no more writes from its attempt.
    late = await store.append("inv-1", again.invocation.attempt, 0, "run", "late", b"x", 2_600)
    assert late.outcome == "fenced"
    assert await store.complete("inv-1", again.invocation.attempt, b"1", 2_700) is None
    assert await store.suspend("inv-1", again.invocation.attempt, [], 2_800) == "fenced"


async def test_resume_starts_a_fresh_retry_budget_and_the_counter_goes_on(store: JournalStore) -> None:
    assert await store.resume("unknown", 3_000) == ("not_found", Effects())
    attempt = await start(store)
    assert await store.resume("inv-1", 2_000) == ("not_paused", Effects())  # running
    assert await store.backoff("inv-1", attempt, BOOM, 2_500, 2_001)
    assert await store.resume("inv-1", 2_002) == ("not_paused", Effects())  # backing off
    second = (await claim(store, "inv-1", 2_600)).invocation.attempt
    assert await store.pause("inv-1", second, BOOM, 2_700)

    assert await store.resume("inv-1", 3_000) == ("resumed", Effects(woken=["inv-1"]))
    inv = await store.get_invocation("inv-1")
    assert inv is not None
    assert (inv.status, inv.attempt, inv.attempts_at_resume, inv.attempts_since_resume) == ("pending", 2, 2, 0)
    assert inv.last_failure == BOOM  # still the last failure, until an attempt says otherwise
    assert await store.list_runnable() == ["inv-1"]
    assert await store.resume("inv-1", 3_001) == ("not_paused", Effects())  # resuming twice

    third = await claim(store, "inv-1", 3_100)
    assert (third.invocation.attempt, third.invocation.attempts_since_resume) == (3, 1)
    assert await store.complete("inv-1", 3, b'"ok"', 3_200) is not None
    assert await store.resume("inv-1", 3_300) == ("not_paused", Effects())  # ended
    outcomes = [a.outcome for a in await store.get_attempts("inv-1")]
    assert outcomes == ["retry", "paused", "completed"]


async def test_a_paused_invocation_survives_a_restart(store_factory: StoreFactory) -> None:
    store = await store_factory()
    await paused(store)
    await store.close()
    reopened = await store_factory()
    assert await reopened.abandon_running(5_000) == 0
    assert await reopened.list_runnable() == []
    assert await reopened.resume("inv-1", 5_100) == ("resumed", Effects(woken=["inv-1"]))
    assert await reopened.list_runnable() == ["inv-1"]


async def test_a_paused_callee_keeps_its_caller_waiting_and_a_sleep_still_completes(store: JournalStore) -> None:
    root = await start(store, "root")
    await call(store, "root", root, 0, "child")
    assert await store.suspend("root", root, [0], 2_100) == "suspended"
    child = (await claim(store, "child", 2_200)).invocation.attempt
    await append(store, "child", child, 0, "sleep", 2_300, timer_at_ms=9_000)
    assert await store.pause("child", child, BOOM, 2_400)
    # The caller's entry has no completion: pausing is not an end.
    assert await store.get_completions("root", [0]) == []
    assert await status_of(store, "root") == "suspended"
    # The sleep's timer stays; when it fires, the entry is completed but the invocation stays paused.
    assert await store.due_timers(10_000, 10) == [TimerRow(invocation_id="child", index=0, due_at_ms=9_000)]
    assert await store.fire_timer("child", 0, 9_000) == Effects(notified=["child"])
    assert await status_of(store, "child") == "paused"
    assert await store.list_runnable() == []


async def test_cancel_runs_a_paused_invocation_again_to_compensate(store: JournalStore) -> None:
    attempt = await paused(store)
    assert await store.cancel("inv-1", 3_000) == ("requested", Effects(woken=["inv-1"]))
    inv = await store.get_invocation("inv-1")
    assert inv is not None
    assert (inv.status, inv.cancel_requested) == ("pending", True)
    # The compensations get a fresh retry budget, as after a resume.
    assert (inv.attempts_at_resume, inv.attempts_since_resume) == (attempt, 0)
    again = await claim(store, "inv-1", 3_100)
    assert again.invocation.cancel_requested and again.invocation.attempt == attempt + 1


async def test_cancel_cascades_into_a_paused_callee(store: JournalStore) -> None:
    root = await start(store, "root")
    await call(store, "root", root, 0, "child")
    assert await store.suspend("root", root, [0], 2_100) == "suspended"
    child = (await claim(store, "child", 2_200)).invocation.attempt
    assert await store.pause("child", child, BOOM, 2_300)
    _, effects = await store.cancel("root", 3_000)
    assert effects == Effects(woken=["root", "child"])
    inv = await store.get_invocation("child")
    assert inv is not None and (inv.status, inv.cancel_requested, inv.attempts_at_resume) == ("pending", True, 1)


async def test_kill_ends_a_paused_invocation_and_completes_its_caller(store: JournalStore) -> None:
    root = await start(store, "root")
    await call(store, "root", root, 0, "child")
    assert await store.suspend("root", root, [0], 2_100) == "suspended"
    child = (await claim(store, "child", 2_200)).invocation.attempt
    assert await store.pause("child", child, BOOM, 2_300)
    assert await store.kill("child", KILLED, 3_000) == (
        "requested",
        Effects(woken=["root"], notified=["root"], ended=[Ended(invocation_id="child", failure=KILLED)]),
    )
    inv = await store.get_invocation("child")
    assert inv is not None
    assert (inv.status, inv.failure, inv.last_failure, inv.completed_at_ms) == ("failed", KILLED, BOOM, 3_000)
    assert await store.get_completions("root", [0]) == [CompletionRow(index=0, failure=KILLED, created_at_ms=3_000)]
    # The paused attempt was closed when it paused; kill does not rewrite it.
    assert [(a.outcome, a.failure) for a in await store.get_attempts("child")] == [("paused", BOOM)]
    assert await store.resume("child", 3_100) == ("not_paused", Effects())
    assert await store.cancel("child", 3_200) == ("already_done", Effects())


async def test_a_paused_exclusive_invocation_keeps_its_key_locked(store: JournalStore) -> None:
    for at, invocation_id in enumerate(("first", "second")):
        exclusive = new(invocation_id, service="counter", handler="add", key="k1", exclusive=True)
        await store.create_invocation(exclusive, 1_000 + at)
    first = (await claim(store, "first", 1_100)).invocation.attempt
    assert await store.pause("first", first, BOOM, 1_200)
    status = await store.key_status("counter", "k1")
    assert (status.lock_holder, status.queue) == ("first", ["second"])
    assert await store.list_runnable() == []

    assert await store.resume("first", 2_000) == ("resumed", Effects(woken=["first"]))
    assert (await store.key_status("counter", "k1")).lock_holder == "first"
    again = (await claim(store, "first", 2_100)).invocation.attempt
    assert await store.pause("first", again, BOOM, 2_200)
    # Killing the paused holder hands the lock on.
    assert await store.kill("first", KILLED, 3_000) == (
        "requested",
        Effects(woken=["second"], ended=[Ended(invocation_id="first", failure=KILLED)]),
    )
    status = await store.key_status("counter", "k1")
    assert (status.lock_holder, status.queue) == ("second", [])


# --------------------------------------------------------------------------- the schema behind it (SQLite)


async def test_listing_paused_invocations_uses_the_unfinished_index(store: JournalStore) -> None:
    if not isinstance(store, SQLiteStore):
        pytest.skip("a detail of the SQLite schema")
    await paused(store)

    def plan(conn: sqlite3.Connection) -> str:
        sql = (
            f"EXPLAIN QUERY PLAN SELECT {INVOCATION_COLUMNS} FROM invocations WHERE {UNFINISHED} AND status = ?"
            " ORDER BY created_at_ms DESC, rowid DESC LIMIT ?"
        )
        return " | ".join(str(row["detail"]) for row in conn.execute(sql, ("paused", 10)))

    query_plan = await store.writer.run(plan)
    assert "invocations_unfinished (status=?)" in query_plan, query_plan
    with pytest.raises(sqlite3.IntegrityError):  # the budget never starts past the counter

        def bad(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE invocations SET attempts_at_resume = attempt + 1 WHERE id = 'inv-1'")

        await store.writer.run(bad)
