"""The SQL of the SQLite store, part 6: the locks of object and workflow keys, and their queues.

An exclusive invocation with a key holds the lock of its (service, key) from
the moment it becomes runnable until it ends. The lock is a row of
``key_locks``; the invocations waiting for it are rows of ``key_queue`` (and
have status ``queued``), ordered by an ever-growing ``seq``. Invariant: a key
has queued invocations only while its lock is held, because the end of a holder
hands the lock straight to the head of the queue in the same transaction.

These functions change rows only; the caller reports what they return in its
``Effects`` (this module sits below ``_sqlite_ops_completions``, which imports it).
"""

from __future__ import annotations

import sqlite3
from typing import Final

#: The head of a key's queue (the index ``key_queue_order``, already in arrival order).
QUEUE_HEAD_SQL: Final = "SELECT seq, invocation_id FROM key_queue WHERE service = ? AND key = ? ORDER BY seq LIMIT 1"
#: A key's whole queue, in arrival order.
QUEUE_SQL: Final = "SELECT invocation_id FROM key_queue WHERE service = ? AND key = ? ORDER BY seq"


def take_or_queue(conn: sqlite3.Connection, invocation_id: str, service: str, key: str, now_ms: int) -> bool:
    """The exclusive invocation has just become ``pending``: take its key's lock (True), or, when
    another holds it, move it to ``queued`` at the end of the key's queue (False)."""
    taken = conn.execute(
        "INSERT INTO key_locks (service, key, holder_id) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
        (service, key, invocation_id),
    ).rowcount
    if taken:
        return True
    holder = conn.execute("SELECT holder_id FROM key_locks WHERE service = ? AND key = ?", (service, key)).fetchone()
    if holder[0] == invocation_id:
        return True  # it holds it already (not something the store does, but harmless)
    conn.execute("UPDATE invocations SET status = 'queued', modified_at_ms = ? WHERE id = ?", (now_ms, invocation_id))
    conn.execute("INSERT INTO key_queue (service, key, invocation_id) VALUES (?, ?, ?)", (service, key, invocation_id))
    return False


def release(conn: sqlite3.Connection, invocation_id: str, service: str, key: str, now_ms: int) -> str | None:
    """The exclusive invocation has just ended (its row already says so). If it was queued, it leaves
    the queue; if it held the lock, the lock goes to the head of the queue, which becomes ``pending``.
    Returns the id of that new holder (to list in ``Effects.woken``), if any."""
    conn.execute("DELETE FROM key_queue WHERE invocation_id = ?", (invocation_id,))
    released = conn.execute(
        "DELETE FROM key_locks WHERE service = ? AND key = ? AND holder_id = ?", (service, key, invocation_id)
    ).rowcount
    if not released:
        return None
    head = conn.execute(QUEUE_HEAD_SQL, (service, key)).fetchone()
    if head is None:
        return None
    seq, next_id = head
    conn.execute("DELETE FROM key_queue WHERE seq = ?", (seq,))
    conn.execute("INSERT INTO key_locks (service, key, holder_id) VALUES (?, ?, ?)", (service, key, next_id))
    conn.execute(
        "UPDATE invocations SET status = 'pending', modified_at_ms = ? WHERE id = ? AND status = 'queued'",
        (now_ms, next_id),
    )
    return str(next_id)
