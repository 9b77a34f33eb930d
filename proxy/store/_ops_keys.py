"""The SQL of the journal store, part 7: keyed state, durable promises, key status, and the purge of workflows.

State and promises belong to an object or workflow key, (service, key). They
change only inside the ``append`` that commits the journal entry changing them
(``apply_state_op``, ``apply_promise_op``), so a retried (duplicate) append
never applies them twice.

A promise is a row of ``promises`` once it is completed (resolved with a JSON
value, or rejected with a failure), and never changes afterwards. A
``get_promise`` entry appended before that leaves a row in ``promise_waiters``;
completing the promise completes every waiting entry (waking the invocations
suspended on them) and deletes those rows.
"""

from __future__ import annotations

from typing import Final

from proxy.store._ops import failure_of
from proxy.store._ops_completions import EffectsBuilder, add_completion
from proxy.store._ops_locks import QUEUE_SQL
from proxy.store._tx import Tx, lock_name
from proxy.store.base import CompletionRow, KeyStatus, PromiseOp, PromiseRow, StateOp, StoredFailure

STATE_SQL: Final = "SELECT name, value FROM state WHERE service = ? AND key = ? ORDER BY name"
#: The workflow keys of a service whose run ended before a time and that have no unfinished invocation
#: (the index ``invocations_workflow_runs``, then ``invocations_by_key`` per candidate).
PURGEABLE_SQL: Final = (
    "SELECT r.key FROM invocations r"
    " WHERE r.service = ? AND r.handler = 'run' AND r.idempotency_key = 'run' AND r.completed_at_ms < ?"
    " AND r.status IN ('completed', 'failed') AND r.key IS NOT NULL"
    " AND NOT EXISTS (SELECT 1 FROM invocations u WHERE u.service = r.service AND u.key = r.key"
    " AND u.status NOT IN ('completed', 'failed'))"
    " ORDER BY r.completed_at_ms LIMIT ?"
)
_ENDED_OF_KEY: Final = "SELECT id FROM invocations WHERE service = ? AND key = ? AND status IN ('completed', 'failed')"


# --------------------------------------------------------------------------- state


async def get_state(tx: Tx, service: str, key: str) -> dict[str, bytes]:
    return {r[0]: bytes(r[1]) for r in await tx.fetchall(STATE_SQL, (service, key))}


async def apply_state_op(tx: Tx, service: str, key: str, op: StateOp) -> None:
    if op.op == "set":
        assert op.value is not None  # checked before the job was queued
        await tx.execute(
            "INSERT INTO state (service, key, name, value) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (service, key, name) DO UPDATE SET value = excluded.value",
            (service, key, op.name, op.value),
        )
    elif op.op == "clear":
        await tx.execute("DELETE FROM state WHERE service = ? AND key = ? AND name = ?", (service, key, op.name))
    else:
        await tx.execute("DELETE FROM state WHERE service = ? AND key = ?", (service, key))


# --------------------------------------------------------------------------- promises


def already_completed(name: str) -> StoredFailure:
    return StoredFailure(code=409, message=f"promise '{name}' was already completed")


