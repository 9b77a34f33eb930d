"""The SQL of the journal store, part 3: completions, timers, and what a write does to other invocations.

A completion is inserted at most once per journal entry (the primary key and
``ON CONFLICT DO NOTHING``; a trigger forbids updates). Inserting one can wake
the invocation when it is ``suspended`` on that index; the write reports that
in ``Effects`` so the proxy schedules an attempt after the commit.
"""

from __future__ import annotations

from typing import Final

from handler_sdk.protocol import COMPLETABLE_KINDS
from proxy.store import _ops_locks as locks
from proxy.store._tx import Tx, for_update, lock_invocation, skip_locked
from proxy.store.base import CompleteEntryOutcome, Effects, Ended, StoredFailure, TimerRow

_INSERT_COMPLETION: Final = (
    # Through the journal row, so a completion is only ever written for an existing entry.
    # (The SELECT needs its WHERE for ON CONFLICT to parse as an upsert.)
    "INSERT INTO completions (invocation_id, idx, result, failure_code, failure_message, created_at_ms)"
    " SELECT invocation_id, idx, ?, ?, ?, ? FROM journal WHERE invocation_id = ? AND idx = ?"
    " ON CONFLICT DO NOTHING"
)
_WAKE: Final = (
    "UPDATE invocations SET status = 'pending', waiting_on = NULL, modified_at_ms = ?"
    " WHERE id = ? AND status = 'suspended'"
)
#: ``waiting_on`` (a JSON list of indices) holds the index bound to ``?``.
_WAITS_ON: Final = {
    "sqlite": " AND EXISTS (SELECT 1 FROM json_each(waiting_on) WHERE value = ?)",
    "postgresql": " AND CAST(waiting_on AS JSONB) @> to_jsonb(CAST(? AS INTEGER))",
}


class EffectsBuilder:
    """Collects the ``Effects`` of one write; every invocation is listed once per list, in first-seen order."""

    __slots__ = ("_ended", "_notified", "_woken")

    def __init__(self) -> None:
        self._woken: dict[str, None] = {}
        self._notified: dict[str, None] = {}
        self._ended: list[Ended] = []

    def wake(self, invocation_id: str) -> None:
        self._woken[invocation_id] = None

    def notify(self, invocation_id: str) -> None:
        self._notified[invocation_id] = None

    def end(self, ended: Ended) -> None:
        self._ended.append(ended)

    def build(self) -> Effects:
        # An invocation handed a key's lock and then ended in the same write (a cascade reaching the
        # head of a queue) is not runnable: it is listed as ended only.
        ended = {e.invocation_id for e in self._ended}
        woken = [i for i in self._woken if i not in ended]
        return Effects(woken=woken, notified=list(self._notified), ended=list(self._ended))


async def add_completion(
    tx: Tx,
    fx: EffectsBuilder,
    invocation_id: str,
    index: int,
    result: bytes | None,
    failure: StoredFailure | None,
    now_ms: int,
    *,
    locked: bool = False,
) -> bool:
    """Complete the entry at ``index`` unless it already is (or does not exist); wake the invocation
    if it is suspended on that index. True when the completion was written now.

    ``locked``: the transaction holds the invocation's lock already (it is the invocation being written)."""
    if not locked:
        await lock_invocation(tx, invocation_id)
    inserted = await tx.execute(
        _INSERT_COMPLETION,
        (
            None if failure is not None else result,
            None if failure is None else failure.code,
            None if failure is None else failure.message,
            now_ms,
            invocation_id,
            index,
        ),
    )
    if inserted == 0:
        return False
    fx.notify(invocation_id)
    if await tx.execute(_WAKE + _WAITS_ON[tx.dialect], (now_ms, invocation_id, index)):
        fx.wake(invocation_id)
    return True


async def finish(
    tx: Tx,
    fx: EffectsBuilder,
    invocation_id: str,
    output: bytes | None,
    failure: StoredFailure | None,
    now_ms: int,
    *,
    complete_parent: bool = True,
) -> None:
    """The consequences of an invocation having just ended (its row already says so): its timers go,
    the caller's entry is completed (for a call, when ``complete_parent``), an exclusive invocation
    leaves its key's queue or hands the key's lock on, and it is listed as ended."""
    await tx.execute("DELETE FROM timers WHERE invocation_id = ?", (invocation_id,))
    row = await tx.fetchone(
        "SELECT parent_id, parent_index, parent_awaits, service, key, exclusive FROM invocations WHERE id = ?",
        (invocation_id,),
    )
    if row is not None and row[4] is not None:
        # Its get_promise entries stop waiting: an ended invocation is never completed again.
        await tx.execute("DELETE FROM promise_waiters WHERE invocation_id = ?", (invocation_id,))
        if row[5]:
            new_holder = await locks.release(tx, invocation_id, row[3], row[4], now_ms)
            if new_holder is not None:
                fx.wake(new_holder)
    if complete_parent and row is not None and row[0] is not None and row[2]:
        await add_completion(tx, fx, row[0], row[1], output, failure, now_ms)
    fx.end(Ended(invocation_id=invocation_id, output=output, failure=failure))


