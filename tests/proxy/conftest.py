"""Fixtures for the journal store tests.

``store`` is parametrized by backend name so the same contract tests run
against every backend: SQLite, and PostgreSQL when ``DURABLE_TEST_POSTGRES_DSN``
names a server (see ``tests.postgres``; skipped, with the reason, otherwise).
Each PostgreSQL test gets a database of its own, dropped afterwards.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from proxy.store.base import JournalStore
from proxy.store.sqlite import SQLiteStore
from tests import postgres

#: Opens a new store on the test's database (the same one every call), e.g. to test reopening.
StoreFactory = Callable[[], Awaitable[JournalStore]]

BACKENDS = ["sqlite", "postgresql"]


def _make_store(backend: str, tmp_path: Path, database_url: str | None) -> JournalStore:
    if backend == "sqlite":
        return SQLiteStore(tmp_path / "journal.db")
    if backend == "postgresql":
        from proxy.store.postgres import PostgresStore

        assert database_url is not None
        return PostgresStore(database_url, instance_id="test-instance", pool_size=4)
    raise AssertionError(f"unknown store backend {backend!r}")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
async def store_factory(backend: str, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    opened: list[JournalStore] = []
    database: str | None = None
    database_url: str | None = None
    if backend == "postgresql":
        postgres.require_server()
        database = postgres.database_for_path(str(tmp_path))
        database_url = await postgres.create_database(database)

    async def make() -> JournalStore:
        store = _make_store(backend, tmp_path, database_url)
        await store.open()
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()
    if database is not None:
        await postgres.drop_database(database)


@pytest.fixture
async def store(store_factory: StoreFactory) -> JournalStore:
    """An open store on a fresh database, closed after the test."""
    return await store_factory()