async def apply_promise_op(
    tx: Tx,
    fx: EffectsBuilder,
    invocation_id: str,
    index: int,
    service: str,
    key: str,
    op: PromiseOp,
    now_ms: int,
) -> CompletionRow | None:
    """Apply ``op`` for the entry just appended at ``index``; returns the completion that entry got now."""
    await lock_name(tx, "promise", service, key, op.name)  # a get and a completion of one promise take turns
    promise = await tx.fetchone(
        "SELECT value, failure_code, failure_message FROM promises WHERE service = ? AND key = ? AND name = ?",
        (service, key, op.name),
    )
    result: bytes | None = None
    failure: StoredFailure | None = None
    if op.op == "get":
        if promise is None:
            await tx.execute(
                "INSERT INTO promise_waiters (service, key, name, invocation_id, idx) VALUES (?, ?, ?, ?, ?)",
                (service, key, op.name, invocation_id, index),
            )
            return None
        result, failure = promise[0], failure_of(promise[1], promise[2])
    elif op.op == "peek":
        if promise is None:
            result = b'{"resolved":false}'
        elif promise[1] is not None:
            failure = failure_of(promise[1], promise[2])
        else:
            result = b'{"resolved":true,"value":' + bytes(promise[0]) + b"}"
    elif promise is not None:
        failure = already_completed(op.name)
    else:
        # Resolved with neither a value nor a failure: resolved with JSON null.
        value = None if op.failure is not None else (b"null" if op.value is None else op.value)
        await tx.execute(
            "INSERT INTO promises (service, key, name, value, failure_code, failure_message, completed_at_ms)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                service,
                key,
                op.name,
                value,
                None if op.failure is None else op.failure.code,
                None if op.failure is None else op.failure.message,
                now_ms,
            ),
        )
        where = (service, key, op.name)
        waiters = await tx.fetchall(
            "SELECT invocation_id, idx FROM promise_waiters WHERE service = ? AND key = ? AND name = ?", where
        )
        await tx.execute("DELETE FROM promise_waiters WHERE service = ? AND key = ? AND name = ?", where)
        for waiter_id, waiter_index in waiters:
            await add_completion(tx, fx, waiter_id, waiter_index, value, op.failure, now_ms)
    written = await add_completion(tx, fx, invocation_id, index, result, failure, now_ms, locked=True)
    assert written, "a promise op's entry was completed before it was appended"
    return CompletionRow(index=index, result=result, failure=failure, created_at_ms=now_ms)


async def list_promises(tx: Tx, service: str, key: str) -> list[PromiseRow]:
    rows = await tx.fetchall(
        "SELECT name, value, failure_code, failure_message, completed_at_ms FROM promises"
        " WHERE service = ? AND key = ? ORDER BY name",
        (service, key),
    )
    return [
        PromiseRow(
            name=r[0],
            value=None if r[1] is None else bytes(r[1]),
            failure=failure_of(r[2], r[3]),
            completed_at_ms=r[4],
        )
        for r in rows
    ]


# --------------------------------------------------------------------------- keys


async def key_status(tx: Tx, service: str, key: str) -> KeyStatus:
    holder = await tx.fetchone("SELECT holder_id FROM key_locks WHERE service = ? AND key = ?", (service, key))
    return KeyStatus(
        service=service,
        key=key,
        state=await get_state(tx, service, key),
        lock_holder=None if holder is None else holder[0],
        queue=[r[0] for r in await tx.fetchall(QUEUE_SQL, (service, key))],
        promises=await list_promises(tx, service, key),
    )


async def purge_workflows(tx: Tx, service: str, ended_before_ms: int, limit: int) -> int:
    keys = [r[0] for r in await tx.fetchall(PURGEABLE_SQL, (service, ended_before_ms, limit))]
    for key in keys:
        await purge_workflow_key(tx, service, key)
    return len(keys)


async def purge_workflow_key(tx: Tx, service: str, key: str) -> int:
    """Delete every ended invocation of a workflow key (with its journal, completions, attempts),
    the key's state and its promises; returns how many invocations were deleted. The caller has
    checked that the key has no unfinished invocation."""
    await lock_name(tx, "key", service, key)
    ids = (service, key)
    # Explicit deletes rather than relying on the cascades, children before parents.
    await tx.execute(f"DELETE FROM promise_waiters WHERE invocation_id IN ({_ENDED_OF_KEY})", ids)
    await tx.execute("DELETE FROM promise_waiters WHERE service = ? AND key = ?", ids)
    await tx.execute(f"DELETE FROM completions WHERE invocation_id IN ({_ENDED_OF_KEY})", ids)
    await tx.execute(f"DELETE FROM journal WHERE invocation_id IN ({_ENDED_OF_KEY})", ids)
    await tx.execute(f"DELETE FROM attempts WHERE invocation_id IN ({_ENDED_OF_KEY})", ids)
    await tx.execute(f"DELETE FROM timers WHERE invocation_id IN ({_ENDED_OF_KEY})", ids)
    deleted = await tx.execute(
        "DELETE FROM invocations WHERE service = ? AND key = ? AND status IN ('completed', 'failed')", ids
    )
    await tx.execute("DELETE FROM state WHERE service = ? AND key = ?", ids)
    await tx.execute("DELETE FROM promises WHERE service = ? AND key = ?", ids)
    return deleted
