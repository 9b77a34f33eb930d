"""The SQL of the SQLite store: one plain function per verb, run as a job on a store thread.

Every function takes the connection first and runs inside a transaction
opened by its thread: a write job inside the writer's batch transaction (and
its own savepoint), a read job inside a read transaction. Nothing here commits.
"""

from __future__ import annotations

import sqlite3

import msgspec

from handler_sdk.protocol import ServiceManifest
from proxy.store.base import (
    AppendOutcome,
    AttemptRow,
    Claim,
    Created,
    Deployment,
    IdempotencyConflict,
    Invocation,
    InvocationStatus,
    JournalRow,
    NewInvocation,
    ServiceRow,
    StoredFailure,
)

SECRET_KEY = "token_secret"
_ACTIVE = "status IN ('pending', 'running', 'backing_off')"  # the WHERE of the partial index invocations_active
#: The fencing rule: a write on behalf of an attempt lands only while that attempt is the running one.
_CURRENT_ATTEMPT = "id = ? AND status = 'running' AND attempt = ?"
_INVOCATION_COLUMNS = (
    "id, service, handler, key, status, input, headers, deployment_id, idempotency_key, attempt, journal_len,"
    " output, failure_code, failure_message, last_failure_code, last_failure_message, next_run_at_ms,"
    " created_at_ms, modified_at_ms, completed_at_ms"
)
_headers_decoder = msgspec.json.Decoder(dict[str, str])

# --------------------------------------------------------------------------- rows


def _failure(code: int | None, message: str | None) -> StoredFailure | None:
    return None if code is None else StoredFailure(code=code, message=message or "")


def _invocation(row: sqlite3.Row) -> Invocation:
    status: InvocationStatus = row["status"]
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
        failure=_failure(row["failure_code"], row["failure_message"]),
        last_failure=_failure(row["last_failure_code"], row["last_failure_message"]),
        next_run_at_ms=row["next_run_at_ms"],
        created_at_ms=row["created_at_ms"],
        modified_at_ms=row["modified_at_ms"],
        completed_at_ms=row["completed_at_ms"],
    )


# --------------------------------------------------------------------------- reads


def get_invocation(conn: sqlite3.Connection, invocation_id: str) -> Invocation | None:
    row = conn.execute(f"SELECT {_INVOCATION_COLUMNS} FROM invocations WHERE id = ?", (invocation_id,)).fetchone()
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
            failure=_failure(r[5], r[6]),
        )
        for r in rows
    ]


def list_active(conn: sqlite3.Connection) -> list[tuple[str, int | None]]:
    rows = conn.execute(
        f"SELECT id, next_run_at_ms FROM invocations WHERE {_ACTIVE} AND status != 'running'"
        " ORDER BY created_at_ms, rowid"
    ).fetchall()
    return [(r[0], r[1]) for r in rows]


def list_invocations(conn: sqlite3.Connection, status: InvocationStatus | None, limit: int) -> list[Invocation]:
    order = "ORDER BY created_at_ms DESC, rowid DESC LIMIT ?"
    if status is None:
        rows = conn.execute(f"SELECT {_INVOCATION_COLUMNS} FROM invocations {order}", (limit,)).fetchall()
    else:
        rows = conn.execute(
            f"SELECT {_INVOCATION_COLUMNS} FROM invocations WHERE status = ? {order}", (status, limit)
        ).fetchall()
    return [_invocation(r) for r in rows]


def read_secret(conn: sqlite3.Connection) -> bytes | None:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (SECRET_KEY,)).fetchone()
    return None if row is None else bytes(row[0])


def get_deployment(conn: sqlite3.Connection, deployment_id: str) -> Deployment | None:
    row = conn.execute("SELECT id, manifest, created_at_ms FROM deployments WHERE id = ?", (deployment_id,)).fetchone()
    if row is None:
        return None
    endpoints = conn.execute(
        "SELECT uri FROM deployment_endpoints WHERE deployment_id = ? ORDER BY created_at_ms, uri", (deployment_id,)
    ).fetchall()
    return Deployment(id=row[0], manifest=row[1], endpoints=[e[0] for e in endpoints], created_at_ms=row[2])


def list_deployments(conn: sqlite3.Connection) -> list[Deployment]:
    endpoints: dict[str, list[str]] = {}
    for deployment_id, uri in conn.execute(
        "SELECT deployment_id, uri FROM deployment_endpoints ORDER BY created_at_ms, uri"
    ).fetchall():
        endpoints.setdefault(deployment_id, []).append(uri)
    rows = conn.execute("SELECT id, manifest, created_at_ms FROM deployments ORDER BY created_at_ms, id").fetchall()
    return [Deployment(id=r[0], manifest=r[1], endpoints=endpoints.get(r[0], []), created_at_ms=r[2]) for r in rows]


