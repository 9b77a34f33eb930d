"""Durable promises of a workflow key: get, peek, complete, and the entries waiting on them
(the JournalStore contract, every backend)."""

from __future__ import annotations

import pytest

from proxy.store.base import (
    AppendResult,
    CompletionRow,
    Effects,
    JournalStore,
    NewInvocation,
    PromiseOp,
    PromiseRow,
    StoredFailure,
)
from tests.proxy.helpers import append, claim, new, start, status_of

WORKFLOW = "signup"
DENIED = StoredFailure(code=403, message="denied")


def run(invocation_id: str = "run", key: str = "w1") -> NewInvocation:
    return new(invocation_id, service=WORKFLOW, handler="run", key=key, idempotency_key="run", exclusive=True)


def signal(invocation_id: str, key: str = "w1") -> NewInvocation:
    """A shared handler of the workflow (runs beside its run)."""
    return new(invocation_id, service=WORKFLOW, handler="approve", key=key)


async def started(store: JournalStore, invocation: NewInvocation, now_ms: int = 1_000) -> int:
    await store.create_invocation(invocation, now_ms)
    return (await claim(store, invocation.id, now_ms + 1)).invocation.attempt


async def get(store: JournalStore, invocation_id: str, attempt: int, index: int, name: str) -> AppendResult:
    return await append(
        store, invocation_id, attempt, index, "get_promise", 3_000, promise_op=PromiseOp(op="get", name=name)
    )


async def peek(store: JournalStore, invocation_id: str, attempt: int, index: int, name: str) -> AppendResult:
    return await append(
        store, invocation_id, attempt, index, "peek_promise", 3_000, promise_op=PromiseOp(op="peek", name=name)
    )


async def resolve(
    store: JournalStore,
    invocation_id: str,
    attempt: int,
    index: int,
    name: str,
    value: bytes | None = None,
    failure: StoredFailure | None = None,
    now_ms: int = 4_000,
) -> AppendResult:
    op = PromiseOp(op="complete", name=name, value=value, failure=failure)
    return await append(store, invocation_id, attempt, index, "complete_promise", now_ms, promise_op=op)


async def test_get_before_complete_waits_and_is_completed_and_woken(store: JournalStore) -> None:
    r = await started(store, run())
    waiting = await get(store, "run", r, 0, "approval")
    assert (waiting.completion, waiting.effects) == (None, Effects())  # not completed yet: it waits
    assert await store.get_completions("run", [0]) == []
    assert await store.suspend("run", r, [0], 3_100) == "suspended"
    s = await started(store, signal("s1"), 3_200)
    # A second waiter, still running (so notified, not woken).
    other = await started(store, signal("s2"), 3_300)
    await get(store, "s2", other, 0, "approval")

    resolved = await resolve(store, "s1", s, 0, "approval", value=b'"yes"')
    assert resolved.completion == CompletionRow(index=0, result=None, created_at_ms=4_000)  # completed with null
    assert resolved.effects.woken == ["run"]
    assert set(resolved.effects.notified) == {"s1", "run", "s2"}
    assert await store.get_completions("run", [0]) == [CompletionRow(index=0, result=b'"yes"', created_at_ms=4_000)]
    assert await store.get_completions("s2", [0]) == [CompletionRow(index=0, result=b'"yes"', created_at_ms=4_000)]
    assert await status_of(store, "run") == "pending"
    assert (await store.key_status(WORKFLOW, "w1")).promises == [
        PromiseRow(name="approval", value=b'"yes"', failure=None, completed_at_ms=4_000)
    ]
    # Claiming again replays the completion.
    again = await claim(store, "run", 4_100)
    assert again.completions == [CompletionRow(index=0, result=b'"yes"', created_at_ms=4_000)]


async def test_get_after_complete_is_completed_at_once(store: JournalStore) -> None:
    r = await started(store, run())
    await resolve(store, "run", r, 0, "ok", value=b"42")
    await resolve(store, "run", r, 1, "no", failure=DENIED)
    got = await get(store, "run", r, 2, "ok")
    assert got.completion == CompletionRow(index=2, result=b"42", created_at_ms=3_000)
    assert got.effects == Effects(notified=["run"])
    rejected = await get(store, "run", r, 3, "no")
    assert rejected.completion == CompletionRow(index=3, failure=DENIED, created_at_ms=3_000)
    assert await store.get_completions("run", [2, 3]) == [got.completion, rejected.completion]


async def test_peek_in_each_state_with_exact_bytes(store: JournalStore) -> None:
    r = await started(store, run())
    pending = await peek(store, "run", r, 0, "p")
    assert pending.completion == CompletionRow(index=0, result=b'{"resolved":false}', created_at_ms=3_000)
    assert pending.effects == Effects(notified=["run"])
    await resolve(store, "run", r, 1, "p", value=b'{"a": [1, 2]}')
    resolved = await peek(store, "run", r, 2, "p")
    assert resolved.completion == CompletionRow(
        index=2, result=b'{"resolved":true,"value":{"a": [1, 2]}}', created_at_ms=3_000
    )
    await resolve(store, "run", r, 3, "q", failure=DENIED)
    rejected = await peek(store, "run", r, 4, "q")
    assert rejected.completion == CompletionRow(index=4, failure=DENIED, created_at_ms=3_000)
    # A peek never waits.
    assert (await store.key_status(WORKFLOW, "w1")).promises == [
        PromiseRow(name="p", value=b'{"a": [1, 2]}', failure=None, completed_at_ms=4_000),
        PromiseRow(name="q", value=None, failure=DENIED, completed_at_ms=4_000),
    ]
    assert [c.index for c in await store.get_completions("run", [0, 1, 2, 3, 4])] == [0, 1, 2, 3, 4]


