"""Schema migrations of the SQLite store, and the guarantees the schema itself enforces."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.store import migrate as migrations
from proxy.store.base import Effects, NewInvocation, StoredFailure, TimerRow
from proxy.store.migrate import (
    Migration,
    SchemaTooNewError,
    current_version,
    latest_version,
    load_migrations,
    migrate,
    split_statements,
)
from proxy.store.sqlite import DatabaseCorruptError, SQLiteStore


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "journal.db"


@pytest.fixture
def conn(db: Path) -> Iterator[sqlite3.Connection]:
    connection = sqlite3.connect(db, isolation_level=None)
    yield connection
    connection.close()


def versions(conn: sqlite3.Connection) -> list[int]:
    return [row[0] for row in conn.execute("SELECT version FROM schema_version ORDER BY version")]


def test_migrations_are_numbered_without_gaps() -> None:
    loaded = load_migrations("sqlite")
    assert [m.version for m in loaded] == list(range(1, latest_version() + 1))
    assert loaded[0].name == "initial"


async def test_a_fresh_database_is_at_the_latest_version(db: Path, conn: sqlite3.Connection) -> None:
    store = SQLiteStore(db)
    await store.open()
    await store.close()
    assert current_version(conn) == latest_version() >= 1
    assert versions(conn) == list(range(1, latest_version() + 1))


async def test_opening_twice_applies_nothing_twice(db: Path, conn: sqlite3.Connection) -> None:
    assert migrate(conn) == list(range(1, latest_version() + 1))
    assert migrate(conn) == []
    for _ in range(2):
        store = SQLiteStore(db)
        await store.open()
        await store.close()
    assert versions(conn) == list(range(1, latest_version() + 1))


async def test_a_newer_schema_is_refused(db: Path, conn: sqlite3.Connection) -> None:
    migrate(conn)
    newer = latest_version() + 1
    conn.execute("INSERT INTO schema_version VALUES (?, 'from_the_future', 0)", (newer,))
    with pytest.raises(SchemaTooNewError) as refused:
        migrate(conn)
    assert (refused.value.found, refused.value.supported) == (newer, latest_version())
    message = str(refused.value)
    assert f"version {newer}" in message and f"up to {latest_version()}" in message
    assert not conn.in_transaction

    store = SQLiteStore(db)
    with pytest.raises(SchemaTooNewError):
        await store.open()
    await store.close()


def test_each_migration_is_its_own_transaction(conn: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch) -> None:
    known = load_migrations("sqlite")
    broken = Migration(len(known) + 1, "broken", "CREATE TABLE half_done (x INTEGER); SELECT * FROM nowhere;")
    monkeypatch.setattr(migrations, "load_migrations", lambda dialect="sqlite": (*known, broken))
    with pytest.raises(sqlite3.OperationalError, match="nowhere"):
        migrate(conn)
    # Every earlier migration committed; the broken one left nothing behind.
    assert current_version(conn) == len(known)
    assert not conn.in_transaction
    assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'half_done'").fetchone()[0] == 0


def test_the_journal_is_append_only(conn: sqlite3.Connection) -> None:
    migrate(conn)
    conn.execute(
        "INSERT INTO invocations (id, service, handler, status, input, deployment_id, created_at_ms, modified_at_ms)"
        " VALUES ('i', 's', 'h', 'running', x'', 'd', 0, 0)"
    )
    row = (
        "INSERT INTO journal (invocation_id, idx, kind, name, attempt, entry, created_at_ms)"
        " VALUES (?, 0, 'run', '', 1, ?, 0)"
    )
    conn.execute(row, ("i", b"A"))
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute(row, ("i", b"B"))
    with pytest.raises(sqlite3.IntegrityError, match="immutable"):
        conn.execute("UPDATE journal SET entry = x'00'")
    with pytest.raises(sqlite3.IntegrityError):  # foreign key: no journal without its invocation
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute(row, ("unknown", b"A"))
    assert conn.execute("SELECT entry FROM journal").fetchall() == [(b"A",)]


def test_split_statements_keeps_trigger_bodies_and_skips_comments() -> None:
    script = """
    -- a comment; with a semicolon
    CREATE TABLE a (x TEXT DEFAULT ';');
    CREATE TRIGGER t BEFORE UPDATE ON a BEGIN SELECT RAISE(ABORT, 'no'); END;
    -- trailing comment
    """
    statements = split_statements(script)
    assert len(statements) == 2
    assert statements[0].endswith("CREATE TABLE a (x TEXT DEFAULT ';');")
    assert statements[1] == "CREATE TRIGGER t BEFORE UPDATE ON a BEGIN SELECT RAISE(ABORT, 'no'); END;"
    with pytest.raises(ValueError, match="incomplete"):
        split_statements("CREATE TABLE a (x TEXT DEFAULT 'unterminated);")


async def test_a_corrupt_database_is_refused(db: Path, conn: sqlite3.Connection) -> None:
    migrate(conn)
    conn.execute("CREATE TABLE filler (x TEXT)")
    conn.execute("CREATE INDEX filler_x ON filler (x)")
    with conn:
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO filler VALUES (?)", [(f"value-{i:05}",) for i in range(2000)])
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'filler_x'").fetchone()[0]
    conn.close()  # checkpoints the WAL into the main file
    with db.open("r+b") as file:
        file.seek((root - 1) * page_size)
        file.write(b"\x0d")  # the index's root page now claims to be a table leaf
    store = SQLiteStore(db)
    with pytest.raises(DatabaseCorruptError, match="quick_check"):
        await store.open()
    await store.close()


def migrate_to(conn: sqlite3.Connection, version: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Apply only the first ``version`` migrations, as an older proxy would have."""
    known = load_migrations("sqlite")
    with monkeypatch.context() as patch:
        patch.setattr(migrations, "load_migrations", lambda dialect="sqlite": known[:version])
        assert migrate(conn) == list(range(1, version + 1))


