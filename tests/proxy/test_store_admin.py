"""The store verbs of the admin API (the JournalStore contract, every backend): listing invocations with
filters and keyset pagination, counting them, retrying one now, purging ended ones, removing a deployment."""

from __future__ import annotations

import msgspec
import pytest

from handler_sdk.protocol import HandlerManifest, Manifest, ServiceManifest
from proxy.store.base import (
    Effects,
    Ended,
    InvocationCursor,
    JournalStore,
    PromiseOp,
    PurgeResult,
    RemovedDeployment,
    StateOp,
)
from tests.proxy.helpers import BOOM, append, call, claim, new, status_of

# --------------------------------------------------------------------------- listing


async def ids(store: JournalStore, **filters: object) -> list[str]:
    return [i.id for i in await store.list_invocations(**filters)]  # type: ignore[arg-type]


async def test_list_invocations_filters(store: JournalStore) -> None:
    await store.create_invocation(new("a", service="greeter", handler="greet"), 1_000)
    await store.create_invocation(new("b", service="greeter", handler="wave"), 2_000)
    await store.create_invocation(new("c", service="cart", handler="add", key="k1", exclusive=True), 3_000)
    await store.create_invocation(new("d", service="cart", handler="add", key="k2", exclusive=True), 4_000)
    await store.create_invocation(new("e", service="greeter", handler="greet", run_at_ms=99_000), 5_000)
    await claim(store, "a", 6_000)
    assert await store.complete("a", 1, b"1", 6_001) is not None
    await claim(store, "b", 6_000)
    assert await store.fail("b", 1, BOOM, 6_002) is not None

    assert await ids(store) == ["e", "d", "c", "b", "a"]
    assert await ids(store, status="completed") == ["a"]
    assert await ids(store, status=["completed", "failed"]) == ["b", "a"]
    assert await ids(store, status=["pending", "scheduled"]) == ["e", "d", "c"]
    assert await ids(store, status=["failed", "scheduled"]) == ["e", "b"]  # ended and unfinished together
    assert await ids(store, status=[]) == []
    assert await ids(store, service="cart") == ["d", "c"]
    assert await ids(store, service="greeter", handler="greet") == ["e", "a"]
    assert await ids(store, handler="add") == ["d", "c"]
    assert await ids(store, service="cart", key="k1") == ["c"]
    assert await ids(store, key="k2") == ["d"]
    assert await ids(store, created_after_ms=2_000) == ["e", "d", "c"]  # strictly after
    assert await ids(store, created_before_ms=2_000) == ["a"]  # strictly before
    assert await ids(store, created_after_ms=1_000, created_before_ms=4_000) == ["c", "b"]
    assert await ids(store, service="greeter", status="pending") == []
    assert await ids(store, service="nobody") == []
    assert await ids(store, limit=0) == []
    with pytest.raises(ValueError, match="unknown invocation status"):
        await store.list_invocations(status="sleeping")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown invocation status"):
        await store.list_invocations(status=["pending", "nope"])  # type: ignore[list-item]


