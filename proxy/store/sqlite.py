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

import msgspec

from handler_sdk.protocol import manifest_decoder
from proxy.store import (
    _sqlite_ops as ops,
    _sqlite_ops_cancel as cancels,
    _sqlite_ops_completions as completions,
    _sqlite_ops_deployments as deployments,
    _sqlite_ops_invocations as invocations,
    _sqlite_ops_keys as keys,
)
from proxy.store._sqlite_writer import (
    SQLiteReader,
    SQLiteWriter,
    StoreClosedError,
    Synchronous,
    connect,
)
from proxy.store.base import (
    AppendResult,
    AttemptRow,
    CancelOutcome,
    Claim,
    CompleteEntryOutcome,
    CompletionRow,
    Created,
    Deployment,
    Effects,
    Invocation,
    InvocationStatus,
    JournalRow,
    JournalStore,
    KeyStatus,
    NewInvocation,
    PromiseOp,
    ResumeOutcome,
    ServiceRow,
    StateOp,
    StoredFailure,
    StoreUnavailable,
    SuspendOutcome,
    TimerRow,
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


#: SQLite result codes (primary) that mean "the database cannot take this write now", not "this write is wrong".
_UNAVAILABLE_CODES = {5: "busy", 6: "locked", 8: "read-only", 10: "I/O error", 13: "full"}


def _unavailable(exc: sqlite3.OperationalError) -> Exception:
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    if code not in _UNAVAILABLE_CODES:
        return exc
    return StoreUnavailable(f"the journal database is unavailable ({_UNAVAILABLE_CODES[code]}): {exc}")


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
            self._secret = await self.writer.run(lambda conn: deployments.ensure_secret(conn, secrets.token_bytes(32)))
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
        try:
            return await self.writer.run(fn)
        except sqlite3.OperationalError as exc:
            raise _unavailable(exc) from exc

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            return await self._reader.run(fn)
        except sqlite3.OperationalError as exc:
            raise _unavailable(exc) from exc

    async def secret(self) -> bytes:
        if self._secret is None:
            raise StoreClosedError("the store is not open")
        return self._secret

    # ---------------------------------------------------------------- invocations

    async def create_invocation(self, new: NewInvocation, now_ms: int, *, claim_endpoint: str | None = None) -> Created:
        _check_new(new)
        return await self._write(lambda conn: invocations.create_invocation(conn, new, now_ms, claim_endpoint))

    async def get_invocation(self, invocation_id: str) -> Invocation | None:
        return await self._read(lambda conn: ops.get_invocation(conn, invocation_id))

    async def get_journal(self, invocation_id: str) -> list[JournalRow]:
        return await self._read(lambda conn: ops.get_journal(conn, invocation_id))

    async def get_attempts(self, invocation_id: str) -> list[AttemptRow]:
        return await self._read(lambda conn: ops.get_attempts(conn, invocation_id))

    async def claim(self, invocation_id: str, endpoint: str | None, now_ms: int) -> Claim | None:
        return await self._write(lambda conn: invocations.claim(conn, invocation_id, endpoint, now_ms))

    async def append(
        self,
        invocation_id: str,
        attempt: int,
        index: int,
        kind: str,
        name: str,
        entry: bytes,
        now_ms: int,
        *,
        child: NewInvocation | None = None,
        timer_at_ms: int | None = None,
        completion: CompletionRow | None = None,
        state_op: StateOp | None = None,
        promise_op: PromiseOp | None = None,
    ) -> AppendResult:
        """See ``JournalStore.append``. ``state_op`` and ``promise_op`` need an invocation with a key;
        on one without, the job raises ``ValueError`` (only when the entry would be appended: the
        key is read in the transaction) and nothing of the append is written."""
        if index < 0:
            raise ValueError(f"journal index must be >= 0, not {index}")
        if child is not None:
            child = _child_of(child, invocation_id, index)
        if completion is not None:
            if completion.index != index:
                raise ValueError(f"the completion is for entry {completion.index}, not for the appended {index}")
            _check_result(completion.result, completion.failure)
        if state_op is not None:
            _check_state_op(state_op)
        if promise_op is not None:
            if completion is not None:
                raise ValueError("an entry with a promise_op gets its completion from it, not from completion=")
            _check_result(promise_op.value, promise_op.failure)
        return await self._write(
            lambda conn: invocations.append(
                conn,
                invocation_id,
                attempt,
                index,
                kind,
                name,
                entry,
                now_ms,
                child,
                timer_at_ms,
                completion,
                state_op,
                promise_op,
            )
        )

    async def complete(self, invocation_id: str, attempt: int, output: bytes, now_ms: int) -> Effects | None:
        return await self._write(lambda conn: invocations.complete(conn, invocation_id, attempt, output, now_ms))

    async def fail(
        self,
        invocation_id: str,
        attempt: int,
        failure: StoredFailure,
        now_ms: int,
        *,
        attempt_failure: StoredFailure | None = None,
    ) -> Effects | None:
        return await self._write(
            lambda conn: invocations.fail(
                conn, invocation_id, attempt, failure, now_ms, attempt_failure=attempt_failure
            )
        )

    async def backoff(
        self, invocation_id: str, attempt: int, failure: StoredFailure, next_run_at_ms: int, now_ms: int
    ) -> bool:
        return await self._write(
            lambda conn: invocations.backoff(conn, invocation_id, attempt, failure, next_run_at_ms, now_ms)
        )

    async def pause(self, invocation_id: str, attempt: int, failure: StoredFailure, now_ms: int) -> bool:
        return await self._write(lambda conn: invocations.pause(conn, invocation_id, attempt, failure, now_ms))

    async def resume(self, invocation_id: str, now_ms: int) -> tuple[ResumeOutcome, Effects]:
        return await self._write(lambda conn: invocations.resume(conn, invocation_id, now_ms))

    async def suspend(self, invocation_id: str, attempt: int, waiting_on: list[int], now_ms: int) -> SuspendOutcome:
        if any(index < 0 for index in waiting_on):
            raise ValueError(f"journal indices must be >= 0, not {waiting_on}")
        waiting_on = list(waiting_on)  # the caller may change its list while the job waits in the queue
        return await self._write(lambda conn: invocations.suspend(conn, invocation_id, attempt, waiting_on, now_ms))

    async def complete_entry(
        self,
        invocation_id: str,
        index: int,
        now_ms: int,
        *,
        result: bytes | None = None,
        failure: StoredFailure | None = None,
        kind: str | None = None,
    ) -> tuple[CompleteEntryOutcome, Effects]:
        _check_result(result, failure)
        return await self._write(
            lambda conn: completions.complete_entry(conn, invocation_id, index, now_ms, result, failure, kind)
        )

    async def get_completions(self, invocation_id: str, indices: list[int]) -> list[CompletionRow]:
        indices = list(indices)
        return await self._read(lambda conn: ops.get_completions(conn, invocation_id, indices))

    async def fire_timer(self, invocation_id: str, index: int, now_ms: int) -> Effects:
        return await self._write(lambda conn: completions.fire_timer(conn, invocation_id, index, now_ms))

    async def due_timers(self, before_ms: int, limit: int) -> list[TimerRow]:
        limit = max(limit, 0)
        return await self._read(lambda conn: ops.due_timers(conn, before_ms, limit))

    async def cancel(self, invocation_id: str, now_ms: int) -> tuple[CancelOutcome, Effects]:
        return await self._write(lambda conn: cancels.cancel(conn, invocation_id, now_ms))

    async def kill(self, invocation_id: str, failure: StoredFailure, now_ms: int) -> tuple[CancelOutcome, Effects]:
        return await self._write(lambda conn: cancels.kill(conn, invocation_id, failure, now_ms))

    async def abandon_running(self, now_ms: int) -> int:
        return await self._write(lambda conn: invocations.abandon_running(conn, now_ms))

    async def list_runnable(self) -> list[str]:
        return await self._read(ops.list_runnable)

    async def list_invocations(self, *, status: InvocationStatus | None = None, limit: int = 100) -> list[Invocation]:
        limit = max(limit, 0)
        return await self._read(lambda conn: ops.list_invocations(conn, status, limit))

    # ---------------------------------------------------------------- keyed state

    async def get_state(self, service: str, key: str) -> dict[str, bytes]:
        return await self._read(lambda conn: keys.get_state(conn, service, key))

    async def key_status(self, service: str, key: str) -> KeyStatus:
        return await self._read(lambda conn: keys.key_status(conn, service, key))

    async def find_by_idempotency_key(
        self, service: str, handler: str, key: str | None, idempotency_key: str
    ) -> Invocation | None:
        return await self._read(lambda conn: ops.find_by_idempotency_key(conn, service, handler, key, idempotency_key))

    async def purge_workflows(self, service: str, ended_before_ms: int, limit: int = 1_000) -> int:
        limit = max(limit, 0)
        return await self._write(lambda conn: keys.purge_workflows(conn, service, ended_before_ms, limit))

    # ---------------------------------------------------------------- deployments

    async def register_deployment(self, deployment_id: str, uri: str, manifest: bytes, now_ms: int) -> Deployment:
        services = manifest_decoder.decode(manifest).services  # invalid manifests fail here, before any write
        return await self._write(
            lambda conn: deployments.register_deployment(conn, deployment_id, uri, manifest, services, now_ms)
        )

    async def remove_endpoint(self, uri: str) -> bool:
        return await self._write(lambda conn: deployments.remove_endpoint(conn, uri))

    async def list_deployments(self) -> list[Deployment]:
        return await self._read(deployments.list_deployments)

    async def get_deployment(self, deployment_id: str) -> Deployment | None:
        return await self._read(lambda conn: deployments.get_deployment(conn, deployment_id))

    async def list_services(self) -> list[ServiceRow]:
        return await self._read(deployments.list_services)


# --------------------------------------------------------------------------- argument checks (before queueing)


def _check_new(new: NewInvocation) -> None:
    if (new.parent_id is None) != (new.parent_index is None):
        raise ValueError("parent_id and parent_index go together")
    if new.parent_awaits and new.parent_id is None:
        raise ValueError("parent_awaits needs a parent_id")


def _child_of(child: NewInvocation, invocation_id: str, index: int) -> NewInvocation:
    """The child started by entry ``index``: its parent link is that entry (filled in when left out)."""
    if child.parent_id is None and child.parent_index is None:
        child = msgspec.structs.replace(child, parent_id=invocation_id, parent_index=index)
    if (child.parent_id, child.parent_index) != (invocation_id, index):
        raise ValueError(
            f"the child {child.id} names {child.parent_id}@{child.parent_index} as its parent entry,"
            f" but it is started by {invocation_id}@{index}"
        )
    _check_new(child)
    return child


def _check_state_op(op: StateOp) -> None:
    if op.op == "set" and op.value is None:
        raise ValueError(f"setting the state {op.name!r} needs a value")
    if op.op != "clear_all" and not op.name:
        raise ValueError(f"a {op.op} of state needs the name of the state")


def _check_result(result: bytes | None, failure: StoredFailure | None) -> None:
    if result is not None and failure is not None:
        raise ValueError("a completion has a result or a failure, not both")
