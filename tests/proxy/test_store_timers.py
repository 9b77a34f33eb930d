"""Durable timers: sleeps, delayed starts and retry backoffs (the JournalStore contract), and the timer index."""

from __future__ import annotations

import random
import sqlite3

import pytest

from proxy.store._ops import DUE_TIMERS_SQL, RUNNABLE_SQL
from proxy.store._ops_cancel import CASCADE_SQL
from proxy.store.base import CompletionRow, Effects, JournalStore, TimerRow
from proxy.store.sqlite import SQLiteStore
from tests.proxy.helpers import BOOM, append, claim, new, start, status_of


def sqlite_of(store: JournalStore) -> SQLiteStore:
    if not isinstance(store, SQLiteStore):
        pytest.skip("a detail of the SQLite schema")
    return store


async def test_a_sleep_timer_completes_the_entry_and_wakes_it(store: JournalStore) -> None:
    attempt = await start(store)
    result = await append(store, "inv-1", attempt, 0, "sleep", timer_at_ms=5_000)
    assert result.effects == Effects()
    assert await store.due_timers(5_000, 10) == []  # due *before* 5_000: not yet
    assert await store.due_timers(5_001, 10) == [TimerRow(invocation_id="inv-1", index=0, due_at_ms=5_000)]
    assert await store.suspend("inv-1", attempt, [0], 2_500) == "suspended"

    assert await store.fire_timer("inv-1", 0, 5_002) == Effects(woken=["inv-1"], notified=["inv-1"])
    assert await store.get_completions("inv-1", [0]) == [CompletionRow(index=0, result=None, created_at_ms=5_002)]
    assert await status_of(store, "inv-1") == "pending"
    assert await store.due_timers(10_000, 10) == []
    assert await store.fire_timer("inv-1", 0, 5_003) == Effects()  # fired already: nothing happens


async def test_a_sleep_already_completed_is_left_alone_by_its_timer(store: JournalStore) -> None:
    attempt = await start(store)
    await append(store, "inv-1", attempt, 0, "sleep", timer_at_ms=5_000)
    assert (await store.complete_entry("inv-1", 0, 3_000, result=b'"early"'))[0] == "completed"
    assert await store.fire_timer("inv-1", 0, 5_000) == Effects()
    assert await store.get_completions("inv-1", [0]) == [CompletionRow(index=0, result=b'"early"', created_at_ms=3_000)]


async def test_fire_timer_on_a_vanished_timer_does_nothing(store: JournalStore) -> None:
    assert await store.fire_timer("unknown", -1, 1_000) == Effects()
    attempt = await start(store)
    assert await store.backoff("inv-1", attempt, BOOM, 7_000, 2_000)
    await claim(store, "inv-1", 3_000)  # claimed before the backoff ran out: its timer goes
    assert await store.due_timers(10_000, 10) == []
    assert await store.fire_timer("inv-1", -1, 7_000) == Effects()
    assert await status_of(store, "inv-1") == "running"


async def test_backoff_sets_a_start_timer(store: JournalStore) -> None:
    attempt = await start(store)
    assert await store.backoff("inv-1", attempt, BOOM, 7_000, 2_000)
    assert await store.due_timers(10_000, 10) == [TimerRow(invocation_id="inv-1", index=-1, due_at_ms=7_000)]
    assert await store.claim("inv-1", None, 2_500) is not None  # claimable early, as before
    assert await store.backoff("inv-1", attempt + 1, BOOM, 9_000, 3_000)
    assert await store.due_timers(10_000, 10) == [TimerRow(invocation_id="inv-1", index=-1, due_at_ms=9_000)]
    assert await store.list_runnable() == []

    assert await store.fire_timer("inv-1", -1, 9_000) == Effects(woken=["inv-1"])
    inv = await store.get_invocation("inv-1")
    assert inv is not None and (inv.status, inv.next_run_at_ms) == ("pending", 9_000)
    assert await store.list_runnable() == ["inv-1"]
    again = await claim(store, "inv-1", 9_001)
    assert (again.invocation.attempt, again.invocation.next_run_at_ms) == (3, None)


