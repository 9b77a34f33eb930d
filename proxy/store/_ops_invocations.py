"""The SQL of the journal store, part 2: the life of one invocation (see the diagram in ``base``).

Every write made on behalf of an attempt is fenced by ``CURRENT_ATTEMPT`` in
the same statement that changes the row, so the check and the write cannot be
torn apart.
"""

from __future__ import annotations

import msgspec

from proxy.store._ops import (
    CURRENT_ATTEMPT,
    UNFINISHED,
    encode_indices,
    find_by_idempotency_key,
    get_all_completions,
    get_invocation,
    get_journal,
)
from proxy.store._ops_completions import EffectsBuilder, add_completion, finish, insert_start_timer
from proxy.store._ops_keys import apply_promise_op, apply_state_op, get_state
from proxy.store._ops_locks import take_or_queue
from proxy.store._tx import Tx, for_update, indices_in, skip_locked
from proxy.store.base import (
    AppendOutcome,
    AppendResult,
    Claim,
    CompletionRow,
    Created,
    Effects,
    IdempotencyConflict,
    InvocationStatus,
    Lease,
    NewInvocation,
    PromiseOp,
    ResumeOutcome,
    RetryOutcome,
    StateOp,
    StoredFailure,
    SuspendOutcome,
)


async def insert_invocation(
    tx: Tx, new: NewInvocation, now_ms: int, *, if_absent: bool = False
) -> InvocationStatus | None:
    """Insert ``new``: ``scheduled`` with a start timer when it has ``run_at_ms``, else ``pending``, or
    ``queued`` when it is exclusive and another invocation holds its key's lock. Returns that status.

    With ``if_absent``, an invocation that already has this id is left as it is (returns None);
    otherwise a taken id raises ``sqlite3.IntegrityError``.
    """
    scheduled = new.run_at_ms is not None
    inserted = await tx.execute(
        "INSERT INTO invocations (id, service, handler, key, status, input, headers, deployment_id,"
        " idempotency_key, next_run_at_ms, created_at_ms, modified_at_ms, parent_id, parent_index, parent_awaits,"
        " exclusive) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        + (" ON CONFLICT (id) DO NOTHING" if if_absent else ""),
        (
            new.id,
            new.service,
            new.handler,
            new.key,
            "scheduled" if scheduled else "pending",
            new.input,
            msgspec.json.encode(new.headers).decode(),
            new.deployment_id,
            new.idempotency_key,
            new.run_at_ms,
            now_ms,
            now_ms,
            new.parent_id,
            new.parent_index,
            int(new.parent_awaits),
            int(new.exclusive),
        ),
    )
    if not inserted:
        return None
    if new.run_at_ms is not None:
        await insert_start_timer(tx, new.id, new.run_at_ms)  # takes its key's lock (or queues) when it fires
        return "scheduled"
    if new.exclusive and new.key is not None and not await take_or_queue(tx, new.id, new.service, new.key, now_ms):
        return "queued"
    return "pending"


async def create_invocation(
    tx: Tx, new: NewInvocation, now_ms: int, claim_endpoint: str | None = None, lease: Lease | None = None
) -> Created:
    if new.idempotency_key is not None:
        existing = await find_by_idempotency_key(tx, new.service, new.handler, new.key, new.idempotency_key)
        if existing is not None:
            if existing.input != new.input:
                raise IdempotencyConflict(existing)
            return Created(invocation=existing, created=False)
    status = await insert_invocation(tx, new, now_ms)
    if claim_endpoint is not None and status == "pending":
        claimed = await claim(tx, new.id, claim_endpoint, now_ms, lease, fresh=True)
        assert claimed is not None
        return Created(invocation=claimed.invocation, created=True, claim=claimed)
    created = await get_invocation(tx, new.id)
    assert created is not None
    return Created(invocation=created, created=True)


