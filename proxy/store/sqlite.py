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
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from proxy.store import _ops_deployments as deployments
from proxy.store._sql_store import SQLStore
from proxy.store._sqlite_writer import (
    SQLiteReader,
    SQLiteWriter,
    StoreClosedError,
    Synchronous,
    connect,
)
from proxy.store._tx import SQLiteTx, Tx, run_sync
from proxy.store.base import Broadcast, StoreUnavailable
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


#: SQLite result codes (primary) that mean "the database cannot take this write now", not "this write is wrong".
_UNAVAILABLE_CODES = {5: "busy", 6: "locked", 8: "read-only", 10: "I/O error", 13: "full"}


def _unavailable(exc: sqlite3.OperationalError) -> Exception:
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    if code not in _UNAVAILABLE_CODES:
        return exc
    return StoreUnavailable(f"the journal database is unavailable ({_UNAVAILABLE_CODES[code]}): {exc}")


class SQLiteStore(SQLStore):
    """A ``JournalStore`` in one SQLite database file (WAL mode), for one proxy instance."""

    __slots__ = ("_path", "_reader", "_secret", "_synchronous", "instance_id", "lease_ms", "writer")

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: Synchronous = "FULL",
        max_batch: int = 256,
        instance_id: str = "local",
        lease_ms: int = 10_000,
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
        self.instance_id = instance_id
        self.lease_ms = lease_ms
        self.write_observer: Callable[[str, float], None] | None = None

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
            candidate = secrets.token_bytes(32)
            self._secret = await self._write(lambda tx: deployments.ensure_secret(tx, candidate))
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

    async def subscribe(self, on_broadcast: Callable[[Broadcast], None], on_gap: Callable[[], None]) -> None:
        """Nothing to hear: one SQLite file serves one proxy instance."""

    async def _transact(self, fn: Callable[[Tx], Coroutine[Any, Any, T]]) -> T:
        try:
            return await self.writer.run(lambda conn: run_sync(fn(SQLiteTx(conn))))
        except sqlite3.OperationalError as exc:
            raise _unavailable(exc) from exc

    async def _read(self, fn: Callable[[Tx], Coroutine[Any, Any, T]]) -> T:
        try:
            return await self._reader.run(lambda conn: run_sync(fn(SQLiteTx(conn))))
        except sqlite3.OperationalError as exc:
            raise _unavailable(exc) from exc

    async def secret(self) -> bytes:
        if self._secret is None:
            raise StoreClosedError("the store is not open")
        return self._secret