async def test_completing_twice_fails_the_second_entry(store: JournalStore) -> None:
    r = await started(store, run())
    s = await started(store, signal("s1"), 2_000)
    assert (await resolve(store, "run", r, 0, "p", value=b"1")).completion == CompletionRow(
        index=0, created_at_ms=4_000
    )
    second = await resolve(store, "s1", s, 0, "p", value=b"2", now_ms=5_000)
    assert second.completion == CompletionRow(
        index=0, failure=StoredFailure(code=409, message="promise 'p' was already completed"), created_at_ms=5_000
    )
    assert second.effects == Effects(notified=["s1"])
    rejected_too = await resolve(store, "s1", s, 1, "p", failure=DENIED, now_ms=5_001)
    assert rejected_too.completion is not None and rejected_too.completion.failure is not None
    assert rejected_too.completion.failure.code == 409
    # The first completion stands.
    assert (await store.key_status(WORKFLOW, "w1")).promises == [
        PromiseRow(name="p", value=b"1", failure=None, completed_at_ms=4_000)
    ]


async def test_a_rejection_completes_the_waiters_with_the_failure(store: JournalStore) -> None:
    r = await started(store, run())
    await get(store, "run", r, 0, "p")
    assert await store.suspend("run", r, [0], 3_100) == "suspended"
    s = await started(store, signal("s1"), 3_200)
    result = await resolve(store, "s1", s, 0, "p", failure=DENIED)
    assert result.effects.woken == ["run"]
    assert await store.get_completions("run", [0]) == [CompletionRow(index=0, failure=DENIED, created_at_ms=4_000)]


async def test_a_duplicate_append_applies_nothing_again(store: JournalStore) -> None:
    r = await started(store, run())
    await get(store, "run", r, 0, "p")
    again = await store.append(
        "run", r, 0, "get_promise", "get_promise-0", b"get_promise@0", 3_001, promise_op=PromiseOp(op="get", name="p")
    )
    assert (again.outcome, again.completion) == ("duplicate", None)
    await resolve(store, "run", r, 1, "p", value=b"1")
    retried = await store.append(
        "run",
        r,
        1,
        "complete_promise",
        "complete_promise-1",
        b"complete_promise@1",
        4_001,
        promise_op=PromiseOp(op="complete", name="p", value=b"1"),
    )
    # Not a second completion (which would have been a 409): nothing happened.
    assert (retried.outcome, retried.completion, retried.effects) == ("duplicate", None, Effects())
    assert await store.get_completions("run", [1]) == [CompletionRow(index=1, created_at_ms=4_000)]


async def test_promises_belong_to_one_key(store: JournalStore) -> None:
    one = await started(store, run("run-1", "w1"))
    two = await started(store, run("run-2", "w2"))
    await get(store, "run-2", two, 0, "p")
    result = await resolve(store, "run-1", one, 0, "p", value=b"1")
    assert result.effects == Effects(notified=["run-1"])  # w2's waiter is another promise
    assert (await peek(store, "run-2", two, 1, "p")).completion == CompletionRow(
        index=1, result=b'{"resolved":false}', created_at_ms=3_000
    )


async def test_an_ended_waiter_is_not_completed(store: JournalStore) -> None:
    r = await started(store, run())
    s = await started(store, signal("s1"), 2_000)
    await get(store, "s1", s, 0, "p")
    assert (await store.kill("s1", StoredFailure(code=499, message="killed"), 2_500))[0] == "requested"
    result = await resolve(store, "run", r, 0, "p", value=b"1")
    assert result.effects == Effects(notified=["run"])
    assert await store.get_completions("s1", [0]) == []


async def test_promise_ops_need_a_key_and_a_consistent_request(store: JournalStore) -> None:
    attempt = await start(store, "plain")
    with pytest.raises(ValueError, match="no key"):
        await store.append(
            "plain", attempt, 0, "get_promise", "p", b"E", 2_000, promise_op=PromiseOp(op="get", name="p")
        )
    assert await store.get_journal("plain") == []
    r = await started(store, run())
    both = PromiseOp(op="complete", name="p", value=b"1", failure=DENIED)
    with pytest.raises(ValueError):
        await store.append("run", r, 0, "complete_promise", "p", b"E", 2_000, promise_op=both)
    with pytest.raises(ValueError):
        await store.append(
            "run",
            r,
            0,
            "peek_promise",
            "p",
            b"E",
            2_000,
            promise_op=PromiseOp(op="peek", name="p"),
            completion=CompletionRow(index=0),
        )
    assert await store.get_journal("run") == []


async def test_the_completion_argument_is_reported_too(store: JournalStore) -> None:
    attempt = await start(store)
    result = await append(store, "inv-1", attempt, 0, "call", completion=CompletionRow(index=0, failure=DENIED))
    assert result.completion == CompletionRow(index=0, failure=DENIED, created_at_ms=2_000)
    assert result.effects == Effects(notified=["inv-1"])
    plain = await append(store, "inv-1", attempt, 1, "run")
    assert plain.completion is None
