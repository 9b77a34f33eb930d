"""The SQL of the journal store, part 1: shared SQL fragments, row decoding, and every read.

The store's SQL is plain ``async`` functions, one per verb, written once for
SQLite and PostgreSQL over a ``Tx`` (see ``_tx``). They are split by concept:

* ``_ops`` (this module): rows and reads.
* ``_ops_invocations``: the life of one invocation (create, claim,
  append, suspend, complete, fail, backoff, pause, resume, abandon) and
  its lease.
* ``_ops_completions``: completions, timers, and what a write does to
  other invocations (``Effects``).
* ``_ops_cancel``: the cancel and kill cascades.
* ``_ops_deployments``: deployments, services and the secret.
* ``_ops_locks``: the locks of object and workflow keys and their queues.
* ``_ops_keys``: keyed state, durable promises, key status and the
  purge of ended workflows.

Every function takes the transaction first and runs inside it: on SQLite a
write inside the writer's batch transaction (and its own savepoint), on
PostgreSQL a transaction of its own, with the row and advisory locks of
``_tx``; a read inside a read-only
snapshot. Nothing here commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, get_args

import msgspec

from proxy.store._tx import Row, Tx, indices_in, insertion_order
from proxy.store.base import (
    ACTIVE_STATUSES,
    TERMINAL_STATUSES,
    AttemptRow,
    CompletionRow,
    Invocation,
    InvocationCursor,
    InvocationStatus,
    JournalRow,
    StoredFailure,
    TimerRow,
)

#: The WHERE term of the partial index ``invocations_unfinished``; a query must repeat it verbatim to use the index.
UNFINISHED: Final = "status IN ('scheduled', 'queued', 'pending', 'running', 'suspended', 'backing_off', 'paused')"
#: The WHERE term of the partial index ``invocations_ended``; a query must repeat it verbatim to use the index.
ENDED: Final = "status IN ('completed', 'failed')"
#: The fencing rule: a write on behalf of an attempt lands only while that attempt is the running one.
CURRENT_ATTEMPT: Final = "id = ? AND status = 'running' AND attempt = ?"
INVOCATION_COLUMNS: Final = (
    "id, service, handler, key, status, input, headers, deployment_id, idempotency_key, attempt, journal_len,"
    " output, failure_code, failure_message, last_failure_code, last_failure_message, next_run_at_ms,"
    " created_at_ms, modified_at_ms, completed_at_ms, parent_id, parent_index, parent_awaits, cancel_requested,"
    " waiting_on, exclusive, attempts_at_resume"
)
#: Served by the index ``timers_by_due`` alone (it covers the WITHOUT ROWID key), already in due order.
DUE_TIMERS_SQL: Final = (
    "SELECT invocation_id, idx, due_at_ms FROM timers WHERE due_at_ms < ? ORDER BY due_at_ms LIMIT ?"
)
_RUNNABLE: Final = f"SELECT id FROM invocations WHERE {UNFINISHED} AND status = 'pending' ORDER BY created_at_ms, "
#: The SQLite form (its query plan is tested): ``rowid`` keeps arrival order among equal timestamps.
RUNNABLE_SQL: Final = _RUNNABLE + "rowid"

_headers_decoder = msgspec.json.Decoder(dict[str, str])
_indices_decoder = msgspec.json.Decoder(list[int])
_indices_encoder = msgspec.json.Encoder()


def encode_indices(indices: list[int]) -> str:
    return _indices_encoder.encode(indices).decode()


# --------------------------------------------------------------------------- rows


def failure_of(code: int | None, message: str | None) -> StoredFailure | None:
    return None if code is None else StoredFailure(code=code, message=message or "")


def _invocation(row: Row) -> Invocation:
    status: InvocationStatus = row["status"]
    waiting_on: str | None = row["waiting_on"]
    return Invocation(
        id=row["id"],
        service=row["service"],
        handler=row["handler"],
        key=row["key"],
        status=status,
        input=row["input"],
        headers=_headers_decoder.decode(row["headers"]),
        deployment_id=row["deployment_id"],
        idempotency_key=row["idempotency_key"],
        attempt=row["attempt"],
        journal_len=row["journal_len"],
        output=row["output"],
        failure=failure_of(row["failure_code"], row["failure_message"]),
        last_failure=failure_of(row["last_failure_code"], row["last_failure_message"]),
        next_run_at_ms=row["next_run_at_ms"],
        created_at_ms=row["created_at_ms"],
        modified_at_ms=row["modified_at_ms"],
        completed_at_ms=row["completed_at_ms"],
        parent_id=row["parent_id"],
        parent_index=row["parent_index"],
        parent_awaits=bool(row["parent_awaits"]),
        cancel_requested=bool(row["cancel_requested"]),
        waiting_on=None if waiting_on is None else _indices_decoder.decode(waiting_on),
        exclusive=bool(row["exclusive"]),
        attempts_at_resume=row["attempts_at_resume"],
    )


def _completions(rows: list[Row]) -> list[CompletionRow]:
    return [CompletionRow(index=r[0], result=r[1], failure=failure_of(r[2], r[3]), created_at_ms=r[4]) for r in rows]


# --------------------------------------------------------------------------- reads


async def get_invocation(tx: Tx, invocation_id: str) -> Invocation | None:
    row = await tx.fetchone(f"SELECT {INVOCATION_COLUMNS} FROM invocations WHERE id = ?", (invocation_id,))
    return None if row is None else _invocation(row)


async def find_by_idempotency_key(
    tx: Tx, service: str, handler: str, key: str | None, idempotency_key: str
) -> Invocation | None:
    row = await tx.fetchone(
        f"SELECT {INVOCATION_COLUMNS} FROM invocations WHERE service = ? AND handler = ?"
        " AND coalesce(key, '') = coalesce(?, '') AND idempotency_key = ?",
        (service, handler, key, idempotency_key),
    )
    return None if row is None else _invocation(row)


async def get_journal(tx: Tx, invocation_id: str) -> list[JournalRow]:
    rows = await tx.fetchall(
        "SELECT idx, kind, name, attempt, entry, created_at_ms FROM journal WHERE invocation_id = ? ORDER BY idx",
        (invocation_id,),
    )
    return [JournalRow(index=r[0], kind=r[1], name=r[2], attempt=r[3], entry=r[4], created_at_ms=r[5]) for r in rows]


async def get_attempts(tx: Tx, invocation_id: str) -> list[AttemptRow]:
    rows = await tx.fetchall(
        "SELECT attempt, endpoint, started_at_ms, ended_at_ms, outcome, failure_code, failure_message"
        " FROM attempts WHERE invocation_id = ? ORDER BY attempt",
        (invocation_id,),
    )
    return [
        AttemptRow(
            attempt=r[0],
            endpoint=r[1],
            started_at_ms=r[2],
            ended_at_ms=r[3],
            outcome=r[4],
            failure=failure_of(r[5], r[6]),
        )
        for r in rows
    ]


async def get_all_completions(tx: Tx, invocation_id: str) -> list[CompletionRow]:
    rows = await tx.fetchall(
        "SELECT idx, result, failure_code, failure_message, created_at_ms FROM completions"
        " WHERE invocation_id = ? ORDER BY idx",
        (invocation_id,),
    )
    return _completions(rows)


async def get_completions(tx: Tx, invocation_id: str, indices: list[int]) -> list[CompletionRow]:
    rows = await tx.fetchall(
        "SELECT idx, result, failure_code, failure_message, created_at_ms FROM completions"
        f" WHERE invocation_id = ? AND {indices_in(tx, 'idx')} ORDER BY idx",
        (invocation_id, encode_indices(indices)),
    )
    return _completions(rows)


async def due_timers(tx: Tx, before_ms: int, limit: int) -> list[TimerRow]:
    rows = await tx.fetchall(DUE_TIMERS_SQL, (before_ms, limit))
    return [TimerRow(invocation_id=r[0], index=r[1], due_at_ms=r[2]) for r in rows]


async def list_runnable(tx: Tx) -> list[str]:
    return [r[0] for r in await tx.fetchall(_RUNNABLE + insertion_order(tx))]


async def list_invocations(
    tx: Tx,
    statuses: Sequence[InvocationStatus] | None,
    service: str | None,
    handler: str | None,
    key: str | None,
    created_after_ms: int | None,
    created_before_ms: int | None,
    cursor: InvocationCursor | None,
    limit: int,
) -> list[Invocation]:
    """Newest first by ``(created_at_ms, id)``; see ``JournalStore.list_invocations``.

    The order is the key of the indexes ``invocations_by_created_id`` and, after an equal
    ``service`` or ``status``, of ``invocations_by_service``, ``invocations_unfinished`` and
    ``invocations_ended``, so a page reads about ``limit`` index entries past the cursor."""
    where: list[str] = []
    params: list[object] = []
    if statuses is not None:
        marks = ", ".join("?" * len(statuses))
        # Repeating a partial index's term lets a set of unfinished (or ended) statuses use it.
        if all(status in ACTIVE_STATUSES for status in statuses):
            where.append(UNFINISHED)
        elif all(status in TERMINAL_STATUSES for status in statuses):
            where.append(ENDED)
        where.append(f"status IN ({marks})")
        params.extend(statuses)
    for column, value in (("service", service), ("handler", handler), ("key", key)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if created_after_ms is not None:
        where.append("created_at_ms > ?")
        params.append(created_after_ms)
    if created_before_ms is not None:
        where.append("created_at_ms < ?")
        params.append(created_before_ms)
    if cursor is not None:
        # (created_at_ms, id) < cursor, spelled so that its first term bounds an index range on both databases.
        where.append("created_at_ms <= ? AND (created_at_ms < ? OR id < ?)")
        params.extend((cursor[0], cursor[0], cursor[1]))
    condition = f" WHERE {' AND '.join(where)}" if where else ""
    rows = await tx.fetchall(
        f"SELECT {INVOCATION_COLUMNS} FROM invocations{condition} ORDER BY created_at_ms DESC, id DESC LIMIT ?",
        (*params, limit),
    )
    return [_invocation(r) for r in rows]


async def invocation_counts(tx: Tx) -> dict[InvocationStatus, int]:
    """Per status: the unfinished ones on ``invocations_unfinished``, the ended ones on ``invocations_ended``."""
    counts: dict[InvocationStatus, int] = dict.fromkeys(get_args(InvocationStatus), 0)
    for term in (UNFINISHED, ENDED):
        for status, count in await tx.fetchall(
            f"SELECT status, count(*) FROM invocations WHERE {term} GROUP BY status"
        ):
            counts[status] = int(count)
    return counts


async def pending_timer_count(tx: Tx) -> int:
    row = await tx.fetchone("SELECT count(*) FROM timers")
    assert row is not None
    return int(row[0])
