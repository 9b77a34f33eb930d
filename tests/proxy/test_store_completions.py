"""Completions, suspension, and calls between invocations (the JournalStore contract, every backend)."""

from __future__ import annotations

import pytest

from proxy.store.base import CompletionRow, Effects, Ended, JournalStore, StoredFailure
from tests.proxy.helpers import BOOM, append, call, claim, new, start, status_of

NO_SUCH_USER = StoredFailure(code=404, message="no such user")

# --------------------------------------------------------------------------- suspend and complete_entry


async def test_suspend_then_a_completion_wakes_it(store: JournalStore) -> None:
    attempt = await start(store)
    await append(store, "inv-1", attempt, 0, "awakeable")
    await append(store, "inv-1", attempt, 1, "run")
    assert await store.suspend("inv-1", attempt, [0], 3_000) == "suspended"
    suspended = await store.get_invocation("inv-1")
    assert suspended is not None and (suspended.status, suspended.waiting_on) == ("suspended", [0])
    assert [(a.outcome, a.ended_at_ms, a.failure) for a in await store.get_attempts("inv-1")] == [
        ("suspended", 3_000, None)
    ]
    assert await store.claim("inv-1", None, 3_001) is None  # waits for its completion
    assert await store.list_runnable() == []
    assert await store.list_invocations(status="suspended") == [suspended]

    outcome, effects = await store.complete_entry("inv-1", 0, 4_000, result=b'"hello"', kind="awakeable")
    assert (outcome, effects) == ("completed", Effects(woken=["inv-1"], notified=["inv-1"]))
    woken = await store.get_invocation("inv-1")
    assert woken is not None and (woken.status, woken.waiting_on, woken.attempt) == ("pending", None, attempt)
    assert await store.list_runnable() == ["inv-1"]
    assert await store.complete_entry("inv-1", 0, 4_001, result=b'"again"') == ("already_completed", Effects())

    again = await claim(store, "inv-1", 5_000)
    assert (again.invocation.attempt, again.invocation.waiting_on, again.invocation.cancel_requested) == (
        2,
        None,
        False,
    )
    assert [r.index for r in again.journal] == [0, 1]
    assert again.completions == [CompletionRow(index=0, result=b'"hello"', created_at_ms=4_000)]


async def test_a_completion_it_does_not_wait_on_does_not_wake_it(store: JournalStore) -> None:
    attempt = await start(store)
    await append(store, "inv-1", attempt, 0, "awakeable")
    await append(store, "inv-1", attempt, 1, "awakeable")
    assert await store.suspend("inv-1", attempt, [0], 3_000) == "suspended"
    assert await store.complete_entry("inv-1", 1, 4_000) == ("completed", Effects(notified=["inv-1"]))
    assert await status_of(store, "inv-1") == "suspended"


async def test_suspend_resumes_when_a_completion_is_already_there(store: JournalStore) -> None:
    attempt = await start(store)
    await append(store, "inv-1", attempt, 0, "awakeable")
    await append(store, "inv-1", attempt, 1, "awakeable")
    # Completed while the attempt was still running: only a notification.
    assert await store.complete_entry("inv-1", 1, 2_500, failure=NO_SUCH_USER) == (
        "completed",
        Effects(notified=["inv-1"]),
    )
    assert await store.suspend("inv-1", attempt, [0, 1], 3_000) == "resume"
    resumed = await store.get_invocation("inv-1")
    assert resumed is not None and (resumed.status, resumed.waiting_on) == ("pending", None)
    assert await store.list_runnable() == ["inv-1"]
    assert [a.outcome for a in await store.get_attempts("inv-1")] == ["resumed"]
    # Waiting on nothing also means: run again now.
    attempt = (await claim(store, "inv-1", 3_001)).invocation.attempt
    assert await store.suspend("inv-1", attempt, [], 3_002) == "resume"
    assert await status_of(store, "inv-1") == "pending"


async def test_a_stale_attempt_cannot_suspend(store: JournalStore) -> None:
    stale = await start(store)
    await append(store, "inv-1", stale, 0, "awakeable")
    await store.abandon_running(2_000)
    assert await store.suspend("inv-1", stale, [0], 2_001) == "fenced"  # pending, not running
    current = (await claim(store, "inv-1", 2_002)).invocation.attempt
    assert await store.suspend("inv-1", stale, [0], 2_003) == "fenced"
    assert await store.suspend("unknown", 1, [0], 2_003) == "fenced"
    inv = await store.get_invocation("inv-1")
    assert inv is not None and (inv.status, inv.attempt, inv.waiting_on) == ("running", current, None)
    assert await store.suspend("inv-1", current, [0, 0], 2_004) == "suspended"
    inv = await store.get_invocation("inv-1")
    assert inv is not None and inv.waiting_on == [0]