async def test_a_delayed_child_is_scheduled_with_a_timer(store: JournalStore) -> None:
    attempt = await start(store, "parent")
    late = new("late", parent=("parent", 0), run_at_ms=9_000)
    soon = new("soon", parent=("parent", 1), run_at_ms=7_000)
    assert (await append(store, "parent", attempt, 0, "send", child=late)).effects == Effects()
    assert (await append(store, "parent", attempt, 1, "send", child=soon)).effects == Effects()
    await append(store, "parent", attempt, 2, "sleep", timer_at_ms=8_000)
    scheduled = await store.get_invocation("late")
    assert scheduled is not None and (scheduled.status, scheduled.next_run_at_ms) == ("scheduled", 9_000)
    assert await store.claim("late", None, 2_500) is None
    assert await store.list_runnable() == []
    assert [i.id for i in await store.list_invocations(status="scheduled")] == ["soon", "late"]

    assert await store.due_timers(10_000, 10) == [
        TimerRow(invocation_id="soon", index=-1, due_at_ms=7_000),
        TimerRow(invocation_id="parent", index=2, due_at_ms=8_000),
        TimerRow(invocation_id="late", index=-1, due_at_ms=9_000),
    ]
    assert [t.due_at_ms for t in await store.due_timers(10_000, 2)] == [7_000, 8_000]
    assert [t.due_at_ms for t in await store.due_timers(9_000, 10)] == [7_000, 8_000]

    assert await store.fire_timer("late", -1, 9_000) == Effects(woken=["late"])
    assert await store.list_runnable() == ["late"]
    started = await claim(store, "late", 9_001)
    assert (started.invocation.attempt, started.invocation.parent_id) == (1, "parent")


async def test_create_invocation_with_a_start_time_is_scheduled(store: JournalStore) -> None:
    created = await store.create_invocation(new("later", run_at_ms=60_000), 1_000)
    assert (created.invocation.status, created.invocation.next_run_at_ms) == ("scheduled", 60_000)
    assert await store.due_timers(60_001, 10) == [TimerRow(invocation_id="later", index=-1, due_at_ms=60_000)]
    assert await store.list_runnable() == []


async def test_an_ended_invocation_loses_its_timers(store: JournalStore) -> None:
    attempt = await start(store)
    await append(store, "inv-1", attempt, 0, "sleep", timer_at_ms=5_000)
    await append(store, "inv-1", attempt, 1, "sleep", timer_at_ms=6_000)
    assert len(await store.due_timers(10_000, 10)) == 2
    assert await store.complete("inv-1", attempt, b"1", 3_000) is not None
    assert await store.due_timers(10_000, 10) == []


# --------------------------------------------------------------------------- the schema behind it (SQLite)


def plan(conn: sqlite3.Connection, sql: str, *params: object) -> str:
    return " | ".join(str(row["detail"]) for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))


async def test_100k_timers_are_found_through_the_due_time_index(store: JournalStore) -> None:
    sqlite_store = sqlite_of(store)
    await store.create_invocation(new("sleeper"), 1_000)
    rng = random.Random(42)
    due = [rng.randrange(0, 10_000_000) for _ in range(100_000)]

    def insert(conn: sqlite3.Connection) -> None:
        conn.executemany(
            "INSERT INTO timers (invocation_id, idx, due_at_ms) VALUES ('sleeper', ?, ?)", list(enumerate(due))
        )

    await sqlite_store.writer.run(insert)
    before = 5_000_000
    expected = sorted((at, index) for index, at in enumerate(due) if at < before)[:100]
    got = await store.due_timers(before, 100)
    assert [(t.due_at_ms, t.index) for t in got] == expected
    assert all(t.invocation_id == "sleeper" for t in got)

    query_plan = await sqlite_store.writer.run(lambda conn: plan(conn, DUE_TIMERS_SQL, before, 100))
    # A range search on the index, already in due order: no scan of the table, no sort.
    assert "USING COVERING INDEX timers_by_due (due_at_ms<?)" in query_plan, query_plan
    assert "TEMP B-TREE" not in query_plan and "SCAN" not in query_plan, query_plan


async def test_the_scheduler_queries_use_their_indices(store: JournalStore) -> None:
    sqlite_store = sqlite_of(store)

    def plans(conn: sqlite3.Connection) -> tuple[str, str]:
        return plan(conn, RUNNABLE_SQL), plan(conn, CASCADE_SQL, "inv-1")

    runnable, cascade = await sqlite_store.writer.run(plans)
    assert "invocations_unfinished (status=?)" in runnable and "TEMP B-TREE" not in runnable, runnable
    assert "invocations_by_parent (parent_id=?)" in cascade, cascade