async def claim(
    tx: Tx, invocation_id: str, endpoint: str | None, now_ms: int, lease: Lease | None, *, fresh: bool = False
) -> Claim | None:
    """Start the next attempt, leased to ``lease``'s owner until its time (unleased without one);
    ``fresh``: the invocation was just inserted, so it has no journal yet."""
    updated = await tx.execute(
        "UPDATE invocations SET status = 'running', attempt = attempt + 1, next_run_at_ms = NULL, waiting_on = NULL,"
        " modified_at_ms = ?, lease_owner = ?, lease_until_ms = ?"
        f" WHERE id = ? AND {UNFINISHED} AND status IN ('pending', 'backing_off')",
        (now_ms, None if lease is None else lease.owner, None if lease is None else lease.until_ms, invocation_id),
    )
    if updated == 0:
        return None
    if not fresh:
        await tx.execute("DELETE FROM timers WHERE invocation_id = ? AND idx = -1", (invocation_id,))  # claimed early
    invocation = await get_invocation(tx, invocation_id)
    assert invocation is not None
    await tx.execute(
        "INSERT INTO attempts (invocation_id, attempt, endpoint, started_at_ms) VALUES (?, ?, ?, ?)",
        (invocation_id, invocation.attempt, endpoint, now_ms),
    )
    return Claim(
        invocation=invocation,
        journal=[] if fresh else await get_journal(tx, invocation_id),
        completions=[] if fresh else await get_all_completions(tx, invocation_id),
        state={} if invocation.key is None else await get_state(tx, invocation.service, invocation.key),
    )


async def append(
    tx: Tx,
    invocation_id: str,
    attempt: int,
    index: int,
    kind: str,
    name: str,
    entry: bytes,
    now_ms: int,
    child: NewInvocation | None,
    timer_at_ms: int | None,
    completion: CompletionRow | None,
    state_op: StateOp | None = None,
    promise_op: PromiseOp | None = None,
) -> AppendResult:
    # The fencing check and the length bump are one statement, so they cannot be torn apart.
    current = await tx.fetchone(
        "UPDATE invocations SET journal_len = journal_len + 1, modified_at_ms = ?"
        f" WHERE {CURRENT_ATTEMPT} AND journal_len = ? RETURNING service, key, cancel_requested",
        (now_ms, invocation_id, attempt, index),
    )
    if current is not None:
        service, key, cancel_requested = current
        if key is None and (state_op is not None or promise_op is not None):
            # Raised inside the job: its savepoint is rolled back, so nothing of this append is written.
            raise ValueError(f"{invocation_id} has no key: it has no state and no promises")
        await tx.execute(
            "INSERT INTO journal (invocation_id, idx, kind, name, attempt, entry, created_at_ms)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (invocation_id, index, kind, name, attempt, entry, now_ms),
        )
        # Effects happen only here: a retried append is a duplicate and skips them.
        fx = EffectsBuilder()
        if child is not None and await insert_invocation(tx, child, now_ms, if_absent=True) == "pending":
            fx.wake(child.id)
        if timer_at_ms is not None:
            await tx.execute(
                "INSERT INTO timers (invocation_id, idx, due_at_ms) VALUES (?, ?, ?)",
                (invocation_id, index, timer_at_ms),
            )
        own: CompletionRow | None = None
        if completion is not None and await add_completion(
            tx, fx, invocation_id, index, completion.result, completion.failure, now_ms, locked=True
        ):
            own = CompletionRow(
                index=index,
                result=None if completion.failure is not None else completion.result,
                failure=completion.failure,
                created_at_ms=now_ms,
            )
        if state_op is not None:
            await apply_state_op(tx, service, key, state_op)
        if promise_op is not None:
            own = await apply_promise_op(tx, fx, invocation_id, index, service, key, promise_op, now_ms)
        return AppendResult(
            outcome="appended", cancel_requested=bool(cancel_requested), effects=fx.build(), completion=own
        )
    row = await tx.fetchone(
        "SELECT status, attempt, journal_len, cancel_requested FROM invocations WHERE id = ?", (invocation_id,)
    )
    if row is None:
        return AppendResult(outcome="not_found")
    status, current_attempt, journal_len, cancel_requested = row
    outcome: AppendOutcome
    if status != "running" or current_attempt != attempt:
        outcome = "fenced"
    elif index > journal_len:
        outcome = "gap"
    else:
        stored = await tx.fetchone(
            "SELECT kind, name, attempt, entry FROM journal WHERE invocation_id = ? AND idx = ?",
            (invocation_id, index),
        )
        outcome = "duplicate" if stored is not None and tuple(stored) == (kind, name, attempt, entry) else "conflict"
    return AppendResult(outcome=outcome, cancel_requested=bool(cancel_requested))


async def complete(tx: Tx, invocation_id: str, attempt: int, output: bytes, now_ms: int) -> Effects | None:
    updated = await tx.execute(
        "UPDATE invocations SET status = 'completed', output = ?, completed_at_ms = ?, modified_at_ms = ?"
        f" WHERE {CURRENT_ATTEMPT}",
        (output, now_ms, now_ms, invocation_id, attempt),
    )
    if updated == 0:
        return None
    await close_attempt(tx, invocation_id, attempt, "completed", None, now_ms)
    fx = EffectsBuilder()
    await finish(tx, fx, invocation_id, output, None, now_ms)
    return fx.build()