def insert_v1_invocation(
    conn: sqlite3.Connection, invocation_id: str, status: str, created_at_ms: int, **extra: object
) -> None:
    columns = {
        "id": invocation_id,
        "service": "greeter",
        "handler": "greet",
        "status": status,
        "input": b'"world"',
        "headers": '{"x-trace":"abc"}',
        "deployment_id": "dp-1",
        "created_at_ms": created_at_ms,
        "modified_at_ms": created_at_ms,
        **extra,
    }
    names = ", ".join(columns)
    marks = ", ".join("?" for _ in columns)
    conn.execute(f"INSERT INTO invocations ({names}) VALUES ({marks})", tuple(columns.values()))


async def test_0002_upgrades_a_version_1_database_with_its_data(
    db: Path, conn: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    migrate_to(conn, 1, monkeypatch)
    conn.execute("PRAGMA foreign_keys = ON")
    insert_v1_invocation(conn, "running", "running", 1_000, attempt=1, journal_len=2)
    conn.executemany(
        "INSERT INTO journal (invocation_id, idx, kind, name, attempt, entry, created_at_ms)"
        " VALUES ('running', ?, 'run', 'step', 1, ?, 1100)",
        [(0, b"A"), (1, b"B")],
    )
    conn.execute(
        "INSERT INTO attempts (invocation_id, attempt, endpoint, started_at_ms)"
        " VALUES ('running', 1, 'http://h1', 1001)"
    )
    insert_v1_invocation(
        conn,
        "retrying",
        "backing_off",
        2_000,
        attempt=1,
        next_run_at_ms=9_000,
        last_failure_code=500,
        last_failure_message="boom",
    )
    conn.execute(
        "INSERT INTO attempts (invocation_id, attempt, started_at_ms, ended_at_ms, outcome, failure_code,"
        " failure_message) VALUES ('retrying', 1, 2001, 2002, 'retry', 500, 'boom')"
    )
    insert_v1_invocation(conn, "done", "completed", 3_000, attempt=1, output=b'"hi"', completed_at_ms=3_001)
    insert_v1_invocation(conn, "waiting", "pending", 4_000)

    store = SQLiteStore(db)
    await store.open()
    try:
        assert current_version(conn) == latest_version() >= 2
        running = await store.get_invocation("running")
        assert running is not None
        assert (running.status, running.attempt, running.journal_len, running.headers) == (
            "running",
            1,
            2,
            {"x-trace": "abc"},
        )
        assert (running.parent_id, running.parent_index, running.parent_awaits) == (None, None, False)
        assert (running.cancel_requested, running.waiting_on) == (False, None)
        # Rebuilding the invocations table did not cascade into the journal or the attempts.
        assert [(r.index, r.entry) for r in await store.get_journal("running")] == [(0, b"A"), (1, b"B")]
        assert [(a.attempt, a.endpoint, a.outcome) for a in await store.get_attempts("running")] == [
            (1, "http://h1", None)
        ]
        retrying = await store.get_attempts("retrying")
        assert [(a.outcome, a.failure) for a in retrying] == [("retry", StoredFailure(code=500, message="boom"))]
        # An invocation backing off under version 1 gets the start timer it now needs.
        assert await store.due_timers(100_000, 10) == [TimerRow(invocation_id="retrying", index=-1, due_at_ms=9_000)]
        assert [i.id for i in await store.list_invocations()] == ["waiting", "done", "retrying", "running"]
        assert await store.list_runnable() == ["waiting"]

        # The new statuses and verbs work on the old rows.
        attempt = 1
        assert (await store.append("running", attempt, 2, "awakeable", "a", b"W", 5_000)).outcome == "appended"
        assert await store.suspend("running", attempt, [2], 5_001) == "suspended"
        assert await store.complete_entry("running", 2, 5_002) == (
            "completed",
            Effects(woken=["running"], notified=["running"]),
        )
        assert await store.fire_timer("retrying", -1, 9_000) == Effects(woken=["retrying"])

        def schema(conn: sqlite3.Connection) -> tuple[int, list[str], list[tuple[object, ...]]]:
            foreign_keys = conn.execute("PRAGMA foreign_keys").fetchone()[0]
            indices = [
                r[0]
                for r in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
                    " AND tbl_name IN ('invocations', 'timers') ORDER BY name"
                )
            ]
            return foreign_keys, indices, [tuple(r) for r in conn.execute("PRAGMA foreign_key_check")]

        foreign_keys, indices, dangling = await store.writer.run(schema)
        assert foreign_keys == 1  # migrate() turned them off for the rebuild and back on
        assert dangling == []
        assert indices == [
            "invocations_by_created_id",  # from 0006, in place of invocations_by_created
            "invocations_by_key",  # from 0003
            "invocations_by_parent",
            "invocations_by_service",  # from 0006
            "invocations_ended",  # from 0006
            "invocations_idempotency",
            "invocations_unfinished",
            "invocations_workflow_runs",  # from 0003
            "timers_by_due",
        ]
    finally:
        await store.close()


