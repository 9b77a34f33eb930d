"""The SQLite journal store: one database file, one writer thread, one reader thread.

Design, in short (details in ``_sqlite_writer``):

* Every write verb is one job run by the writer thread inside the current
  batch transaction. Concurrent verbs share one ``COMMIT`` (group commit), so
  the fsync that makes them durable is paid once per batch, not per verb.
* A verb returns only after the ``COMMIT`` carrying it returned, so an
  acknowledged append (or claim, or completion) is on disk.
* Reads run on a second connection; WAL lets them proceed while the writer
  commits. A read that must agree with a write (``claim`` returns the journal
  it starts from) is done inside the write job instead.
* ``synchronous="FULL"`` (default) fsyncs every commit: an ack survives power
  loss. ``"NORMAL"`` is faster but can lose the last commits on power loss
  (never on a mere process crash).
"""

from __future__ import annotations

import os
import secrets
import sqlite3
from collections.abc import Callable
from typing import TypeVar

from handler_sdk.protocol import manifest_decoder
from proxy.store import _sqlite_ops as ops
from proxy.store._sqlite_writer import (
    SQLiteReader,
    SQLiteWriter,
    StoreClosedError,
    Synchronous,
    connect,
)
from proxy.store.base import (
    AppendOutcome,
    AttemptRow,
    Claim,
    Created,
    Deployment,
    Invocation,
    InvocationStatus,
    JournalRow,
    JournalStore,
    NewInvocation,
    ServiceRow,
    StoredFailure,
)
from proxy.store.migrate import migrate

__all__ = ["DatabaseCorruptError", "SQLiteStore", "StoreClosedError"]

T = TypeVar("T")


class DatabaseCorruptError(RuntimeError):
    """``PRAGMA quick_check`` found damage; the proxy refuses to run on a corrupt journal."""


def check_integrity(conn: sqlite3.Connection, path: str) -> None:
    """Run ``PRAGMA quick_check`` (O(database size), but without the index cross-checks of integrity_check)."""
    problems = [str(row[0]) for row in conn.execute("PRAGMA quick_check").fetchall()]
    if problems != ["ok"]:
        details = "; ".join(problems)[:500]
        raise DatabaseCorruptError(
            f"the database {path!r} failed PRAGMA quick_check: {details}. Restore it from a backup, or inspect it "
            "with the sqlite3 shell (.recover) before starting the proxy again"
        )


