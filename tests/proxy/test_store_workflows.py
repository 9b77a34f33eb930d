"""Workflows: finding a run by its idempotency key, and purging the keys whose run ended long ago
(the JournalStore contract, every backend), plus the indices behind it (SQLite)."""

from __future__ import annotations

import sqlite3

import pytest

from proxy.store._ops_keys import PURGEABLE_SQL
from proxy.store.base import JournalStore, NewInvocation, PromiseOp, StateOp
from proxy.store.sqlite import SQLiteStore
from tests.proxy.helpers import BOOM, append, claim, new

WORKFLOW = "signup"


def run(key: str, service: str = WORKFLOW) -> NewInvocation:
    return new(f"run-{service}-{key}", service=service, handler="run", key=key, idempotency_key="run", exclusive=True)


def signal(invocation_id: str, key: str) -> NewInvocation:
    return new(invocation_id, service=WORKFLOW, handler="approve", key=key)


async def started(store: JournalStore, invocation: NewInvocation, now_ms: int) -> int:
    created = await store.create_invocation(invocation, now_ms)
    assert created.created
    return (await claim(store, invocation.id, now_ms + 1)).invocation.attempt


async def finished_run(store: JournalStore, key: str, ended_at_ms: int, *, failed: bool = False) -> str:
    """A run that set some state, completed a promise, and ended at ``ended_at_ms``."""
    invocation = run(key)
    attempt = await started(store, invocation, ended_at_ms - 500)
    await append(store, invocation.id, attempt, 0, "set_state", state_op=StateOp(op="set", name="n", value=b"1"))
    op = PromiseOp(op="complete", name="p", value=b'"v"')
    await append(store, invocation.id, attempt, 1, "complete_promise", promise_op=op)
    await append(store, invocation.id, attempt, 2, "sleep", timer_at_ms=ended_at_ms + 100_000)
    if failed:
        assert await store.fail(invocation.id, attempt, BOOM, ended_at_ms) is not None
    else:
        assert await store.complete(invocation.id, attempt, b'"done"', ended_at_ms) is not None
    return invocation.id


async def gone(store: JournalStore, invocation_id: str) -> bool:
    return (
        await store.get_invocation(invocation_id) is None
        and await store.get_journal(invocation_id) == []
        and await store.get_attempts(invocation_id) == []
        and await store.get_completions(invocation_id, [0, 1, 2]) == []
    )


async def test_find_by_idempotency_key(store: JournalStore) -> None:
    await store.create_invocation(run("w1"), 1_000)
    await store.create_invocation(new("plain", idempotency_key="once"), 1_001)
    found = await store.find_by_idempotency_key(WORKFLOW, "run", "w1", "run")
    assert found is not None and (found.id, found.exclusive, found.status) == (f"run-{WORKFLOW}-w1", True, "pending")
    plain = await store.find_by_idempotency_key("greeter", "greet", None, "once")
    assert plain is not None and plain.id == "plain"
    assert await store.find_by_idempotency_key(WORKFLOW, "run", "w2", "run") is None
    assert await store.find_by_idempotency_key(WORKFLOW, "approve", "w1", "run") is None
    # A second run of the same key is the first one.
    again = await store.create_invocation(
        new("other-id", service=WORKFLOW, handler="run", key="w1", idempotency_key="run", exclusive=True), 2_000
    )
    assert not again.created and again.invocation.id == f"run-{WORKFLOW}-w1"


