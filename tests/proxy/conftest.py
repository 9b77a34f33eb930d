"""Fixtures for the journal store tests.

``store`` is parametrized by backend name so the same contract tests run
against every backend; only SQLite exists today. A PostgreSQL backend adds a
param here and a branch in ``_make_store``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from proxy.store.base import JournalStore
from proxy.store.sqlite import SQLiteStore

#: Opens a new store on the test's database (the same one every call), e.g. to test reopening.
StoreFactory = Callable[[], Awaitable[JournalStore]]

BACKENDS = ["sqlite"]


def _make_store(backend: str, tmp_path: Path) -> JournalStore:
    if backend == "sqlite":
        return SQLiteStore(tmp_path / "journal.db")
    raise AssertionError(f"unknown store backend {backend!r}")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
async def store_factory(backend: str, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    opened: list[JournalStore] = []

    async def make() -> JournalStore:
        store = _make_store(backend, tmp_path)
        await store.open()
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()


@pytest.fixture
async def store(store_factory: StoreFactory) -> JournalStore:
    """An open store on a fresh database, closed after the test."""
    return await store_factory()
