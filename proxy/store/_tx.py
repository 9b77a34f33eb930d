"""One transaction, whatever the database: the four calls the store's SQL is written against.

The store's verbs (``_ops*``) are written once, as ``async`` functions over a
``Tx``, in the SQL that SQLite and PostgreSQL share, with ``?`` placeholders.
Each backend runs them its own way:

* SQLite runs them on its writer (or reader) thread through ``run_sync``: a
  ``SQLiteTx`` never suspends, so the coroutine completes on its first step and
  needs no event loop.
* PostgreSQL awaits them on the event loop inside a transaction; its ``Tx``
  numbers the placeholders (``$1``, ``$2``...) on the way.

Where the dialects differ (a JSON list of indices, the insertion order of
rows) the verb asks ``tx.dialect``. Everything else is plain SQL both accept:
``CAST(? AS BLOB)`` where PostgreSQL cannot infer a parameter's type (its
schema defines ``blob`` as a domain over ``bytea``), ``INSERT ... ON CONFLICT``
and ``RETURNING``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Coroutine, Iterable, Sequence
from typing import Any, Literal, Protocol, TypeVar

__all__ = [
    "Dialect",
    "Row",
    "SQLiteTx",
    "Tx",
    "for_update",
    "indices_in",
    "insertion_order",
    "lock_invocation",
    "lock_name",
    "run_sync",
    "skip_locked",
    "strings_in",
]

T = TypeVar("T")

Dialect = Literal["sqlite", "postgresql"]
#: A result row: indexable by position and by column name, iterable (``sqlite3.Row``, ``asyncpg.Record``).
Row = Any


class Tx(Protocol):
    """A transaction in progress. Nothing here commits: the backend does, after the verb returns."""

    @property
    def dialect(self) -> Dialect: ...

    async def execute(self, sql: str, params: Sequence[object] = ()) -> int:
        """Run a statement; the number of rows it inserted, updated or deleted."""

    async def fetchone(self, sql: str, params: Sequence[object] = ()) -> Row | None: ...

    async def fetchall(self, sql: str, params: Sequence[object] = ()) -> list[Row]: ...

    async def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> None: ...


class SQLiteTx:
    """A ``Tx`` over a ``sqlite3`` connection, used on the thread that owns the connection."""

    __slots__ = ("_conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    @property
    def dialect(self) -> Dialect:
        return "sqlite"

    async def execute(self, sql: str, params: Sequence[object] = ()) -> int:
        return self._conn.execute(sql, params).rowcount

    async def fetchone(self, sql: str, params: Sequence[object] = ()) -> Row | None:
        return self._conn.execute(sql, params).fetchone()

    async def fetchall(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        return self._conn.execute(sql, params).fetchall()

    async def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        self._conn.executemany(sql, rows)


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a verb over a ``SQLiteTx`` to its end, here and now: it never suspends."""
    try:
        coro.send(None)
    except StopIteration as stop:
        result: T = stop.value
        return result
    coro.close()
    raise RuntimeError("a store operation suspended on a SQLite connection; it must not await anything else")


def indices_in(tx: Tx, column: str) -> str:
    """A condition: ``column`` is one of the journal indices in the JSON list bound to its ``?``."""
    if tx.dialect == "sqlite":
        return f"{column} IN (SELECT value FROM json_each(?))"
    return f"{column} IN (SELECT CAST(value AS INTEGER) FROM jsonb_array_elements_text(CAST(? AS JSONB)))"


def strings_in(tx: Tx, column: str) -> str:
    """A condition: ``column`` is one of the strings in the JSON list bound to its ``?``."""
    if tx.dialect == "sqlite":
        return f"{column} IN (SELECT value FROM json_each(?))"
    return f"{column} IN (SELECT jsonb_array_elements_text(CAST(? AS JSONB)))"


def for_update(tx: Tx) -> str:
    """The end of a ``SELECT`` whose rows the transaction goes on to decide on and change: on
    PostgreSQL it locks them, so concurrent transactions on the same rows take turns (SQLite's one
    writer takes turns already)."""
    return "" if tx.dialect == "sqlite" else " FOR UPDATE"


async def lock_invocation(tx: Tx, invocation_id: str) -> None:
    """Take the row lock of an invocation for the rest of the transaction (PostgreSQL; a no-op on SQLite).

    Every write that changes an invocation, or completes one of its entries, holds
    this lock first, so that a decision read under it (is it suspended on that
    entry? is that entry completed?) cannot be overtaken by another instance's
    write before this transaction commits."""
    if tx.dialect != "sqlite":
        await tx.fetchone("SELECT 1 FROM invocations WHERE id = ? FOR UPDATE", (invocation_id,))


async def lock_name(tx: Tx, *parts: str) -> None:
    """Take a lock on a name (an object key, a workflow's promises) for the rest of the transaction
    (PostgreSQL: a transaction-level advisory lock on its hash; a no-op on SQLite). Rows that may not
    exist yet, such as a key's lock or a promise, cannot carry a row lock."""
    if tx.dialect != "sqlite":
        await tx.fetchone("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", ("\x1f".join(parts),))


def skip_locked(tx: Tx) -> str:
    """The end of a ``SELECT`` that claims rows: on PostgreSQL, rows another transaction has locked
    are skipped rather than waited for (SQLite runs one write transaction at a time)."""
    return "" if tx.dialect == "sqlite" else " FOR UPDATE SKIP LOCKED"


def insertion_order(tx: Tx) -> str:
    """A column that grows with every row inserted into ``invocations``: ties of equal timestamps break on it."""
    return "rowid" if tx.dialect == "sqlite" else "seq"