class SQLiteStore(JournalStore):
    """A ``JournalStore`` in one SQLite database file (WAL mode)."""

    __slots__ = ("_path", "_reader", "_secret", "_synchronous", "writer")

    def __init__(
        self, path: str | os.PathLike[str], *, synchronous: Synchronous = "FULL", max_batch: int = 256
    ) -> None:
        """``synchronous``: ``"FULL"`` (default) makes every acknowledged write survive power loss;
        ``"NORMAL"`` trades that for speed (acknowledged writes still survive a process crash).
        ``max_batch``: the most jobs one group commit carries."""
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be 'FULL' or 'NORMAL', not {synchronous!r}")
        self._path = os.fspath(path)
        self._synchronous: Synchronous = synchronous
        #: The writer thread; exposed so tests and metrics can read ``commits``/``committed_jobs``.
        self.writer = SQLiteWriter("durable-proxy-sqlite-writer", self._open_writer, max_batch=max_batch)
        self._reader = SQLiteReader("durable-proxy-sqlite-reader", self._open_reader)
        self._secret: bytes | None = None

    @property
    def path(self) -> str:
        return self._path

    def _open_writer(self) -> sqlite3.Connection:
        conn = connect(self._path, synchronous=self._synchronous, readonly=False)
        try:
            check_integrity(conn, self._path)
            migrate(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _open_reader(self) -> sqlite3.Connection:
        return connect(self._path, synchronous=self._synchronous, readonly=True)

    async def open(self) -> None:
        if self.writer.state != "new":
            raise RuntimeError("SQLiteStore.open() may only be called once; make a new store to reopen")
        try:
            await self.writer.start()  # connects, checks integrity and migrates, on the writer thread
            self._secret = await self.writer.run(lambda conn: ops.ensure_secret(conn, secrets.token_bytes(32)))
            await self._reader.start()  # after migrating, so the reader never sees a half-made schema
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Finish queued writes and reads, then close both connections. Safe to call twice."""
        try:
            await self.writer.stop()
        finally:
            await self._reader.stop()

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self.writer.run(fn)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._reader.run(fn)

    async def secret(self) -> bytes:
        if self._secret is None:
            raise StoreClosedError("the store is not open")
        return self._secret

    # ---------------------------------------------------------------- invocations

    async def create_invocation(self, new: NewInvocation, now_ms: int) -> Created:
        return await self._write(lambda conn: ops.create_invocation(conn, new, now_ms))

    async def get_invocation(self, invocation_id: str) -> Invocation | None:
        return await self._read(lambda conn: ops.get_invocation(conn, invocation_id))

    async def get_journal(self, invocation_id: str) -> list[JournalRow]:
        return await self._read(lambda conn: ops.get_journal(conn, invocation_id))

    async def get_attempts(self, invocation_id: str) -> list[AttemptRow]:
        return await self._read(lambda conn: ops.get_attempts(conn, invocation_id))

    async def claim(self, invocation_id: str, endpoint: str | None, now_ms: int) -> Claim | None:
        return await self._write(lambda conn: ops.claim(conn, invocation_id, endpoint, now_ms))

    async def append(
        self, invocation_id: str, attempt: int, index: int, kind: str, name: str, entry: bytes, now_ms: int
    ) -> AppendOutcome:
        if index < 0:
            raise ValueError(f"journal index must be >= 0, not {index}")
        return await self._write(
            lambda conn: ops.append(conn, invocation_id, attempt, index, kind, name, entry, now_ms)
        )

    async def complete(self, invocation_id: str, attempt: int, output: bytes, now_ms: int) -> bool:
        return await self._write(lambda conn: ops.complete(conn, invocation_id, attempt, output, now_ms))

    async def fail(
        self,
        invocation_id: str,
        attempt: int,
        failure: StoredFailure,
        now_ms: int,
        *,
        attempt_failure: StoredFailure | None = None,
    ) -> bool:
        return await self._write(
            lambda conn: ops.fail(conn, invocation_id, attempt, failure, now_ms, attempt_failure=attempt_failure)
        )

    async def backoff(
        self, invocation_id: str, attempt: int, failure: StoredFailure, next_run_at_ms: int, now_ms: int
    ) -> bool:
        return await self._write(
            lambda conn: ops.backoff(conn, invocation_id, attempt, failure, next_run_at_ms, now_ms)
        )

    async def abandon_running(self, now_ms: int) -> int:
        return await self._write(lambda conn: ops.abandon_running(conn, now_ms))

    async def list_active(self) -> list[tuple[str, int | None]]:
        return await self._read(ops.list_active)

    async def list_invocations(self, *, status: InvocationStatus | None = None, limit: int = 100) -> list[Invocation]:
        limit = max(limit, 0)
        return await self._read(lambda conn: ops.list_invocations(conn, status, limit))

    # ---------------------------------------------------------------- deployments

    async def register_deployment(self, deployment_id: str, uri: str, manifest: bytes, now_ms: int) -> Deployment:
        services = manifest_decoder.decode(manifest).services  # invalid manifests fail here, before any write
        return await self._write(
            lambda conn: ops.register_deployment(conn, deployment_id, uri, manifest, services, now_ms)
        )

    async def remove_endpoint(self, uri: str) -> bool:
        return await self._write(lambda conn: ops.remove_endpoint(conn, uri))

    async def list_deployments(self) -> list[Deployment]:
        return await self._read(ops.list_deployments)

    async def get_deployment(self, deployment_id: str) -> Deployment | None:
        return await self._read(lambda conn: ops.get_deployment(conn, deployment_id))

    async def list_services(self) -> list[ServiceRow]:
        return await self._read(ops.list_services)