def list_services(conn: sqlite3.Connection) -> list[ServiceRow]:
    rows = conn.execute("SELECT name, deployment_id, manifest, modified_at_ms FROM services ORDER BY name").fetchall()
    return [ServiceRow(name=r[0], deployment_id=r[1], manifest=r[2], modified_at_ms=r[3]) for r in rows]


# --------------------------------------------------------------------------- writes


def ensure_secret(conn: sqlite3.Connection, candidate: bytes) -> bytes:
    """Store ``candidate`` as the secret unless the database already has one; return the stored one."""
    conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", (SECRET_KEY, candidate))
    secret = read_secret(conn)
    assert secret is not None
    return secret


def create_invocation(conn: sqlite3.Connection, new: NewInvocation, now_ms: int) -> Created:
    if new.idempotency_key is not None:
        row = conn.execute(
            f"SELECT {_INVOCATION_COLUMNS} FROM invocations WHERE service = ? AND handler = ?"
            " AND coalesce(key, '') = coalesce(?, '') AND idempotency_key = ?",
            (new.service, new.handler, new.key, new.idempotency_key),
        ).fetchone()
        if row is not None:
            existing = _invocation(row)
            if existing.input != new.input:
                raise IdempotencyConflict(existing)
            return Created(invocation=existing, created=False)
    conn.execute(
        "INSERT INTO invocations (id, service, handler, key, status, input, headers, deployment_id,"
        " idempotency_key, created_at_ms, modified_at_ms) VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?)",
        (
            new.id,
            new.service,
            new.handler,
            new.key,
            new.input,
            msgspec.json.encode(new.headers).decode(),
            new.deployment_id,
            new.idempotency_key,
            now_ms,
            now_ms,
        ),
    )
    created = get_invocation(conn, new.id)
    assert created is not None
    return Created(invocation=created, created=True)


def claim(conn: sqlite3.Connection, invocation_id: str, endpoint: str | None, now_ms: int) -> Claim | None:
    updated = conn.execute(
        "UPDATE invocations SET status = 'running', attempt = attempt + 1, next_run_at_ms = NULL, modified_at_ms = ?"
        f" WHERE id = ? AND {_ACTIVE} AND status != 'running'",
        (now_ms, invocation_id),
    ).rowcount
    if updated == 0:
        return None
    invocation = get_invocation(conn, invocation_id)
    assert invocation is not None
    conn.execute(
        "INSERT INTO attempts (invocation_id, attempt, endpoint, started_at_ms) VALUES (?, ?, ?, ?)",
        (invocation_id, invocation.attempt, endpoint, now_ms),
    )
    return Claim(invocation=invocation, journal=get_journal(conn, invocation_id))


def append(
    conn: sqlite3.Connection,
    invocation_id: str,
    attempt: int,
    index: int,
    kind: str,
    name: str,
    entry: bytes,
    now_ms: int,
) -> AppendOutcome:
    # The fencing check and the length bump are one statement, so they cannot be torn apart.
    updated = conn.execute(
        "UPDATE invocations SET journal_len = journal_len + 1, modified_at_ms = ?"
        f" WHERE {_CURRENT_ATTEMPT} AND journal_len = ?",
        (now_ms, invocation_id, attempt, index),
    ).rowcount
    if updated == 1:
        conn.execute(
            "INSERT INTO journal (invocation_id, idx, kind, name, attempt, entry, created_at_ms)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (invocation_id, index, kind, name, attempt, entry, now_ms),
        )
        return "appended"
    row = conn.execute("SELECT status, attempt, journal_len FROM invocations WHERE id = ?", (invocation_id,)).fetchone()
    if row is None:
        return "not_found"
    status, current_attempt, journal_len = row
    if status != "running" or current_attempt != attempt:
        return "fenced"
    if index > journal_len:
        return "gap"
    stored = conn.execute(
        "SELECT kind, name, attempt, entry FROM journal WHERE invocation_id = ? AND idx = ?", (invocation_id, index)
    ).fetchone()
    if stored is not None and tuple(stored) == (kind, name, attempt, entry):
        return "duplicate"
    return "conflict"


def complete(conn: sqlite3.Connection, invocation_id: str, attempt: int, output: bytes, now_ms: int) -> bool:
    updated = conn.execute(
        "UPDATE invocations SET status = 'completed', output = ?, completed_at_ms = ?, modified_at_ms = ?"
        f" WHERE {_CURRENT_ATTEMPT}",
        (output, now_ms, now_ms, invocation_id, attempt),
    ).rowcount
    if updated == 0:
        return False
    _close_attempt(conn, invocation_id, attempt, "completed", None, now_ms)
    return True


