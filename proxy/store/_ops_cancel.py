"""The SQL of the journal store, part 4: the cancel and kill cascades.

Both walk from an invocation down the calls it made (``parent_awaits = 1``),
recursively, skipping invocations that already ended (and what hangs below
them). Sends are not followed: their callee does not belong to the caller.
"""

from __future__ import annotations

from typing import Final

from proxy.store._ops_completions import EffectsBuilder, finish
from proxy.store._tx import Tx, for_update
from proxy.store.base import CancelOutcome, Effects, StoredFailure

CANCELLED: Final = StoredFailure(code=409, message="cancelled")

#: The invocation and its unfinished callees, parents before children. ``UNION`` (not ``UNION ALL``)
#: drops rows already produced, so even a cycle in the parent links ends the walk.
CASCADE_SQL: Final = (
    "WITH RECURSIVE tree (id) AS ("
    " SELECT ?"
    " UNION"
    " SELECT i.id FROM tree JOIN invocations i ON i.parent_id = tree.id"
    " WHERE i.parent_awaits = 1 AND i.status NOT IN ('completed', 'failed')"
    ") SELECT id FROM tree"
)


async def _cascade(tx: Tx, invocation_id: str) -> list[tuple[str, str, int]] | CancelOutcome:
    """(id, status, attempt) of the invocation and its unfinished callees, or why there is nothing to do."""
    root = await tx.fetchone(f"SELECT status FROM invocations WHERE id = ?{for_update(tx)}", (invocation_id,))
    if root is None:
        return "not_found"
    if root[0] in ("completed", "failed"):
        return "already_done"
    found: list[tuple[str, str, int]] = []
    for (member,) in await tx.fetchall(CASCADE_SQL, (invocation_id,)):
        row = await tx.fetchone(f"SELECT status, attempt FROM invocations WHERE id = ?{for_update(tx)}", (member,))
        assert row is not None  # the walk just read it
        found.append((member, row[0], row[1]))
    return found


async def cancel(tx: Tx, invocation_id: str, now_ms: int) -> tuple[CancelOutcome, Effects]:
    fx = EffectsBuilder()
    members = await _cascade(tx, invocation_id)
    if isinstance(members, str):
        return members, fx.build()
    for member, status, attempt in members:
        if status in ("scheduled", "queued") or (status == "pending" and attempt == 0):
            # Never started: nothing to compensate, it ends here (and completes its caller's entry).
            # A queued one leaves its key's queue; one holding its key's lock hands it on.
            await tx.execute(
                "UPDATE invocations SET status = 'failed', failure_code = ?, failure_message = ?,"
                " completed_at_ms = ?, modified_at_ms = ?, waiting_on = NULL WHERE id = ?",
                (CANCELLED.code, CANCELLED.message, now_ms, now_ms, member),
            )
            await finish(tx, fx, member, None, CANCELLED, now_ms)
        elif status in ("suspended", "backing_off", "paused"):
            # Must run again now to see the cancellation and compensate. A paused one gets a fresh
            # retry budget for that, as a resume gives (its attempts were used up).
            await tx.execute(
                "UPDATE invocations SET cancel_requested = 1, status = 'pending', waiting_on = NULL,"
                " attempts_at_resume = CASE WHEN status = 'paused' THEN attempt ELSE attempts_at_resume END,"
                " modified_at_ms = ? WHERE id = ?",
                (now_ms, member),
            )
            await tx.execute("DELETE FROM timers WHERE invocation_id = ? AND idx = -1", (member,))
            fx.wake(member)
        else:
            # Running (or about to run again): its next append or await reports the flag. Listed as
            # notified so that an attempt blocked waiting for a completion re-reads its state.
            await tx.execute(
                "UPDATE invocations SET cancel_requested = 1, modified_at_ms = ? WHERE id = ?", (now_ms, member)
            )
            if status == "running":
                fx.notify(member)
    return "requested", fx.build()


async def kill(tx: Tx, invocation_id: str, failure: StoredFailure, now_ms: int) -> tuple[CancelOutcome, Effects]:
    fx = EffectsBuilder()
    members = await _cascade(tx, invocation_id)
    if isinstance(members, str):
        return members, fx.build()
    for member, _status, _attempt in members:
        await tx.execute(
            "UPDATE invocations SET status = 'failed', failure_code = ?, failure_message = ?, completed_at_ms = ?,"
            " modified_at_ms = ?, waiting_on = NULL WHERE id = ?",
            (failure.code, failure.message, now_ms, now_ms, member),
        )
        # Fences the running attempt, if any: its row is no longer 'running'.
        await tx.execute(
            "UPDATE attempts SET ended_at_ms = ?, outcome = 'killed', failure_code = ?, failure_message = ?"
            " WHERE invocation_id = ? AND ended_at_ms IS NULL",
            (now_ms, failure.code, failure.message, member),
        )
        # A callee's caller is being killed too; only the root's caller (outside the cascade) gets a completion.
        await finish(tx, fx, member, None, failure, now_ms, complete_parent=member == invocation_id)
    return "requested", fx.build()