async def test_purge_removes_ended_workflow_keys_and_keeps_unfinished_ones(store: JournalStore) -> None:
    w1 = await finished_run(store, "w1", 2_000)
    s1 = signal("s1", "w1")
    s1_attempt = await started(store, s1, 2_100)
    await append(store, "s1", s1_attempt, 0, "peek_promise", promise_op=PromiseOp(op="peek", name="p"))
    assert await store.complete("s1", s1_attempt, b"1", 2_200) is not None
    w2 = await finished_run(store, "w2", 3_000, failed=True)
    # w3: its run ended, but a signal of the key is still running.
    w3 = await finished_run(store, "w3", 2_500)
    await started(store, signal("s3", "w3"), 2_600)
    # w4: its run still runs. w5: ended after the cut-off.
    w4 = run("w4")
    await started(store, w4, 1_000)
    w5 = await finished_run(store, "w5", 9_000)
    # The same key in another workflow service.
    other_run = run("w1", service="billing")
    other_attempt = await started(store, other_run, 1_000)
    await append(store, other_run.id, other_attempt, 0, "set_state", state_op=StateOp(op="set", name="n", value=b"2"))
    assert await store.complete(other_run.id, other_attempt, b"1", 1_100) is not None

    assert await store.purge_workflows(WORKFLOW, 5_000) == 2
    for invocation_id in (w1, "s1", w2):
        assert await gone(store, invocation_id), invocation_id
    for key in ("w1", "w2"):
        status = await store.key_status(WORKFLOW, key)
        assert (status.state, status.promises, status.lock_holder, status.queue) == ({}, [], None, [])
        assert await store.find_by_idempotency_key(WORKFLOW, "run", key, "run") is None
    # Kept: w3 (unfinished signal), w4 (running), w5 (too recent), and billing's w1.
    for invocation_id in (w3, "s3", w4.id, w5, other_run.id):
        assert await store.get_invocation(invocation_id) is not None, invocation_id
    assert len(await store.get_journal(w3)) == 3
    assert await store.get_state(WORKFLOW, "w3") == {"n": b"1"}
    assert [p.name for p in (await store.key_status(WORKFLOW, "w5")).promises] == ["p"]
    assert await store.get_state("billing", "w1") == {"n": b"2"}
    assert (await store.key_status(WORKFLOW, "w4")).lock_holder == w4.id

    assert await store.purge_workflows(WORKFLOW, 5_000) == 0
    # A purged key starts afresh: a new run is a new invocation.
    assert (await store.create_invocation(run("w1"), 10_000)).created
    assert await store.purge_workflows(WORKFLOW, 100_000) == 1  # w5 (w1's new run has not ended)


async def test_purge_takes_the_oldest_first_up_to_the_limit(store: JournalStore) -> None:
    ids = [await finished_run(store, f"w{n}", 5_000 - n * 100) for n in range(5)]
    assert await store.purge_workflows(WORKFLOW, 10_000, limit=2) == 2
    assert [await store.get_invocation(i) is None for i in ids] == [False, False, False, True, True]
    assert await store.purge_workflows(WORKFLOW, 10_000, limit=0) == 0
    assert await store.purge_workflows(WORKFLOW, 10_000) == 3
    assert await store.purge_workflows("no-such-service", 10_000) == 0


async def test_purge_needs_the_run_to_have_ended(store: JournalStore) -> None:
    # A key with only shared handlers (no run) is not a finished workflow.
    attempt = await started(store, signal("s1", "w1"), 1_000)
    assert await store.complete("s1", attempt, b"1", 1_100) is not None
    # A scheduled or queued run has not ended either.
    await store.create_invocation(
        new("later", service=WORKFLOW, handler="run", key="w2", idempotency_key="run", run_at_ms=50_000), 1_000
    )
    assert await store.purge_workflows(WORKFLOW, 100_000) == 0
    assert await store.get_invocation("s1") is not None


# --------------------------------------------------------------------------- the schema behind it (SQLite)


async def test_the_purge_finds_its_keys_through_indices(store: JournalStore) -> None:
    if not isinstance(store, SQLiteStore):
        pytest.skip("a detail of the SQLite schema")

    def plan(conn: sqlite3.Connection) -> str:
        rows = conn.execute(f"EXPLAIN QUERY PLAN {PURGEABLE_SQL}", (WORKFLOW, 5_000, 10))
        return " | ".join(str(row["detail"]) for row in rows)

    query_plan = await store.writer.run(plan)
    assert "USING INDEX invocations_workflow_runs (service=? AND completed_at_ms<?)" in query_plan, query_plan
    assert "USING INDEX invocations_by_key (service=? AND key=?)" in query_plan, query_plan
    assert "SCAN" not in query_plan and "TEMP B-TREE" not in query_plan, query_plan
