"""The SQL of the SQLite store, part 1: shared SQL fragments, row decoding, and every read.

The store's SQL is plain functions, one per verb, run as jobs on a store
thread. They are split by concept:

* ``_sqlite_ops`` (this module): rows and reads.
* ``_sqlite_ops_invocations``: the life of one invocation (create, claim,
  append, suspend, complete, fail, backoff, pause, resume, abandon).
* ``_sqlite_ops_completions``: completions, timers, and what a write does to
  other invocations (``Effects``).
* ``_sqlite_ops_cancel``: the cancel and kill cascades.
* ``_sqlite_ops_deployments``: deployments, services and the secret.
* ``_sqlite_ops_locks``: the locks of object and workflow keys and their queues.
* ``_sqlite_ops_keys``: keyed state, durable promises, key status and the
  purge of ended workflows.

Every function takes the connection first and runs inside a transaction
opened by its thread: a write job inside the writer's batch transaction (and
its own savepoint), a read job inside a read transaction. Nothing commits.
"""

from __future__ import annotations

import sqlite3
from typing import Final

import msgspec

from proxy.store.base import (
    ACTIVE_STATUSES,
    AttemptRow,
    CompletionRow,
    Invocation,
    InvocationStatus,
    JournalRow,
    StoredFailure,
    TimerRow,
)

#: The WHERE term of the partial index ``invocations_unfinished``; a query must repeat it verbatim to use the index.
UNFINISHED: Final = "status IN ('scheduled', 'queued', 'pending', 'running', 'suspended', 'backing_off', 'paused')"
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
RUNNABLE_SQL: Final = (
    f"SELECT id FROM invocations WHERE {UNFINISHED} AND status = 'pending' ORDER BY created_at_ms, rowid"
)

_headers_decoder = msgspec.json.Decoder(dict[str, str])
_indices_decoder = msgspec.json.Decoder(list[int])
_indices_encoder = msgspec.json.Encoder()


def encode_indices(indices: list[int]) -> str:
    return _indices_encoder.encode(indices).decode()


# --------------------------------------------------------------------------- rows


def failure_of(code: int | None, message: str | None) -> StoredFailure | None:
    return None if code is None else StoredFailure(code=code, message=message or "")


def _invocation(row: sqlite3.Row) -> Invocation:
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


def _completions(rows: list[sqlite3.Row]) -> list[CompletionRow]:
    return [CompletionRow(index=r[0], result=r[1], failure=failure_of(r[2], r[3]), created_at_ms=r[4]) for r in rows]


# --------------------------------------------------------------------------- reads


def get_invocation(conn: sqlite3.Connection, invocation_id: str) -> Invocation | None:
    row = conn.execute(f"SELECT {INVOCATION_COLUMNS} FROM invocations WHERE id = ?", (invocation_id,)).fetchone()
    return None if row is None else _invocation(row)


def find_by_idempotency_key(
    conn: sqlite3.Connection, service: str, handler: str, key: str | None, idempotency_key: str
) -> Invocation | None:
    row = conn.execute(
        f"SELECT {INVOCATION_COLUMNS} FROM invocations WHERE service = ? AND handler = ?"
        " AND coalesce(key, '') = coalesce(?, '') AND idempotency_key = ?",
        (service, handler, key, idempotency_key),
    ).fetchone()
    return None if row is None else _invocation(row)


def get_journal(conn: sqlite3.Connection, invocation_id: str) -> list[JournalRow]:
    rows = conn.execute(
        "SELECT idx, kind, name, attempt, entry, created_at_ms FROM journal WHERE invocation_id = ? ORDER BY idx",
        (invocation_id,),
    ).fetchall()
    return [JournalRow(index=r[0], kind=r[1], name=r[2], attempt=r[3], entry=r[4], created_at_ms=r[5]) for r in rows]


def get_attempts(conn: sqlite3.Connection, invocation_id: str) -> list[AttemptRow]:
    rows = conn.execute(
        "SELECT attempt, endpoint, started_at_ms, ended_at_ms, outcome, failure_code, failure_message"
        " FROM attempts WHERE invocation_id = ? ORDER BY attempt",
        (invocation_id,),
    ).fetchall()
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


def get_all_completions(conn: sqlite3.Connection, invocation_id: str) -> list[CompletionRow]:
    rows = conn.execute(
        "SELECT idx, result, failure_code, failure_message, created_at_ms FROM completions"
        " WHERE invocation_id = ? ORDER BY idx",
        (invocation_id,),
    ).fetchall()
    return _completions(rows)


def get_completions(conn: sqlite3.Connection, invocation_id: str, indices: list[int]) -> list[CompletionRow]:
    rows = conn.execute(
        "SELECT idx, result, failure_code, failure_message, created_at_ms FROM completions"
        " WHERE invocation_id = ? AND idx IN (SELECT value FROM json_each(?)) ORDER BY idx",
        (invocation_id, encode_indices(indices)),
    ).fetchall()
    return _completions(rows)


def due_timers(conn: sqlite3.Connection, before_ms: int, limit: int) -> list[TimerRow]:
    rows = conn.execute(DUE_TIMERS_SQL, (before_ms, limit)).fetchall()
    return [TimerRow(invocation_id=r[0], index=r[1], due_at_ms=r[2]) for r in rows]


def list_runnable(conn: sqlite3.Connection) -> list[str]:
    return [r[0] for r in conn.execute(RUNNABLE_SQL).fetchall()]


def list_invocations(conn: sqlite3.Connection, status: InvocationStatus | None, limit: int) -> list[Invocation]:
    order = "ORDER BY created_at_ms DESC, rowid DESC LIMIT ?"
    if status is None:
        rows = conn.execute(f"SELECT {INVOCATION_COLUMNS} FROM invocations {order}", (limit,)).fetchall()
    else:
        # Repeating the partial index's term lets an unfinished status use invocations_unfinished.
        where = f"{UNFINISHED} AND status = ?" if status in ACTIVE_STATUSES else "status = ?"
        rows = conn.execute(
            f"SELECT {INVOCATION_COLUMNS} FROM invocations WHERE {where} {order}", (status, limit)
        ).fetchall()
    return [_invocation(r) for r in rows]