async def test_complete_entry_only_completes_existing_completable_entries(store: JournalStore) -> None:
    attempt = await start(store)
    await append(store, "inv-1", attempt, 0, "run")
    await append(store, "inv-1", attempt, 1, "awakeable")
    await append(store, "inv-1", attempt, 2, "sleep")
    not_found = ("not_found", Effects())
    assert await store.complete_entry("unknown", 0, 3_000) == not_found
    assert await store.complete_entry("inv-1", 3, 3_000) == not_found  # past the journal
    assert await store.complete_entry("inv-1", 0, 3_000) == not_found  # a run is complete when appended
    assert await store.complete_entry("inv-1", 1, 3_000, kind="call") == not_found  # of another kind
    assert await store.get_completions("inv-1", [0, 1, 2, 3]) == []

    assert (await store.complete_entry("inv-1", 1, 3_001, failure=NO_SUCH_USER, kind="awakeable"))[0] == "completed"
    assert (await store.complete_entry("inv-1", 2, 3_002))[0] == "completed"
    assert await store.get_completions("inv-1", [2, 1, 7]) == [
        CompletionRow(index=1, failure=NO_SUCH_USER, created_at_ms=3_001),
        CompletionRow(index=2, created_at_ms=3_002),
    ]
    assert await store.get_completions("inv-1", []) == []
    with pytest.raises(ValueError, match="not both"):
        await store.complete_entry("inv-1", 1, 3_003, result=b"1", failure=BOOM)


async def test_complete_entry_does_not_wake_an_ended_invocation(store: JournalStore) -> None:
    attempt = await start(store)
    await append(store, "inv-1", attempt, 0, "awakeable")
    assert await store.complete("inv-1", attempt, b"1", 2_500) is not None
    outcome, effects = await store.complete_entry("inv-1", 0, 3_000, result=b"2")
    assert outcome == "completed" and effects.woken == []
    assert await status_of(store, "inv-1") == "completed"


# --------------------------------------------------------------------------- append with effects


async def test_append_with_a_completion_completes_the_entry_at_once(store: JournalStore) -> None:
    attempt = await start(store)
    failed_call = CompletionRow(index=0, failure=StoredFailure(code=404, message="unknown service"))
    result = await append(store, "inv-1", attempt, 0, "call", completion=failed_call)
    assert result.effects == Effects(notified=["inv-1"])
    assert await store.get_completions("inv-1", [0]) == [
        CompletionRow(index=0, failure=failed_call.failure, created_at_ms=2_000)
    ]
    assert await store.suspend("inv-1", attempt, [0], 3_000) == "resume"
    with pytest.raises(ValueError, match="entry 0"):
        await store.append("inv-1", attempt, 1, "call", "c", b"C", 3_001, completion=failed_call)


async def test_a_call_child_is_created_once_even_with_a_duplicate_append(store: JournalStore) -> None:
    attempt = await start(store, "parent")
    child = new("child", parent=("parent", 0), awaits=True, input=b'"bob"')
    first = await store.append("parent", attempt, 0, "call", "greet", b"CALL", 2_000, child=child)
    assert (first.outcome, first.effects) == ("appended", Effects(woken=["child"]))
    created = await store.get_invocation("child")
    assert created is not None
    assert (created.status, created.input, created.created_at_ms) == ("pending", b'"bob"', 2_000)
    assert (created.parent_id, created.parent_index, created.parent_awaits) == ("parent", 0, True)

    # The ack was lost and the SDK retries: the same entry, nothing applied twice.
    retried = await store.append("parent", attempt, 0, "call", "greet", b"CALL", 2_100, child=child)
    assert (retried.outcome, retried.effects) == ("duplicate", Effects())
    assert await store.get_invocation("child") == created
    assert sorted(i.id for i in await store.list_invocations()) == ["child", "parent"]
    assert await store.list_runnable() == ["child"]


async def test_the_child_is_linked_to_the_entry_that_starts_it(store: JournalStore) -> None:
    attempt = await start(store, "parent")
    unlinked = new("child")  # the parent link is the appending entry, filled in when left out
    await store.append("parent", attempt, 0, "send", "s", b"SEND", 2_000, child=unlinked)
    child = await store.get_invocation("child")
    assert child is not None and (child.parent_id, child.parent_index, child.parent_awaits) == ("parent", 0, False)
    with pytest.raises(ValueError, match="parent"):
        await store.append("parent", attempt, 1, "call", "c", b"C", 2_001, child=new("other", parent=("parent", 7)))
    with pytest.raises(ValueError, match="parent"):
        await store.create_invocation(new("orphan", awaits=True), 2_002)
    assert await store.get_invocation("other") is None


