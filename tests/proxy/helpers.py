"""Builders shared by the store tests."""

from __future__ import annotations

from proxy.store.base import (
    AppendResult,
    Claim,
    CompletionRow,
    JournalStore,
    NewInvocation,
    PromiseOp,
    StateOp,
    StoredFailure,
)

BOOM = StoredFailure(code=500, message="boom")
CANCELLED = StoredFailure(code=409, message="cancelled")


def new(
    invocation_id: str = "inv-1",
    *,
    service: str = "greeter",
    handler: str = "greet",
    key: str | None = None,
    idempotency_key: str | None = None,
    input: bytes = b'"world"',
    parent: tuple[str, int] | None = None,
    awaits: bool = False,
    run_at_ms: int | None = None,
    exclusive: bool = False,
) -> NewInvocation:
    return NewInvocation(
        id=invocation_id,
        service=service,
        handler=handler,
        input=input,
        deployment_id="dp-1",
        key=key,
        idempotency_key=idempotency_key,
        headers={"x-trace": "abc"},
        parent_id=None if parent is None else parent[0],
        parent_index=None if parent is None else parent[1],
        parent_awaits=awaits,
        run_at_ms=run_at_ms,
        exclusive=exclusive,
    )


async def start(store: JournalStore, invocation_id: str = "inv-1", now_ms: int = 1_000) -> int:
    """Create and claim an invocation; returns the attempt number."""
    await store.create_invocation(new(invocation_id), now_ms)
    claim = await store.claim(invocation_id, "http://h1", now_ms + 1)
    assert claim is not None
    return claim.invocation.attempt


async def status_of(store: JournalStore, invocation_id: str) -> str:
    invocation = await store.get_invocation(invocation_id)
    assert invocation is not None
    return invocation.status


async def append(
    store: JournalStore,
    invocation_id: str,
    attempt: int,
    index: int,
    kind: str,
    now_ms: int = 2_000,
    *,
    child: NewInvocation | None = None,
    timer_at_ms: int | None = None,
    completion: CompletionRow | None = None,
    state_op: StateOp | None = None,
    promise_op: PromiseOp | None = None,
) -> AppendResult:
    """Append an entry of ``kind`` (its bytes are made up) and check that it was written now."""
    result = await store.append(
        invocation_id,
        attempt,
        index,
        kind,
        f"{kind}-{index}",
        f"{kind}@{index}".encode(),
        now_ms,
        child=child,
        timer_at_ms=timer_at_ms,
        completion=completion,
        state_op=state_op,
        promise_op=promise_op,
    )
    assert result.outcome == "appended", result
    return result


async def claim(store: JournalStore, invocation_id: str, now_ms: int = 1_500) -> Claim:
    claimed = await store.claim(invocation_id, None, now_ms)
    assert claimed is not None, f"{invocation_id} is not claimable"
    return claimed


async def call(
    store: JournalStore, parent_id: str, attempt: int, index: int, child_id: str, *, run_at_ms: int | None = None
) -> AppendResult:
    """The parent calls a new child (its end completes the parent's entry at ``index``)."""
    child = new(child_id, parent=(parent_id, index), awaits=True, run_at_ms=run_at_ms)
    return await append(store, parent_id, attempt, index, "call", child=child)