def test_a_migration_leaving_a_dangling_reference_is_rolled_back(
    conn: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    known = load_migrations("sqlite")
    dangling = Migration(
        len(known) + 1,
        "dangling",
        "INSERT INTO journal (invocation_id, idx, kind, name, attempt, entry, created_at_ms)"
        " VALUES ('nobody', 0, 'run', '', 1, x'00', 0);",
    )
    conn.execute("PRAGMA foreign_keys = ON")
    monkeypatch.setattr(migrations, "load_migrations", lambda dialect="sqlite": (*known, dangling))
    with pytest.raises(RuntimeError, match="dangling foreign key"):
        migrate(conn)
    assert current_version(conn) == len(known)
    assert conn.execute("SELECT count(*) FROM journal").fetchone()[0] == 0
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1  # restored after the failure


def test_completions_are_written_once(conn: sqlite3.Connection) -> None:
    migrate(conn)
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute(
        "INSERT INTO invocations (id, service, handler, status, input, deployment_id, created_at_ms, modified_at_ms)"
        " VALUES ('i', 's', 'h', 'suspended', x'', 'd', 0, 0)"
    )
    conn.execute(
        "INSERT INTO journal (invocation_id, idx, kind, name, attempt, entry, created_at_ms)"
        " VALUES ('i', 0, 'sleep', '', 1, x'', 0)"
    )
    completion = "INSERT INTO completions (invocation_id, idx, result, created_at_ms) VALUES ('i', ?, NULL, 0)"
    conn.execute(completion, (0,))
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute(completion, (0,))
    with pytest.raises(sqlite3.IntegrityError):  # only for an entry of the journal
        conn.execute(completion, (1,))
    with pytest.raises(sqlite3.IntegrityError, match="immutable"):
        conn.execute("UPDATE completions SET result = x'01'")
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("UPDATE invocations SET status = 'sleeping'")


async def test_0003_upgrades_a_version_2_database_with_its_data(
    db: Path, conn: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    migrate_to(conn, 2, monkeypatch)
    conn.execute("PRAGMA foreign_keys = ON")
    insert_v1_invocation(
        conn,
        "waiting",
        "suspended",
        1_000,
        key="k1",
        attempt=1,
        journal_len=1,
        waiting_on="[0]",
        parent_id="caller",
        parent_index=3,
        parent_awaits=1,
        cancel_requested=1,
    )
    conn.execute(
        "INSERT INTO journal (invocation_id, idx, kind, name, attempt, entry, created_at_ms)"
        " VALUES ('waiting', 0, 'sleep', 'nap', 1, x'41', 1100)"
    )
    insert_v1_invocation(conn, "later", "scheduled", 2_000, key="k1", next_run_at_ms=9_000)
    conn.execute("INSERT INTO timers (invocation_id, idx, due_at_ms) VALUES ('later', -1, 9000)")
    insert_v1_invocation(conn, "done", "completed", 3_000, attempt=1, output=b'"hi"', completed_at_ms=3_001)
    insert_v1_invocation(conn, "ready", "pending", 4_000, idempotency_key="once")
    conn.execute("INSERT INTO timers (invocation_id, idx, due_at_ms) VALUES ('waiting', 0, 8000)")
    rowids = conn.execute("SELECT rowid, id FROM invocations ORDER BY rowid").fetchall()

    store = SQLiteStore(db)
    await store.open()
    try:
        assert current_version(conn) == latest_version() >= 3
        assert conn.execute("SELECT rowid, id FROM invocations ORDER BY rowid").fetchall() == rowids
        waiting = await store.get_invocation("waiting")
        assert waiting is not None
        assert (waiting.status, waiting.key, waiting.attempt, waiting.journal_len, waiting.waiting_on) == (
            "suspended",
            "k1",
            1,
            1,
            [0],
        )
        assert (waiting.parent_id, waiting.parent_index, waiting.parent_awaits, waiting.cancel_requested) == (
            "caller",
            3,
            True,
            True,
        )
        assert waiting.exclusive is False  # nothing was exclusive before version 3
        # Rebuilding the invocations table did not cascade into the journal or the timers.
        assert [(r.index, r.entry) for r in await store.get_journal("waiting")] == [(0, b"A")]
        assert await store.due_timers(100_000, 10) == [
            TimerRow(invocation_id="waiting", index=0, due_at_ms=8_000),
            TimerRow(invocation_id="later", index=-1, due_at_ms=9_000),
        ]
        assert [i.id for i in await store.list_invocations()] == ["ready", "done", "later", "waiting"]
        assert await store.list_runnable() == ["ready"]
        found = await store.find_by_idempotency_key("greeter", "greet", None, "once")
        assert found is not None and found.id == "ready"

        # The old rows work with the new verbs: the timer wakes the sleeper, the old keyed ones hold no lock.
        assert await store.fire_timer("waiting", 0, 8_000) == Effects(woken=["waiting"], notified=["waiting"])
        assert await store.fire_timer("later", -1, 9_000) == Effects(woken=["later"])
        claimed = await store.claim("waiting", None, 9_001)
        assert claimed is not None and claimed.state == {}
        assert (await store.key_status("greeter", "k1")).lock_holder is None
        exclusive = NewInvocation(
            id="new", service="greeter", handler="greet", input=b"1", deployment_id="dp-1", key="k1", exclusive=True
        )
        assert (await store.create_invocation(exclusive, 9_002)).invocation.status == "pending"
        assert (await store.key_status("greeter", "k1")).lock_holder == "new"

        def schema(conn: sqlite3.Connection) -> tuple[int, list[str], list[tuple[object, ...]]]:
            foreign_keys = conn.execute("PRAGMA foreign_keys").fetchone()[0]
            tables = [
                r[0]
                for r in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
                )
            ]
            return foreign_keys, tables, [tuple(r) for r in conn.execute("PRAGMA foreign_key_check")]

        foreign_keys, tables, dangling = await store.writer.run(schema)
        assert (foreign_keys, dangling) == (1, [])
        assert {"key_locks", "key_queue", "state", "promises", "promise_waiters"} <= set(tables)
        assert "invocations_new" not in tables
    finally:
        await store.close()


def test_the_schema_keeps_promises_and_queue_order_honest(conn: sqlite3.Connection) -> None:
    migrate(conn)
    conn.execute("PRAGMA foreign_keys = ON")
    promise = (
        "INSERT INTO promises (service, key, name, value, failure_code, failure_message, completed_at_ms)"
        " VALUES ('s', 'k', ?, ?, ?, ?, 0)"
    )
    conn.execute(promise, ("p", b"1", None, None))
    with pytest.raises(sqlite3.IntegrityError):  # completed once
        conn.execute(promise, ("p", b"2", None, None))
    with pytest.raises(sqlite3.IntegrityError):  # a value or a failure, not both, not neither
        conn.execute(promise, ("q", b"1", 500, "boom"))
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute(promise, ("r", None, None, None))
    with pytest.raises(sqlite3.IntegrityError, match="immutable"):
        conn.execute("UPDATE promises SET value = x'00'")
    # The queue's sequence never goes back, even when the newest row is deleted.
    for invocation_id in ("a", "b"):
        conn.execute(
            "INSERT INTO invocations (id, service, handler, key, status, input, deployment_id, created_at_ms,"
            " modified_at_ms, exclusive) VALUES (?, 's', 'h', 'k', 'queued', x'', 'd', 0, 0, 1)",
            (invocation_id,),
        )
    conn.execute("INSERT INTO key_queue (service, key, invocation_id) VALUES ('s', 'k', 'a')")
    conn.execute("DELETE FROM key_queue")
    conn.execute("INSERT INTO key_queue (service, key, invocation_id) VALUES ('s', 'k', 'b')")
    assert conn.execute("SELECT seq FROM key_queue").fetchall() == [(2,)]
    with pytest.raises(sqlite3.IntegrityError):  # a lock is held by an existing invocation
        conn.execute("INSERT INTO key_locks (service, key, holder_id) VALUES ('s', 'k', 'nobody')")


async def test_0004_upgrades_a_version_3_database_with_its_data(
    db: Path, conn: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    migrate_to(conn, 3, monkeypatch)
    conn.execute("PRAGMA foreign_keys = ON")
    indices_v3 = dict(
        conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'invocations' AND sql IS NOT NULL"
        ).fetchall()
    )
    # An exclusive invocation running on a key, one queued behind it, a retrying one and an ended one.
    insert_v1_invocation(
        conn, "holder", "running", 1_000, key="k1", exclusive=1, attempt=2, journal_len=1, cancel_requested=1
    )
    conn.execute(
        "INSERT INTO journal (invocation_id, idx, kind, name, attempt, entry, created_at_ms)"
        " VALUES ('holder', 0, 'run', 'step', 1, x'41', 1100)"
    )
    conn.executemany(
        "INSERT INTO attempts (invocation_id, attempt, endpoint, started_at_ms, ended_at_ms, outcome, failure_code,"
        " failure_message) VALUES ('holder', ?, 'http://h1', ?, ?, ?, ?, ?)",
        [(1, 1001, 1002, "retry", 500, "boom"), (2, 1003, None, None, None, None)],
    )
    insert_v1_invocation(conn, "waiter", "queued", 2_000, key="k1", exclusive=1)
    conn.execute("INSERT INTO key_locks (service, key, holder_id) VALUES ('greeter', 'k1', 'holder')")
    conn.execute("INSERT INTO key_queue (service, key, invocation_id) VALUES ('greeter', 'k1', 'waiter')")
    conn.execute("INSERT INTO state (service, key, name, value) VALUES ('greeter', 'k1', 'count', x'31')")
    insert_v1_invocation(
        conn, "retrying", "backing_off", 3_000, attempt=1, next_run_at_ms=9_000, last_failure_code=503,
        last_failure_message="down",
    )  # fmt: skip
    conn.execute("INSERT INTO timers (invocation_id, idx, due_at_ms) VALUES ('retrying', -1, 9000)")
    insert_v1_invocation(conn, "done", "completed", 4_000, attempt=1, output=b'"hi"', completed_at_ms=4_001)
    rowids = conn.execute("SELECT rowid, id FROM invocations ORDER BY rowid").fetchall()

    store = SQLiteStore(db)
    await store.open()
    try:
        assert current_version(conn) == latest_version() >= 4
        assert conn.execute("SELECT rowid, id FROM invocations ORDER BY rowid").fetchall() == rowids
        holder = await store.get_invocation("holder")
        assert holder is not None
        assert (holder.status, holder.key, holder.exclusive, holder.attempt, holder.cancel_requested) == (
            "running",
            "k1",
            True,
            2,
            True,
        )
        assert (holder.attempts_at_resume, holder.attempts_since_resume) == (0, 2)  # no resume yet: all count
        assert [(r.index, r.entry) for r in await store.get_journal("holder")] == [(0, b"A")]
        assert [(a.attempt, a.outcome) for a in await store.get_attempts("holder")] == [(1, "retry"), (2, None)]
        status = await store.key_status("greeter", "k1")
        assert (status.lock_holder, status.queue, status.state) == ("holder", ["waiter"], {"count": b"1"})
        assert await store.due_timers(100_000, 10) == [TimerRow(invocation_id="retrying", index=-1, due_at_ms=9_000)]
        assert [i.id for i in await store.list_invocations()] == ["done", "retrying", "waiter", "holder"]
        assert [i.id for i in await store.list_invocations(status="queued")] == ["waiter"]

        # The old rows take the new verbs: the running holder pauses (keeping its key) and resumes.
        assert await store.pause("holder", 2, StoredFailure(code=500, message="still boom"), 5_000)
        assert [i.id for i in await store.list_invocations(status="paused")] == ["holder"]
        assert [a.outcome for a in await store.get_attempts("holder")] == ["retry", "paused"]
        assert (await store.key_status("greeter", "k1")).lock_holder == "holder"
        assert await store.resume("holder", 5_100) == ("resumed", Effects(woken=["holder"]))
        resumed = await store.get_invocation("holder")
        assert resumed is not None and (resumed.status, resumed.attempts_at_resume) == ("pending", 2)
        assert await store.list_runnable() == ["holder"]

        def schema(conn: sqlite3.Connection) -> tuple[int, dict[str, str], list[str], list[tuple[object, ...]]]:
            foreign_keys = conn.execute("PRAGMA foreign_keys").fetchone()[0]
            indices = dict(
                conn.execute(
                    "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'invocations'"
                    " AND sql IS NOT NULL"
                ).fetchall()
            )
            tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            return foreign_keys, indices, tables, [tuple(r) for r in conn.execute("PRAGMA foreign_key_check")]

        foreign_keys, indices, tables, dangling = await store.writer.run(schema)
        assert (foreign_keys, dangling) == (1, [])
        assert "invocations_new" not in tables and "attempts_new" not in tables
        # Every index of the invocations table is back; only the unfinished one changed, gaining 'paused'.
        # (0006 replaced the index of the creation time and added those of the admin API's listing.)
        admin_listing = {"invocations_by_created_id", "invocations_by_service", "invocations_ended"}
        assert set(indices) == set(indices_v3) - {"invocations_by_created"} | admin_listing
        changed = {name for name in indices if name not in admin_listing and indices[name] != indices_v3[name]}
        assert changed == {"invocations_unfinished"}
        assert "'backing_off', 'paused')" in indices["invocations_unfinished"]
    finally:
        await store.close()
