"""The SQL of the SQLite store, part 3: completions, timers, and what a write does to other invocations.

A completion is inserted at most once per journal entry (the primary key and
``ON CONFLICT DO NOTHING``; a trigger forbids updates). Inserting one can wake
the invocation when it is ``suspended`` on that index; the write reports that
in ``Effects`` so the proxy schedules an attempt after the commit.
"""

from __future__ import annotations

import sqlite3
from typing import Final

from handler_sdk.protocol import COMPLETABLE_KINDS
from proxy.store import _sqlite_ops_locks as locks
from proxy.store.base import CompleteEntryOutcome, Effects, Ended, StoredFailure

_INSERT_COMPLETION: Final = (
    # Through the journal row, so a completion is only ever written for an existing entry.
    # (The SELECT needs its WHERE for ON CONFLICT to parse as an upsert.)
    "INSERT INTO completions (invocation_id, idx, result, failure_code, failure_message, created_at_ms)"
    " SELECT invocation_id, idx, ?, ?, ?, ? FROM journal WHERE invocation_id = ? AND idx = ?"
    " ON CONFLICT DO NOTHING"
)
_WAKE: Final = (
    "UPDATE invocations SET status = 'pending', waiting_on = NULL, modified_at_ms = ?"
    " WHERE id = ? AND status = 'suspended' AND EXISTS (SELECT 1 FROM json_each(waiting_on) WHERE value = ?)"
)


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


def add_completion(
    conn: sqlite3.Connection,
    fx: EffectsBuilder,
    invocation_id: str,
    index: int,
    result: bytes | None,
    failure: StoredFailure | None,
    now_ms: int,
) -> bool:
    """Complete the entry at ``index`` unless it already is (or does not exist); wake the invocation
    if it is suspended on that index. True when the completion was written now."""
    inserted = conn.execute(
        _INSERT_COMPLETION,
        (
            None if failure is not None else result,
            None if failure is None else failure.code,
            None if failure is None else failure.message,
            now_ms,
            invocation_id,
            index,
        ),
    ).rowcount
    if inserted == 0:
        return False
    fx.notify(invocation_id)
    if conn.execute(_WAKE, (now_ms, invocation_id, index)).rowcount:
        fx.wake(invocation_id)
    return True


def finish(
    conn: sqlite3.Connection,
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
    conn.execute("DELETE FROM timers WHERE invocation_id = ?", (invocation_id,))
    row = conn.execute(
        "SELECT parent_id, parent_index, parent_awaits, service, key, exclusive FROM invocations WHERE id = ?",
        (invocation_id,),
    ).fetchone()
    if row is not None and row[4] is not None:
        # Its get_promise entries stop waiting: an ended invocation is never completed again.
        conn.execute("DELETE FROM promise_waiters WHERE invocation_id = ?", (invocation_id,))
        if row[5]:
            new_holder = locks.release(conn, invocation_id, row[3], row[4], now_ms)
            if new_holder is not None:
                fx.wake(new_holder)
    if complete_parent and row is not None and row[0] is not None and row[2]:
        add_completion(conn, fx, row[0], row[1], output, failure, now_ms)
    fx.end(Ended(invocation_id=invocation_id, output=output, failure=failure))


def complete_entry(
    conn: sqlite3.Connection,
    invocation_id: str,
    index: int,
    now_ms: int,
    result: bytes | None,
    failure: StoredFailure | None,
    kind: str | None,
) -> tuple[CompleteEntryOutcome, Effects]:
    fx = EffectsBuilder()
    row = conn.execute(
        "SELECT j.kind, c.idx IS NOT NULL FROM journal j"
        " LEFT JOIN completions c ON c.invocation_id = j.invocation_id AND c.idx = j.idx"
        " WHERE j.invocation_id = ? AND j.idx = ?",
        (invocation_id, index),
    ).fetchone()
    if row is None or row[0] not in COMPLETABLE_KINDS or (kind is not None and row[0] != kind):
        return "not_found", fx.build()
    if row[1]:
        return "already_completed", fx.build()
    written = add_completion(conn, fx, invocation_id, index, result, failure, now_ms)
    assert written
    return "completed", fx.build()


def fire_timer(conn: sqlite3.Connection, invocation_id: str, index: int, now_ms: int) -> Effects:
    fx = EffectsBuilder()
    deleted = conn.execute("DELETE FROM timers WHERE invocation_id = ? AND idx = ?", (invocation_id, index)).rowcount
    if deleted == 0:
        return fx.build()  # already fired, or dropped (claimed early, ended, cancelled)
    if index < 0:
        row = conn.execute(
            "SELECT status, service, key, exclusive FROM invocations WHERE id = ?", (invocation_id,)
        ).fetchone()
        if row is None or row[0] not in ("scheduled", "backing_off"):
            return fx.build()
        conn.execute(
            "UPDATE invocations SET status = 'pending', modified_at_ms = ? WHERE id = ?", (now_ms, invocation_id)
        )
        # A delayed exclusive start takes its key's lock now, or queues for it. (One backing off holds it.)
        if row[0] == "scheduled" and row[3] and row[2] is not None:
            if not locks.take_or_queue(conn, invocation_id, row[1], row[2], now_ms):
                return fx.build()
        fx.wake(invocation_id)
    else:
        add_completion(conn, fx, invocation_id, index, None, None, now_ms)
    return fx.build()


def insert_start_timer(conn: sqlite3.Connection, invocation_id: str, due_at_ms: int) -> None:
    """Set (or move) the ``-1`` timer that makes a scheduled or backing-off invocation ``pending``."""
    conn.execute(
        "INSERT INTO timers (invocation_id, idx, due_at_ms) VALUES (?, -1, ?)"
        " ON CONFLICT (invocation_id, idx) DO UPDATE SET due_at_ms = excluded.due_at_ms",
        (invocation_id, due_at_ms),
    )
