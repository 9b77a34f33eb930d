"""Fixtures for the whole suite.

With ``DURABLE_TEST_STORE=postgresql`` (see ``tests.postgres``) every
``TestEnvironment`` opened without a database of its own gets a fresh
PostgreSQL database, and every database a test created is dropped once the
test is over. With SQLite (the default) these fixtures do nothing.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import handler_sdk.testing
from tests import postgres


@pytest.fixture(scope="session", autouse=True)
def _postgres_journal_template() -> Iterator[None]:
    if not postgres.e2e_on_postgres():
        yield
        return
    postgres.prepare_journal_template()
    try:
        yield
    finally:
        postgres.drop_journal_template()


@pytest.fixture(autouse=True)
def _postgres_for_end_to_end_tests(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    if not postgres.e2e_on_postgres():
        yield
        return
    monkeypatch.setattr(handler_sdk.testing, "default_database", postgres.fresh_database)
    try:
        yield
    finally:
        postgres.drop_created_databases_sync()
