"""Schema migrations: numbered plain SQL files, applied in order, each in its own transaction.

SQLite and PostgreSQL each have their own numbered series (``migrate`` and
``migrate_postgresql``); what follows describes SQLite, and the PostgreSQL
runner gives the same guarantees with an advisory lock in place of
``BEGIN IMMEDIATE``.

Migrations live in ``proxy/store/migrations/<dialect>/NNNN_description.sql`` and
ship inside the package (read with ``importlib.resources``), so an installed
proxy always carries the schema it expects. The ``schema_version`` table
records every applied version. A migration is never edited once released; a
schema change is a new file with the next number.

Each migration runs in its own ``BEGIN IMMEDIATE`` transaction together with
the insert of its ``schema_version`` row, so a crash leaves the database at
exactly one known version. The immediate lock also serialises two processes
migrating the same file: the second one re-reads the version under the lock
and finds nothing left to do.

Migrations run with foreign keys off, so that a migration can rebuild a table
other tables refer to (SQLite cannot alter a constraint in place; with foreign
keys on, dropping the old table would cascade-delete the rows that refer to
it). ``PRAGMA foreign_key_check`` runs before each commit instead: a migration
that leaves a dangling reference is rolled back. The connection's setting is
restored afterwards.

A database whose version is newer than the newest migration this code knows
was written by a newer proxy; opening it could silently misread it, so it is
refused with ``SchemaTooNewError``.
"""

from __future__ import annotations

import functools
import re
import sqlite3
import time
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncpg
    from asyncpg.pool import PoolConnectionProxy

__all__ = [
    "Migration",
    "SchemaTooNewError",
    "current_version",
    "latest_version",
    "load_migrations",
    "migrate",
    "migrate_postgresql",
    "split_statements",
]

_FILENAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

