"""Schema migrations of the SQLite store, and the guarantees the schema itself enforces."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.store import migrate as migrations
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
