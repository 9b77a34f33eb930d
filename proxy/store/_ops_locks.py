"""The SQL of the journal store, part 6: the locks of object and workflow keys, and their queues.

An exclusive invocation with a key holds the lock of its (service, key) from
the moment it becomes runnable until it ends. The lock is a row of
``key_locks``; the invocations waiting for it are rows of ``key_queue`` (and
have status ``queued``), ordered by an ever-growing ``seq``. Invariant: a key
has queued invocations only while its lock is held, because the end of a holder
hands the lock straight to the head of the queue in the same transaction.

These functions change rows only; the caller reports what they return in its
``Effects`` (this module sits below ``_ops_completions``, which imports it).
"""

from __future__ import annotations

from typing import Final

from proxy.store._tx import Tx, lock_name

#: The head of a key's queue (the index ``key_queue_order``, already in arrival order).
QUEUE_HEAD_SQL: Final = "SELECT seq, invocation_id FROM key_queue WHERE service = ? AND key = ? ORDER BY seq LIMIT 1"
#: A key's whole queue, in arrival order.
QUEUE_SQL: Final = "SELECT invocation_id FROM key_queue WHERE service = ? AND key = ? ORDER BY seq"


async def take_or_queue(tx: Tx, invocation_id: str, service: str, key: str, now_ms: int) -> bool:
    """The exclusive invocation has just become ``pending``: take its key's lock (True), or, when
    another holds it, move it to ``queued`` at the end of the key's queue (False)."""
    await lock_name(tx, "key", service, key)  # taking, queueing and handing on a key's lock take turns
    taken = await tx.execute(
        "INSERT INTO key_locks (service, key, holder_id) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
        (service, key, invocation_id),
    )
    if taken:
        return True
    holder = await tx.fetchone("SELECT holder_id FROM key_locks WHERE service = ? AND key = ?", (service, key))
    assert holder is not None  # the insert just conflicted with it, in this transaction
    if holder[0] == invocation_id:
        return True  # it holds it already (not something the store does, but harmless)
    await tx.execute(
        "UPDATE invocations SET status = 'queued', modified_at_ms = ? WHERE id = ?", (now_ms, invocation_id)
    )
    await tx.execute(
        "INSERT INTO key_queue (service, key, invocation_id) VALUES (?, ?, ?)", (service, key, invocation_id)
    )
    return False


async def release(tx: Tx, invocation_id: str, service: str, key: str, now_ms: int) -> str | None:
    """The exclusive invocation has just ended (its row already says so). If it was queued, it leaves
    the queue; if it held the lock, the lock goes to the head of the queue, which becomes ``pending``.
    Returns the id of that new holder (to list in ``Effects.woken``), if any."""
    await lock_name(tx, "key", service, key)
    await tx.execute("DELETE FROM key_queue WHERE invocation_id = ?", (invocation_id,))
    released = await tx.execute(
        "DELETE FROM key_locks WHERE service = ? AND key = ? AND holder_id = ?", (service, key, invocation_id)
    )
    if not released:
        return None
    head = await tx.fetchone(QUEUE_HEAD_SQL, (service, key))
    if head is None:
        return None
    seq, next_id = head
    await tx.execute("DELETE FROM key_queue WHERE seq = ?", (seq,))
    await tx.execute("INSERT INTO key_locks (service, key, holder_id) VALUES (?, ?, ?)", (service, key, next_id))
    await tx.execute(
        "UPDATE invocations SET status = 'pending', modified_at_ms = ? WHERE id = ? AND status = 'queued'",
        (now_ms, next_id),
    )
    return str(next_id)