async def complete_entry(
    tx: Tx,
    invocation_id: str,
    index: int,
    now_ms: int,
    result: bytes | None,
    failure: StoredFailure | None,
    kind: str | None,
) -> tuple[CompleteEntryOutcome, Effects]:
    fx = EffectsBuilder()
    await lock_invocation(tx, invocation_id)  # no other completion of the entry can land after this check
    row = await tx.fetchone(
        "SELECT j.kind, c.idx IS NOT NULL FROM journal j"
        " LEFT JOIN completions c ON c.invocation_id = j.invocation_id AND c.idx = j.idx"
        " WHERE j.invocation_id = ? AND j.idx = ?",
        (invocation_id, index),
    )
    if row is None or row[0] not in COMPLETABLE_KINDS or (kind is not None and row[0] != kind):
        return "not_found", fx.build()
    if row[1]:
        return "already_completed", fx.build()
    written = await add_completion(tx, fx, invocation_id, index, result, failure, now_ms, locked=True)
    assert written
    return "completed", fx.build()


async def fire_timer(tx: Tx, invocation_id: str, index: int, now_ms: int) -> Effects:
    fx = EffectsBuilder()
    deleted = await tx.execute("DELETE FROM timers WHERE invocation_id = ? AND idx = ?", (invocation_id, index))
    if deleted:  # else already fired, or dropped (claimed early, ended, cancelled)
        await _apply_timer(tx, fx, invocation_id, index, now_ms)
    return fx.build()


async def fire_due_timers(tx: Tx, now_ms: int, limit: int) -> tuple[list[TimerRow], Effects]:
    """Fire up to ``limit`` timers due by ``now_ms``, earliest first, in this one transaction.

    The timers are claimed with their rows locked; on PostgreSQL, rows that
    another instance's transaction is firing are skipped, so each timer fires
    once however many instances look at the same due times.
    """
    rows = await tx.fetchall(
        f"SELECT invocation_id, idx, due_at_ms FROM timers WHERE due_at_ms <= ? ORDER BY due_at_ms LIMIT ?"
        f"{skip_locked(tx)}",
        (now_ms, limit),
    )
    fx = EffectsBuilder()
    fired: list[TimerRow] = []
    for invocation_id, index, due_at_ms in rows:
        await tx.execute("DELETE FROM timers WHERE invocation_id = ? AND idx = ?", (invocation_id, index))
        await _apply_timer(tx, fx, invocation_id, index, now_ms)
        fired.append(TimerRow(invocation_id=invocation_id, index=index, due_at_ms=due_at_ms))
    return fired, fx.build()


async def _apply_timer(tx: Tx, fx: EffectsBuilder, invocation_id: str, index: int, now_ms: int) -> None:
    """What a timer just deleted does: ``-1`` makes its invocation ``pending``, ``>= 0`` completes a sleep."""
    if index >= 0:
        await add_completion(tx, fx, invocation_id, index, None, None, now_ms)
        return
    row = await tx.fetchone(
        f"SELECT status, service, key, exclusive FROM invocations WHERE id = ?{for_update(tx)}", (invocation_id,)
    )
    if row is None or row[0] not in ("scheduled", "backing_off"):
        return
    await tx.execute(
        "UPDATE invocations SET status = 'pending', modified_at_ms = ? WHERE id = ?", (now_ms, invocation_id)
    )
    # A delayed exclusive start takes its key's lock now, or queues for it. (One backing off holds it.)
    if row[0] == "scheduled" and row[3] and row[2] is not None:
        if not await locks.take_or_queue(tx, invocation_id, row[1], row[2], now_ms):
            return
    fx.wake(invocation_id)


async def insert_start_timer(tx: Tx, invocation_id: str, due_at_ms: int) -> None:
    """Set (or move) the ``-1`` timer that makes a scheduled or backing-off invocation ``pending``."""
    await tx.execute(
        "INSERT INTO timers (invocation_id, idx, due_at_ms) VALUES (?, -1, ?)"
        " ON CONFLICT (invocation_id, idx) DO UPDATE SET due_at_ms = excluded.due_at_ms",
        (invocation_id, due_at_ms),
    )