_CREATE_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    version       INTEGER PRIMARY KEY NOT NULL,
    name          TEXT NOT NULL,
    applied_at_ms INTEGER NOT NULL
)
"""


class SchemaTooNewError(RuntimeError):
    """The database was migrated by a newer version of durable-proxy."""

    def __init__(self, found: int, supported: int) -> None:
        super().__init__(
            f"the database schema is at version {found}, but this durable-proxy only knows versions up to "
            f"{supported}; upgrade durable-proxy (or restore a backup made before the upgrade)"
        )
        self.found = found
        self.supported = supported


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


@functools.cache
def load_migrations(dialect: str = "sqlite") -> tuple[Migration, ...]:
    """The migrations of ``dialect`` in version order; they must be numbered 1, 2, 3, ... without gaps."""
    folder = resources.files("proxy.store").joinpath("migrations", dialect)
    found: list[Migration] = []
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _FILENAME.match(entry.name)
        if match is None:
            raise RuntimeError(f"migration file {entry.name!r} is not named NNNN_description.sql")
        found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"{dialect} migrations must be numbered 1..N without gaps or repeats, found {versions}")
    return tuple(found)


def latest_version(dialect: str = "sqlite") -> int:
    """The schema version this code migrates a database to."""
    migrations = load_migrations(dialect)
    return migrations[-1].version if migrations else 0


def current_version(conn: sqlite3.Connection) -> int:
    """The schema version of the database behind ``conn``; 0 when it was never migrated."""
    exists = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'").fetchone()
    if exists is None:
        return 0
    row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
    return int(row[0])


def migrate(conn: sqlite3.Connection, dialect: str = "sqlite") -> list[int]:
    """Bring the database to ``latest_version()``; returns the versions applied now (empty if none).

    ``conn`` must not be inside a transaction: every migration is committed on
    its own. Raises ``SchemaTooNewError`` if the database is ahead of the code.
    """
    if conn.in_transaction:
        raise RuntimeError("migrate() needs a connection outside any transaction")
    migrations = load_migrations(dialect)
    applied: list[int] = []
    foreign_keys = int(conn.execute("PRAGMA foreign_keys").fetchone()[0])
    conn.execute("PRAGMA foreign_keys = OFF")  # a no-op inside a transaction, hence here
    try:
        while (version := _apply_next(conn, migrations)) is not None:
            applied.append(version)
    finally:
        conn.execute(f"PRAGMA foreign_keys = {'ON' if foreign_keys else 'OFF'}")
    return applied


def _apply_next(conn: sqlite3.Connection, migrations: tuple[Migration, ...]) -> int | None:
    """Apply the first migration the database lacks, in one transaction; None when it is up to date."""
    latest = migrations[-1].version if migrations else 0
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(_CREATE_VERSION_TABLE)
        version = current_version(conn)
        if version > latest:
            raise SchemaTooNewError(version, latest)
        if version == latest:
            conn.execute("COMMIT")
            return None
        step = migrations[version]  # versions are 1..N, so this is version + 1
        for statement in split_statements(step.sql):
            conn.execute(statement)
        dangling = conn.execute("PRAGMA foreign_key_check").fetchall()
        if dangling:
            raise RuntimeError(
                f"migration {step.version} ({step.name}) would leave {len(dangling)} dangling foreign key(s),"
                f" first: {tuple(dangling[0])}"
            )
        conn.execute(
            "INSERT INTO schema_version (version, name, applied_at_ms) VALUES (?, ?, ?)",
            # No caller supplies a time here, so this is the one place the store reads the clock.
            (step.version, step.name, time.time_ns() // 1_000_000),
        )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return step.version


def split_statements(script: str) -> list[str]:
    """Split a SQL script into single statements, for ``execute`` inside our own transaction.

    ``sqlite3.Connection.executescript`` would be simpler but commits any open
    transaction first, which would break one-transaction-per-migration.
    ``sqlite3.complete_statement`` knows about string literals, comments and
    ``CREATE TRIGGER ... BEGIN ...; END`` bodies, so semicolons inside them do
    not split a statement.
    """
    statements: list[str] = []
    buffer = ""
    for piece in script.split(";"):
        buffer += piece + ";"
        if sqlite3.complete_statement(buffer):
            if not _is_blank(buffer):
                statements.append(buffer.strip())
            buffer = ""
    # The loop appended one ';' too many after the last piece.
    if not _is_blank(buffer):
        raise ValueError(f"incomplete SQL statement at the end of the script: {buffer.strip()[:80]!r}")
    return statements


def _is_blank(sql: str) -> bool:
    """True when ``sql`` holds only whitespace, ``--`` comment lines and semicolons."""
    lines = (line.strip() for line in sql.splitlines())
    return all(not line.strip(";") or line.startswith("--") for line in lines)


_CREATE_PG_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    version       INTEGER PRIMARY KEY NOT NULL,
    name          TEXT NOT NULL,
    applied_at_ms BIGINT NOT NULL
)
"""
#: Key of the advisory lock that serialises instances migrating one PostgreSQL database at once.
_PG_MIGRATION_LOCK = 0x64757261626C65  # "durable"


async def migrate_postgresql(conn: asyncpg.Connection[Any] | PoolConnectionProxy[Any]) -> list[int]:
    """Bring a PostgreSQL database to ``latest_version("postgresql")``; the versions applied now.

    Each migration runs in its own transaction with its ``schema_version`` row,
    under a transaction-level advisory lock, so that instances starting together
    apply each migration once and a crash leaves the database at one known version.
    """
    migrations = load_migrations("postgresql")
    latest = migrations[-1].version if migrations else 0
    applied: list[int] = []
    while True:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _PG_MIGRATION_LOCK)
            await conn.execute(_CREATE_PG_VERSION_TABLE)
            version = int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version"))
            if version > latest:
                raise SchemaTooNewError(version, latest)
            if version == latest:
                return applied
            step = migrations[version]
            await conn.execute(step.sql)  # the simple query protocol runs a whole script
            await conn.execute(
                "INSERT INTO schema_version (version, name, applied_at_ms) VALUES ($1, $2, $3)",
                step.version,
                step.name,
                time.time_ns() // 1_000_000,
            )
        applied.append(step.version)