async def test_keyset_pages_follow_each_other_without_gaps_or_repeats(store: JournalStore) -> None:
    # Ties on the creation time are broken by id, so equal times never split or repeat across pages.
    for n in range(23):
        await store.create_invocation(new(f"inv-{n:02d}"), 1_000 + n // 4)
    expected = [i.id for i in await store.list_invocations(limit=1_000)]
    assert len(expected) == 23
    assert expected[:5] == ["inv-22", "inv-21", "inv-20", "inv-19", "inv-18"]

    pages: list[list[str]] = []
    cursor: InvocationCursor | None = None
    while True:
        page = await store.list_invocations(cursor=cursor, limit=5)
        if not page:
            break
        pages.append([i.id for i in page])
        cursor = (page[-1].created_at_ms, page[-1].id)
        if len(pages) == 1:
            # Invocations created meanwhile (newer, and one as old as the cursor but ordered before it)
            # never shift the pages: they are before the cursor.
            await store.create_invocation(new("inv-new"), 5_000)
            await store.create_invocation(new("inv-99"), 1_005)
    assert [len(p) for p in pages] == [5, 5, 5, 5, 3]
    assert [i for p in pages for i in p] == expected


async def test_keyset_pages_with_filters(store: JournalStore) -> None:
    for n in range(10):
        service = "odd" if n % 2 else "even"
        await store.create_invocation(new(f"i{n}", service=service), 1_000 + n)
    for n in (1, 3, 5):
        await claim(store, f"i{n}", 2_000)
        assert await store.complete(f"i{n}", 1, b"1", 2_001) is not None
    first = await store.list_invocations(service="odd", limit=2)
    assert [i.id for i in first] == ["i9", "i7"]
    rest = await ids(store, service="odd", cursor=(first[-1].created_at_ms, first[-1].id))
    assert rest == ["i5", "i3", "i1"]
    first = await store.list_invocations(status="completed", limit=2)
    assert [i.id for i in first] == ["i5", "i3"]
    assert await ids(store, status="completed", cursor=(first[-1].created_at_ms, first[-1].id)) == ["i1"]
    first = await store.list_invocations(status="pending", limit=3)
    assert [i.id for i in first] == ["i9", "i8", "i7"]
    assert await ids(store, status="pending", cursor=(first[-1].created_at_ms, first[-1].id)) == [
        "i6",
        "i4",
        "i2",
        "i0",
    ]


# --------------------------------------------------------------------------- counts


async def test_invocation_counts_and_pending_timers(store: JournalStore) -> None:
    counts = await store.invocation_counts()
    assert set(counts) == {
        "scheduled",
        "queued",
        "pending",
        "running",
        "suspended",
        "backing_off",
        "paused",
        "completed",
        "failed",
    }
    assert set(counts.values()) == {0}
    assert await store.pending_timer_count() == 0

    await store.create_invocation(new("later", run_at_ms=50_000), 1_000)  # a start timer
    await store.create_invocation(new("p1"), 1_000)
    await store.create_invocation(new("p2"), 1_000)
    await store.create_invocation(new("done"), 1_000)
    await claim(store, "done")
    assert await store.complete("done", 1, b"1", 2_000) is not None
    await store.create_invocation(new("napping"), 1_000)
    attempt = (await claim(store, "napping")).invocation.attempt
    await append(store, "napping", attempt, 0, "sleep", timer_at_ms=60_000)  # a sleep timer
    assert await store.suspend("napping", attempt, [0], 2_500) == "suspended"
    await store.create_invocation(new("retrying"), 1_000)
    await claim(store, "retrying")
    assert await store.backoff("retrying", 1, BOOM, 70_000, 2_600)  # a backoff timer

    counts = await store.invocation_counts()
    assert {s: n for s, n in counts.items() if n} == {
        "scheduled": 1,
        "pending": 2,
        "completed": 1,
        "suspended": 1,
        "backing_off": 1,
    }
    assert await store.pending_timer_count() == 3
    await store.fire_due_timers(65_000)
    assert await store.pending_timer_count() == 1


# --------------------------------------------------------------------------- retry now


async def test_retry_now_runs_a_backing_off_invocation_at_once(store: JournalStore) -> None:
    await store.create_invocation(new(), 1_000)
    await claim(store, "inv-1")
    assert await store.backoff("inv-1", 1, BOOM, 60_000, 1_600)
    assert await store.due_timers(100_000, 10) != []

    assert await store.retry_now("inv-1", 2_000) == ("retried", Effects(woken=["inv-1"]))
    retried = await store.get_invocation("inv-1")
    assert retried is not None
    assert (retried.status, retried.next_run_at_ms, retried.modified_at_ms) == ("pending", None, 2_000)
    assert retried.attempts_at_resume == 0  # the retry budget is not reset: the attempt counts
    assert await store.due_timers(100_000, 10) == []  # the start timer went with it
    assert await store.fire_timer("inv-1", -1, 60_000) == Effects()  # a timer already in memory does nothing
    again = await claim(store, "inv-1", 2_100)
    assert again.invocation.attempt == 2

    assert await store.retry_now("inv-1", 2_200) == ("not_retryable", Effects())  # running
    assert await store.retry_now("nope", 2_200) == ("not_found", Effects())


async def test_retry_now_resumes_a_paused_invocation_and_refuses_the_others(store: JournalStore) -> None:
    await store.create_invocation(new("paused"), 1_000)
    await claim(store, "paused")
    assert await store.pause("paused", 1, BOOM, 1_600)
    assert await store.retry_now("paused", 2_000) == ("resumed", Effects(woken=["paused"]))
    resumed = await store.get_invocation("paused")
    assert resumed is not None and (resumed.status, resumed.attempts_at_resume) == ("pending", 1)

    await store.create_invocation(new("scheduled", run_at_ms=9_000), 1_000)
    await store.create_invocation(new("done"), 1_000)
    await claim(store, "done")
    assert await store.complete("done", 1, b"1", 1_700) is not None
    for invocation_id, status in (("scheduled", "scheduled"), ("done", "completed")):
        assert await store.retry_now(invocation_id, 2_000) == ("not_retryable", Effects())
        assert await status_of(store, invocation_id) == status
    assert await store.due_timers(100_000, 10) != []  # the delayed start keeps its timer


# --------------------------------------------------------------------------- purge


async def gone(store: JournalStore, invocation_id: str) -> bool:
    return (
        await store.get_invocation(invocation_id) is None
        and await store.get_journal(invocation_id) == []
        and await store.get_attempts(invocation_id) == []
        and await store.get_completions(invocation_id, [0, 1, 2]) == []
    )


async def ended(store: JournalStore, invocation_id: str, now_ms: int, *, failed: bool = False, **kw: object) -> None:
    """An invocation with a journal entry, a completion and an attempt, ended at ``now_ms``."""
    await store.create_invocation(new(invocation_id, **kw), now_ms - 100)  # type: ignore[arg-type]
    attempt = (await claim(store, invocation_id, now_ms - 50)).invocation.attempt
    await append(store, invocation_id, attempt, 0, "awakeable", now_ms - 40)
    await store.complete_entry(invocation_id, 0, now_ms - 30, result=b"1")
    if failed:
        assert await store.fail(invocation_id, attempt, BOOM, now_ms) is not None
    else:
        assert await store.complete(invocation_id, attempt, b'"ok"', now_ms) is not None


async def test_purge_one_ended_invocation(store: JournalStore) -> None:
    await ended(store, "done", 2_000)
    await ended(store, "kept", 2_000)
    await store.create_invocation(new("waiting"), 1_000)
    assert await store.purge_invocation("done") == ("purged", 1)
    assert await gone(store, "done")
    assert await store.get_invocation("kept") is not None and len(await store.get_journal("kept")) == 1
    assert await store.purge_invocation("done") == ("not_found", 0)
    assert await store.purge_invocation("waiting") == ("not_ended", 0)
    await claim(store, "waiting")
    assert await store.purge_invocation("waiting") == ("not_ended", 0)
    assert await status_of(store, "waiting") == "running"


async def test_purging_a_caller_or_a_callee_breaks_neither_link(store: JournalStore) -> None:
    # A caller that failed while its callee runs on, then purged: the callee's end completes nothing.
    await store.create_invocation(new("caller"), 1_000)
    attempt = (await claim(store, "caller")).invocation.attempt
    await call(store, "caller", attempt, 0, "callee")
    assert await store.fail("caller", attempt, BOOM, 2_100) is not None
    assert await store.purge_invocation("caller") == ("purged", 1)
    callee = await claim(store, "callee", 2_150)
    effects = await store.complete("callee", callee.invocation.attempt, b"0", 2_160)
    assert effects == Effects(ended=[Ended(invocation_id="callee", output=b"0")])
    assert await gone(store, "caller")
    # The same with a send.
    await store.create_invocation(new("caller2"), 1_000)
    attempt = (await claim(store, "caller2")).invocation.attempt
    await append(store, "caller2", attempt, 0, "send", child=new("sent", parent=("caller2", 0)))
    assert await store.complete("caller2", attempt, b"1", 2_200) is not None
    assert await store.purge_invocation("caller2") == ("purged", 1)
    sent = await claim(store, "sent", 2_300)
    assert sent.invocation.parent_id == "caller2"  # kept: parent links are not foreign keys
    effects = await store.complete("sent", sent.invocation.attempt, b"2", 2_400)
    assert effects is not None and [e.invocation_id for e in effects.ended] == ["sent"]

    # A callee purged after its end: the caller keeps the completion its end wrote, and runs on.
    await store.create_invocation(new("parent"), 3_000)
    attempt = (await claim(store, "parent", 3_001)).invocation.attempt
    await call(store, "parent", attempt, 0, "child")
    child = await claim(store, "child", 3_100)
    assert await store.complete("child", child.invocation.attempt, b'"child says hi"', 3_200) is not None
    assert await store.purge_invocation("child") == ("purged", 1)
    assert [(c.index, c.result) for c in await store.get_completions("parent", [0])] == [(0, b'"child says hi"')]
    assert await store.complete("parent", attempt, b"3", 3_300) is not None


WORKFLOW = "signup"


async def workflow_run(store: JournalStore, key: str, ended_at_ms: int) -> str:
    """A workflow's run that set state and completed a promise, ended at ``ended_at_ms``."""
    run_id = f"run-{key}"
    await store.create_invocation(
        new(run_id, service=WORKFLOW, handler="run", key=key, idempotency_key="run", exclusive=True), ended_at_ms - 500
    )
    attempt = (await claim(store, run_id, ended_at_ms - 400)).invocation.attempt
    await append(store, run_id, attempt, 0, "set_state", state_op=StateOp(op="set", name="n", value=b"1"))
    op = PromiseOp(op="complete", name="p", value=b'"v"')
    await append(store, run_id, attempt, 1, "complete_promise", promise_op=op)
    assert await store.complete(run_id, attempt, b'"done"', ended_at_ms) is not None
    return run_id


async def test_purging_a_workflow_run_takes_its_key_along(store: JournalStore) -> None:
    run_1 = await workflow_run(store, "w1", 2_000)
    await ended(store, "signal-1", 2_100, service=WORKFLOW, handler="approve", key="w1")
    run_2 = await workflow_run(store, "w2", 2_000)
    await store.create_invocation(new("signal-2", service=WORKFLOW, handler="approve", key="w2"), 2_500)

    # Not named as a workflow: the run is purged alone, and the key's state and promises stay.
    assert await store.purge_invocation("signal-1", workflow_services=[WORKFLOW]) == ("purged", 1)
    assert await store.get_state(WORKFLOW, "w1") == {"n": b"1"}
    await ended(store, "signal-1b", 2_200, service=WORKFLOW, handler="approve", key="w1")
    assert await store.purge_invocation(run_1, workflow_services=[WORKFLOW]) == ("purged", 2)
    for invocation_id in (run_1, "signal-1b"):
        assert await gone(store, invocation_id)
    status = await store.key_status(WORKFLOW, "w1")
    assert (status.state, status.promises) == ({}, [])

    # A key with an unfinished invocation keeps its run.
    assert await store.purge_invocation(run_2, workflow_services=[WORKFLOW]) == ("workflow_busy", 0)
    assert await store.get_invocation(run_2) is not None
    assert await store.get_state(WORKFLOW, "w2") == {"n": b"1"}


async def test_a_run_handler_of_a_service_that_is_no_workflow_is_purged_alone(store: JournalStore) -> None:
    run_id = await workflow_run(store, "k1", 2_000)
    assert await store.purge_invocation(run_id) == ("purged", 1)  # no workflow services named
    assert await store.get_state(WORKFLOW, "k1") == {"n": b"1"}
    assert [p.name for p in (await store.key_status(WORKFLOW, "k1")).promises] == ["p"]


async def test_bulk_purge_by_status_service_and_end_time_in_batches(store: JournalStore) -> None:
    for n in range(7):
        await ended(store, f"ok-{n}", 2_000 + n)
    for n in range(3):
        await ended(store, f"bad-{n}", 2_000 + n, failed=True)
    await ended(store, "other", 2_000, service="billing")
    await ended(store, "recent", 9_000)
    await store.create_invocation(new("waiting"), 1_000)

    assert await store.purge_invocations(statuses=["failed"], ended_before_ms=5_000) == PurgeResult(
        purged=3, more=False
    )
    assert await ids(store, status="failed") == []

    seen: list[PurgeResult] = []
    while True:
        result = await store.purge_invocations(service="greeter", ended_before_ms=5_000, limit=3)
        seen.append(result)
        if not result.more:
            break
    assert seen == [
        PurgeResult(purged=3, more=True),
        PurgeResult(purged=3, more=True),
        PurgeResult(purged=1, more=False),
    ]
    assert sorted(await ids(store)) == ["other", "recent", "waiting"]
    for n in range(7):
        assert await gone(store, f"ok-{n}")
    assert await store.purge_invocations(ended_before_ms=10_000) == PurgeResult(purged=2, more=False)
    assert await ids(store) == ["waiting"]
    assert await store.purge_invocations() == PurgeResult(purged=0, more=False)

    with pytest.raises(ValueError, match="only ended invocations"):
        await store.purge_invocations(statuses=["completed", "pending"])
    with pytest.raises(ValueError, match="unknown invocation status"):
        await store.purge_invocations(statuses=["gone"])  # type: ignore[list-item]


async def test_bulk_purge_takes_workflow_keys_along_and_leaves_busy_ones(store: JournalStore) -> None:
    run_1 = await workflow_run(store, "w1", 2_000)
    await ended(store, "signal-1", 2_100, service=WORKFLOW, handler="approve", key="w1")
    run_2 = await workflow_run(store, "w2", 2_000)
    await store.create_invocation(new("signal-2", service=WORKFLOW, handler="approve", key="w2"), 2_500)
    await ended(store, "plain", 2_000)

    results = [await store.purge_invocations(limit=1, workflow_services=[WORKFLOW])]
    while results[-1].more:
        results.append(await store.purge_invocations(limit=1, workflow_services=[WORKFLOW]))
    assert len(results) > 1
    assert sum(r.purged for r in results) == 3  # run-w1 with signal-1, and plain; run-w2 is left out, never looping
    for invocation_id in (run_1, "signal-1", "plain"):
        assert await gone(store, invocation_id)
    assert (await store.key_status(WORKFLOW, "w1")).state == {}
    assert await store.get_invocation(run_2) is not None
    assert await store.get_state(WORKFLOW, "w2") == {"n": b"1"}


# --------------------------------------------------------------------------- deployments


def manifest(*services: str, sdk: str = "v1") -> bytes:
    return msgspec.json.encode(
        Manifest(sdk=sdk, services=[ServiceManifest(name=s, handlers=[HandlerManifest(name="run")]) for s in services])
    )


async def test_remove_deployment_only_when_nothing_needs_it(store: JournalStore) -> None:
    await store.register_deployment("dp-1", "http://h1", manifest("greeter", "billing"), 1_000)
    await store.create_invocation(new("pinned"), 1_100)  # deployment "dp-1" (see helpers.new)
    assert await store.remove_deployment("dp-1") == RemovedDeployment(
        outcome="in_use", services=["billing", "greeter"], unfinished=1
    )
    # New code for both services: they move to dp-2, but an invocation is still pinned to dp-1.
    await store.register_deployment("dp-2", "http://h2", manifest("greeter", "billing", sdk="v2"), 2_000)
    assert await store.remove_deployment("dp-1") == RemovedDeployment(outcome="in_use", unfinished=1)
    await claim(store, "pinned", 2_100)
    assert await store.complete("pinned", 1, b"1", 2_200) is not None
    assert await store.remove_deployment("dp-1") == RemovedDeployment(outcome="removed")
    assert await store.get_deployment("dp-1") is None
    assert [(d.id, d.endpoints) for d in await store.list_deployments()] == [("dp-2", ["http://h2"])]
    assert (await store.get_invocation("pinned")) is not None  # ended invocations stay
    assert await store.remove_deployment("dp-1") == RemovedDeployment(outcome="not_found")
    # The endpoint of the removed deployment may be registered again, as a new deployment.
    again = await store.register_deployment("dp-3", "http://h1", manifest("greeter", "billing"), 3_000)
    assert (again.id, again.endpoints) == ("dp-3", ["http://h1"])