def fail(
    conn: sqlite3.Connection,
    invocation_id: str,
    attempt: int,
    failure: StoredFailure,
    now_ms: int,
    *,
    attempt_failure: StoredFailure | None = None,
) -> bool:
    last = attempt_failure
    updated = conn.execute(
        "UPDATE invocations SET status = 'failed', failure_code = ?, failure_message = ?, completed_at_ms = ?,"
        " last_failure_code = coalesce(?, last_failure_code), last_failure_message = coalesce(?, last_failure_message),"
        f" modified_at_ms = ? WHERE {_CURRENT_ATTEMPT}",
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
    ).rowcount
    if updated == 0:
        return False
    _close_attempt(conn, invocation_id, attempt, "failed", attempt_failure or failure, now_ms)
    return True


def backoff(
    conn: sqlite3.Connection, invocation_id: str, attempt: int, failure: StoredFailure, next_run_at_ms: int, now_ms: int
) -> bool:
    updated = conn.execute(
        "UPDATE invocations SET status = 'backing_off', last_failure_code = ?, last_failure_message = ?,"
        f" next_run_at_ms = ?, modified_at_ms = ? WHERE {_CURRENT_ATTEMPT}",
        (failure.code, failure.message, next_run_at_ms, now_ms, invocation_id, attempt),
    ).rowcount
    if updated == 0:
        return False
    _close_attempt(conn, invocation_id, attempt, "retry", failure, now_ms)
    return True


def _close_attempt(
    conn: sqlite3.Connection,
    invocation_id: str,
    attempt: int,
    outcome: str,
    failure: StoredFailure | None,
    now_ms: int,
) -> None:
    conn.execute(
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


def abandon_running(conn: sqlite3.Connection, now_ms: int) -> int:
    conn.execute(
        # Row-value IN lets SQLite look the attempts up by primary key instead of scanning them all.
        "UPDATE attempts SET ended_at_ms = ?, outcome = 'abandoned' WHERE ended_at_ms IS NULL"
        " AND (invocation_id, attempt) IN"
        f" (SELECT id, attempt FROM invocations WHERE {_ACTIVE} AND status = 'running')",
        (now_ms,),
    )
    return conn.execute(
        f"UPDATE invocations SET status = 'pending', modified_at_ms = ? WHERE {_ACTIVE} AND status = 'running'",
        (now_ms,),
    ).rowcount


def register_deployment(
    conn: sqlite3.Connection,
    deployment_id: str,
    uri: str,
    manifest: bytes,
    services: list[ServiceManifest],
    now_ms: int,
) -> Deployment:
    """``services`` is the decoded ``manifest``; decoding happens before the job so bad input never queues."""
    same = conn.execute(
        "SELECT d.id FROM deployment_endpoints e JOIN deployments d ON d.id = e.deployment_id"
        " WHERE e.uri = ? AND d.manifest = ?",
        (uri, manifest),
    ).fetchone()
    if same is not None:  # a re-registration of the same endpoint: nothing changes
        found = get_deployment(conn, same[0])
        assert found is not None
        return found
    twin = conn.execute(
        "SELECT id FROM deployments WHERE manifest = ? ORDER BY created_at_ms, id LIMIT 1", (manifest,)
    ).fetchone()
    if twin is not None:
        chosen = str(twin[0])
    else:
        chosen = deployment_id
        conn.execute(
            "INSERT INTO deployments (id, manifest, created_at_ms) VALUES (?, ?, ?)", (chosen, manifest, now_ms)
        )
    conn.execute(
        "INSERT INTO deployment_endpoints (uri, deployment_id, created_at_ms) VALUES (?, ?, ?)"
        " ON CONFLICT (uri) DO UPDATE SET deployment_id = excluded.deployment_id,"
        " created_at_ms = excluded.created_at_ms",
        (uri, chosen, now_ms),
    )
    conn.executemany(
        "INSERT INTO services (name, deployment_id, manifest, modified_at_ms) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (name) DO UPDATE SET deployment_id = excluded.deployment_id, manifest = excluded.manifest,"
        " modified_at_ms = excluded.modified_at_ms",
        [(service.name, chosen, msgspec.json.encode(service), now_ms) for service in services],
    )
    deployment = get_deployment(conn, chosen)
    assert deployment is not None
    return deployment


def remove_endpoint(conn: sqlite3.Connection, uri: str) -> bool:
    return conn.execute("DELETE FROM deployment_endpoints WHERE uri = ?", (uri,)).rowcount > 0