async def fail(
    tx: Tx,
    invocation_id: str,
    attempt: int,
    failure: StoredFailure,
    now_ms: int,
    *,
    attempt_failure: StoredFailure | None = None,
) -> Effects | None:
    last = attempt_failure
    updated = await tx.execute(
        "UPDATE invocations SET status = 'failed', failure_code = ?, failure_message = ?, completed_at_ms = ?,"
        " last_failure_code = coalesce(?, last_failure_code), last_failure_message = coalesce(?, last_failure_message),"
        f" modified_at_ms = ? WHERE {CURRENT_ATTEMPT}",
        (
            failure.code,
            failure.message,
            now_ms,
            None if last is None else last.code,
            None if last is None else last.message,
            now_ms,
            invocation_id,
            attempt,
        ),
    )
    if updated == 0:
        return None
    await close_attempt(tx, invocation_id, attempt, "failed", attempt_failure or failure, now_ms)
    fx = EffectsBuilder()
    await finish(tx, fx, invocation_id, None, failure, now_ms)
    return fx.build()


async def backoff(
    tx: Tx, invocation_id: str, attempt: int, failure: StoredFailure, next_run_at_ms: int, now_ms: int
) -> bool:
    updated = await tx.execute(
        "UPDATE invocations SET status = 'backing_off', last_failure_code = ?, last_failure_message = ?,"
        f" next_run_at_ms = ?, modified_at_ms = ? WHERE {CURRENT_ATTEMPT}",
        (failure.code, failure.message, next_run_at_ms, now_ms, invocation_id, attempt),
    )
    if updated == 0:
        return False
    await insert_start_timer(tx, invocation_id, next_run_at_ms)
    await close_attempt(tx, invocation_id, attempt, "retry", failure, now_ms)
    return True


async def pause(tx: Tx, invocation_id: str, attempt: int, failure: StoredFailure, now_ms: int) -> bool:
    updated = await tx.execute(
        "UPDATE invocations SET status = 'paused', last_failure_code = ?, last_failure_message = ?,"
        f" next_run_at_ms = NULL, modified_at_ms = ? WHERE {CURRENT_ATTEMPT}",
        (failure.code, failure.message, now_ms, invocation_id, attempt),
    )
    if updated == 0:
        return False
    await close_attempt(tx, invocation_id, attempt, "paused", failure, now_ms)
    return True


async def resume(tx: Tx, invocation_id: str, now_ms: int) -> tuple[ResumeOutcome, Effects]:
    updated = await tx.execute(
        "UPDATE invocations SET status = 'pending', attempts_at_resume = attempt, modified_at_ms = ?"
        f" WHERE id = ? AND {UNFINISHED} AND status = 'paused'",
        (now_ms, invocation_id),
    )
    if updated:
        return "resumed", Effects(woken=[invocation_id])
    exists = await tx.fetchone("SELECT 1 FROM invocations WHERE id = ?", (invocation_id,))
    return ("not_paused" if exists is not None else "not_found"), Effects()


async def retry_now(tx: Tx, invocation_id: str, now_ms: int) -> tuple[RetryOutcome, Effects]:
    """A backing-off invocation becomes ``pending`` now (its start timer goes); a paused one is resumed."""
    updated = await tx.execute(
        "UPDATE invocations SET status = 'pending', next_run_at_ms = NULL, modified_at_ms = ?"
        f" WHERE id = ? AND {UNFINISHED} AND status = 'backing_off'",
        (now_ms, invocation_id),
    )
    if updated:
        await tx.execute("DELETE FROM timers WHERE invocation_id = ? AND idx = -1", (invocation_id,))
        return "retried", Effects(woken=[invocation_id])
    outcome, effects = await resume(tx, invocation_id, now_ms)
    if outcome == "resumed":
        return "resumed", effects
    return ("not_found" if outcome == "not_found" else "not_retryable"), Effects()