async def test_the_end_of_a_call_completes_the_callers_entry_and_wakes_it(store: JournalStore) -> None:
    attempt = await start(store, "parent")
    await call(store, "parent", attempt, 0, "ok-child")
    await call(store, "parent", attempt, 1, "bad-child")
    assert await store.suspend("parent", attempt, [0, 1], 2_500) == "suspended"

    ok_attempt = (await claim(store, "ok-child", 3_000)).invocation.attempt
    assert await store.complete("ok-child", ok_attempt, b'"hi bob"', 3_100) == Effects(
        woken=["parent"], notified=["parent"], ended=[Ended(invocation_id="ok-child", output=b'"hi bob"')]
    )
    assert await status_of(store, "parent") == "pending"

    bad_attempt = (await claim(store, "bad-child", 3_200)).invocation.attempt
    crash = StoredFailure(code=500, message="crashed")
    effects = await store.fail("bad-child", bad_attempt, BOOM, 3_300, attempt_failure=crash)
    # The caller gets how the callee ended, not how its last attempt failed; it is already pending.
    assert effects == Effects(notified=["parent"], ended=[Ended(invocation_id="bad-child", failure=BOOM)])

    resumed = await claim(store, "parent", 4_000)
    assert resumed.completions == [
        CompletionRow(index=0, result=b'"hi bob"', created_at_ms=3_100),
        CompletionRow(index=1, failure=BOOM, created_at_ms=3_300),
    ]


async def test_a_send_does_not_complete_the_senders_entry(store: JournalStore) -> None:
    attempt = await start(store, "parent")
    result = await append(store, "parent", attempt, 0, "send", child=new("child", parent=("parent", 0)))
    assert result.effects == Effects(woken=["child"])
    child_attempt = (await claim(store, "child", 3_000)).invocation.attempt
    assert await store.complete("child", child_attempt, b"1", 3_100) == Effects(
        ended=[Ended(invocation_id="child", output=b"1")]
    )
    assert await store.get_completions("parent", [0]) == []


async def test_a_call_entry_already_completed_keeps_its_completion(store: JournalStore) -> None:
    attempt = await start(store, "parent")
    await call(store, "parent", attempt, 0, "child")
    assert (await store.complete_entry("parent", 0, 2_500, failure=BOOM, kind="call"))[0] == "completed"
    child_attempt = (await claim(store, "child", 3_000)).invocation.attempt
    effects = await store.complete("child", child_attempt, b"late", 3_100)
    assert effects == Effects(ended=[Ended(invocation_id="child", output=b"late")])
    assert await store.get_completions("parent", [0]) == [CompletionRow(index=0, failure=BOOM, created_at_ms=2_500)]


async def test_append_reports_a_requested_cancellation_for_every_outcome(store: JournalStore) -> None:
    stale = await start(store)
    assert not (await append(store, "inv-1", stale, 0, "run")).cancel_requested
    await store.abandon_running(2_000)
    current = (await claim(store, "inv-1", 2_001)).invocation.attempt
    assert await store.cancel("inv-1", 2_002) == ("requested", Effects(notified=["inv-1"]))
    appended = await append(store, "inv-1", current, 1, "run")
    assert appended.cancel_requested
    for index, attempt, outcome in [(1, current, "duplicate"), (0, current, "conflict"), (5, current, "gap")]:
        result = await store.append("inv-1", attempt, index, "run", "run-1", b"run@1", 2_003)
        assert (result.outcome, result.cancel_requested) == (outcome, True)
    fenced = await store.append("inv-1", stale, 2, "run", "x", b"X", 2_004)
    assert (fenced.outcome, fenced.cancel_requested) == ("fenced", True)
    assert (await store.append("nope", 1, 0, "run", "x", b"X", 2_005)).cancel_requested is False


async def test_a_child_whose_id_exists_is_left_as_it_is(store: JournalStore) -> None:
    attempt = await start(store, "parent")
    await store.create_invocation(new("child", parent=("parent", 0), awaits=True, input=b'"first"'), 1_500)
    existing = await store.get_invocation("child")
    retry_child = new("child", parent=("parent", 0), awaits=True, input=b'"second"')
    result = await append(store, "parent", attempt, 0, "call", child=retry_child)
    assert result.effects == Effects()  # not created now, so not woken now either
    assert await store.get_invocation("child") == existing
