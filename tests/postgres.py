"""A PostgreSQL server for tests: a fresh database per test, dropped afterwards.

Tests that need PostgreSQL find it through ``DURABLE_TEST_POSTGRES_DSN`` (a URL
to an existing database on a server where the user may create databases, e.g.
``postgresql://postgres@127.0.0.1:5432/test``; ``.ci/run`` sets it). Without
it they are skipped, saying so.

``DURABLE_TEST_STORE=postgresql`` runs the in-process end-to-end suites on
PostgreSQL instead of SQLite: every database file path a test opens is mapped
to a database of its own on that server (the same path, the same database, so
tests that reopen a proxy see their data again). The root ``tests/conftest.py``
then also gives every ``TestEnvironment`` opened without a database a fresh
database of its own, and drops every database a test created once it is over.
Those databases are copies of a template whose schema was migrated once per
run (copying is about twice as fast as migrating each); the store tests,
which test the migrations, start from empty databases.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import os
import re
import secrets
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import pytest

DSN_VARIABLE = "DURABLE_TEST_POSTGRES_DSN"
STORE_VARIABLE = "DURABLE_TEST_STORE"
SKIP_REASON = f"PostgreSQL tests need {DSN_VARIABLE}=postgresql://user@host:port/database (set by .ci/run)"
_PREFIX = "dp_test_"

T = TypeVar("T")

#: The databases created since the last ``drop_created_databases`` (by this process).
_created: set[str] = set()
#: The database the end-to-end tests' databases are copies of (``prepare_journal_template``).
_template: str | None = None


def server_dsn() -> str | None:
    return os.environ.get(DSN_VARIABLE) or None


def require_server() -> str:
    dsn = server_dsn()
    if dsn is None:
        pytest.skip(SKIP_REASON)
    return dsn


def e2e_on_postgres() -> bool:
    """True when the end-to-end suites are to run on PostgreSQL (``DURABLE_TEST_STORE=postgresql``)."""
    choice = os.environ.get(STORE_VARIABLE, "sqlite").lower()
    if choice not in ("sqlite", "postgresql"):
        raise RuntimeError(f"{STORE_VARIABLE} must be sqlite or postgresql, not {choice!r}")
    if choice == "postgresql" and server_dsn() is None:
        raise RuntimeError(f"{STORE_VARIABLE}=postgresql needs {DSN_VARIABLE}")
    return choice == "postgresql"


def sqlite_only(why: str) -> pytest.MarkDecorator:
    """Skip an end-to-end test when the suites run on PostgreSQL: it tests something of SQLite's."""
    return pytest.mark.skipif(e2e_on_postgres(), reason=f"SQLite only ({STORE_VARIABLE}=postgresql): {why}")


def dsn_for(database: str) -> str:
    """The server's URL with ``database`` in place of its database."""
    parts = urlsplit(require_server())
    return urlunsplit(parts._replace(path="/" + database))


def database_for_path(path: str) -> str:
    """The database standing in for a SQLite file at ``path`` (stable, and a valid identifier)."""
    return _PREFIX + hashlib.sha256(path.encode()).hexdigest()[:24]


def _check_name(database: str) -> str:
    if not re.fullmatch(r"[a-z0-9_]+", database):
        raise ValueError(f"not a test database name: {database!r}")
    return database


async def create_database(database: str, *, template: str | None = None) -> str:
    """Create ``database`` (a copy of ``template``, if given) unless it exists; returns its URL."""
    import asyncpg

    conn = await asyncpg.connect(require_server())
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
        if not exists:
            copy = f" TEMPLATE {_check_name(template)}" if template is not None else ""
            await conn.execute(f"CREATE DATABASE {_check_name(database)}{copy}")
    finally:
        await conn.close()
    _created.add(database)
    return dsn_for(database)


async def fresh_database() -> str:
    """A new database of a name never used before, with the journal's tables in place; its URL."""
    return await create_database(_PREFIX + secrets.token_hex(12), template=_journal_template())


async def database_for(path: Path | str) -> str:
    """What a test passes as the proxy's ``db`` for a journal at ``path``: the path itself on SQLite;
    with ``DURABLE_TEST_STORE=postgresql`` the URL of the database standing in for it, empty the first
    time a test asks for it (a leftover of an interrupted run is dropped) and the same one after."""
    if not e2e_on_postgres():
        return str(path)
    database = database_for_path(str(path))
    if database not in _created:
        await drop_database(database)
    return await create_database(database, template=_journal_template())


def prepare_journal_template() -> None:
    """Make the template of the end-to-end tests' databases, once per process: an empty journal,
    its schema migrated, which each test's database copies (faster than migrating each one).
    Callable with or without a running event loop."""
    global _template
    if _template is not None:
        return
    name = f"{_PREFIX}template_{secrets.token_hex(6)}"

    async def make() -> None:
        from proxy.store.postgres import PostgresStore

        await create_database(name)
        _created.discard(name)  # kept until drop_journal_template
        store = PostgresStore(dsn_for(name), instance_id="template", pool_size=1)
        await store.open()
        await store.close()  # a template may have no connections when it is copied

    _blocking(make())
    _template = name


def drop_journal_template() -> None:
    global _template
    if _template is not None:
        name, _template = _template, None
        _blocking(drop_database(name))


def _journal_template() -> str:
    if _template is None:
        raise RuntimeError("no journal template: call prepare_journal_template() first (tests/conftest.py does)")
    return _template


def _blocking(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to its end on an event loop of its own in a thread of its own, so the caller's
    loop (running or not, e.g. pytest-asyncio's between two tests) is never touched."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def drop_database(database: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(require_server())
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {_check_name(database)} WITH (FORCE)")
    finally:
        await conn.close()
    _created.discard(database)


async def drop_created_databases() -> None:
    """Drop every database created (and not dropped) since the last call."""
    for database in sorted(_created):
        await drop_database(database)


def create_database_sync(database: str) -> str:
    return _blocking(create_database(database))


def drop_database_sync(database: str) -> None:
    _blocking(drop_database(database))


def drop_created_databases_sync() -> None:
    if _created:
        _blocking(drop_created_databases())