async def suspend(tx: Tx, invocation_id: str, attempt: int, waiting_on: list[int], now_ms: int) -> SuspendOutcome:
    row = await tx.fetchone(
        f"SELECT status, attempt, cancel_requested FROM invocations WHERE id = ?{for_update(tx)}", (invocation_id,)
    )
    if row is None or row[0] != "running" or row[1] != attempt:
        return "fenced"
    indices = encode_indices(sorted(set(waiting_on)))
    resume = (
        not waiting_on
        or bool(row[2])
        or await tx.fetchone(
            f"SELECT 1 FROM completions WHERE invocation_id = ? AND {indices_in(tx, 'idx')} LIMIT 1",
            (invocation_id, indices),
        )
        is not None
    )
    # An attempt that ends suspended made progress: the retry budget starts again after it, so
    # only consecutive failed attempts count against the retry policy.
    await tx.execute(
        "UPDATE invocations SET status = ?, waiting_on = ?, attempts_at_resume = attempt, modified_at_ms = ?"
        f" WHERE {CURRENT_ATTEMPT}",
        ("pending" if resume else "suspended", None if resume else indices, now_ms, invocation_id, attempt),
    )
    await close_attempt(tx, invocation_id, attempt, "resumed" if resume else "suspended", None, now_ms)
    return "resume" if resume else "suspended"


async def close_attempt(
    tx: Tx,
    invocation_id: str,
    attempt: int,
    outcome: str,
    failure: StoredFailure | None,
    now_ms: int,
) -> None:
    await tx.execute(
        "UPDATE attempts SET ended_at_ms = ?, outcome = ?, failure_code = ?, failure_message = ?"
        " WHERE invocation_id = ? AND attempt = ?",
        (
            now_ms,
            outcome,
            None if failure is None else failure.code,
            None if failure is None else failure.message,
            invocation_id,
            attempt,
        ),
    )


async def abandon_running(tx: Tx, now_ms: int, owner: str | None) -> int:
    """Every ``running`` invocation -> ``pending``, its attempt closed as abandoned (and so fenced).
    With ``owner``: only those leased to ``owner``, unleased, or whose lease ran out before ``now_ms``."""
    mine = "" if owner is None else " AND (lease_owner = ? OR lease_owner IS NULL OR lease_until_ms < ?)"
    params: tuple[object, ...] = () if owner is None else (owner, now_ms)
    await tx.execute(
        # Row-value IN lets SQLite look the attempts up by primary key instead of scanning them all.
        "UPDATE attempts SET ended_at_ms = ?, outcome = 'abandoned' WHERE ended_at_ms IS NULL"
        " AND (invocation_id, attempt) IN"
        f" (SELECT id, attempt FROM invocations WHERE {UNFINISHED} AND status = 'running'{mine})",
        (now_ms, *params),
    )
    return await tx.execute(
        "UPDATE invocations SET status = 'pending', lease_owner = NULL, lease_until_ms = NULL, modified_at_ms = ?"
        f" WHERE {UNFINISHED} AND status = 'running'{mine}",
        (now_ms, *params),
    )


async def renew_leases(tx: Tx, lease: Lease) -> int:
    """Move the lease of every running invocation leased to ``lease.owner`` on to ``lease.until_ms``."""
    return await tx.execute(
        "UPDATE invocations SET lease_until_ms = ? WHERE status = 'running' AND lease_owner = ?",
        (lease.until_ms, lease.owner),
    )


async def take_over_expired(tx: Tx, now_ms: int, limit: int) -> list[str]:
    """Running invocations whose lease ran out before ``now_ms`` (their instance stopped renewing it):
    each becomes ``pending`` with its attempt closed as abandoned, so that attempt is fenced from here
    on. Rows another transaction is taking over are skipped, not waited for."""
    rows = await tx.fetchall(
        "SELECT id, attempt FROM invocations WHERE status = 'running' AND lease_until_ms < ?"
        f" ORDER BY lease_until_ms LIMIT ?{skip_locked(tx)}",
        (now_ms, limit),
    )
    taken: list[str] = []
    for invocation_id, attempt in rows:
        updated = await tx.execute(
            "UPDATE invocations SET status = 'pending', lease_owner = NULL, lease_until_ms = NULL, modified_at_ms = ?"
            f" WHERE {CURRENT_ATTEMPT}",
            (now_ms, invocation_id, attempt),
        )
        if updated:
            await close_attempt(tx, invocation_id, attempt, "abandoned", None, now_ms)
            taken.append(str(invocation_id))
    return taken


async def list_stale_pending(tx: Tx, before_ms: int, limit: int) -> list[str]:
    """``pending`` invocations nobody has claimed since ``before_ms``, oldest first."""
    rows = await tx.fetchall(
        f"SELECT id FROM invocations WHERE {UNFINISHED} AND status = 'pending' AND modified_at_ms < ?"
        " ORDER BY created_at_ms LIMIT ?",
        (before_ms, limit),
    )
    return [str(r[0]) for r in rows]
