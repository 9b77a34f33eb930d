"""The threads that own the SQLite connections of the store.

``sqlite3`` calls block, so they must not run on the event loop. Rather than
hopping to a thread pool once per statement, each connection is owned by one
dedicated thread and the store hands it whole *jobs*: plain functions
``fn(conn) -> T`` that do every statement of one domain verb. A verb costs one
thread hop, and the connection is only ever touched by its own thread.

The writer batches jobs into a shared transaction (**group commit**). The
expensive part of a durable write is the fsync at ``COMMIT``; jobs that queue
up while one commit is in progress share the next one, so throughput grows
with concurrency instead of being capped at one fsync per write. Each job runs
inside its own ``SAVEPOINT``, so a job that raises is rolled back alone and
the rest of its batch still commits. A job's future is resolved only *after*
``COMMIT`` returned: nothing is ever acknowledged before it is durable.

Handing a job to the thread and its result back costs two cross-thread
wake-ups, more than a small write's statements. So writes are first gathered
for one pass of the event loop: a lone write that finds the writer thread idle
is committed right there on the event loop (it would not have shared its
commit anyway); anything else goes to the thread and is grouped as above,
while the event loop goes on serving requests.

The reader runs jobs one at a time on a second connection. In WAL mode
readers see the last committed state and never block the writer, so reads do
not wait behind a batch being committed.
"""

from __future__ import annotations

import asyncio
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any, Final, Literal, TypeVar

T = TypeVar("T")

Synchronous = Literal["FULL", "NORMAL"]

#: How long SQLite itself waits for a lock held by another connection or process.
BUSY_TIMEOUT_MS: Final = 5000
#: Extra waits, in seconds, before retrying ``BEGIN IMMEDIATE``/``COMMIT`` that stayed busy past the timeout.
_BUSY_RETRY_DELAYS: Final = (0.01, 0.05, 0.25)
_SQLITE_BUSY: Final = 5
_SQLITE_LOCKED: Final = 6


class StoreClosedError(RuntimeError):
    """The store is not open (never opened, failed to open, or closed)."""


def connect(path: str, *, synchronous: Synchronous, readonly: bool) -> sqlite3.Connection:
    """Open and configure one connection; called on the thread that will own it.

    * ``isolation_level=None``: the sqlite3 module never opens transactions
      behind our back; the writer issues ``BEGIN IMMEDIATE`` itself.
      ``IMMEDIATE`` takes the write lock at the start, so a transaction can
      never fail half-way with ``SQLITE_BUSY`` when upgrading a read lock.
    * ``journal_mode=WAL``: readers and the writer do not block each other,
      and a commit is one sequential append to the WAL.
    * ``synchronous=FULL``: the WAL is fsynced at every commit, so an
      acknowledged write survives power loss. ``NORMAL`` fsyncs only at
      checkpoints: still safe against process crashes, and much faster, but
      the last commits can be lost if the machine loses power.
    * ``foreign_keys=ON``: SQLite leaves them off by default.
    """
    if synchronous not in ("FULL", "NORMAL"):
        raise ValueError(f"synchronous must be 'FULL' or 'NORMAL', not {synchronous!r}")
    # check_same_thread=False: the writer's connection is also used from the event loop, for a write
    # that finds the writer idle (see SQLiteWriter.run); its owner lock keeps the two apart.
    conn = sqlite3.connect(path, isolation_level=None, cached_statements=256, check_same_thread=readonly)
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if readonly:
            conn.execute("PRAGMA query_only = ON")
        else:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise RuntimeError(f"cannot use WAL journal mode on {path!r} (got {mode!r}); use a file on local disk")
            conn.execute(f"PRAGMA synchronous = {synchronous}")
            _preallocate_wal(conn, path)
        conn.execute("PRAGMA foreign_keys = ON")
        conn.row_factory = sqlite3.Row
    except BaseException:
        conn.close()
        raise
    return conn


def _preallocate_wal(conn: sqlite3.Connection, path: str) -> None:
    """Give the WAL file its working size up front.

    A commit that makes the WAL file grow costs a second write when it is
    synced (the file's new size), about twice a commit into space the file
    already has. SQLite reuses the WAL from its start after each checkpoint
    and never shrinks it (no ``journal_size_limit``), so once it has reached
    the checkpoint size it stops growing, but a fresh or cleanly closed
    database starts from an empty WAL. Filling it with zeros up to that size
    at once saves those first thousands of commits the extra write. Bytes
    past the last valid frame are ignored by SQLite (a zero frame fails its
    checksum, as a stale one does), and the zeros are only ever appended
    past the current end, under the write lock, so no frame is touched.
    """
    if path == ":memory:" or path.startswith("file:"):
        return
    wal = f"{path}-wal"
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    checkpoint_pages = conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
    target = 32 + (checkpoint_pages + 64) * (page_size + 24)  # header + frames (each a page and a 24-byte head)
    conn.execute("BEGIN IMMEDIATE")  # no other connection writes the WAL meanwhile
    try:
        try:
            fd = os.open(wal, os.O_WRONLY)
        except FileNotFoundError:
            return
        try:
            size = os.fstat(fd).st_size
            if size >= target:
                return
            zeros = bytes(1 << 20)
            while size < target:
                size += os.pwrite(fd, zeros[: min(len(zeros), target - size)], size)
            os.fsync(fd)
        finally:
            os.close(fd)
    finally:
        conn.execute("ROLLBACK")


class _Job:
    __slots__ = ("fn", "future", "loop")

    def __init__(
        self, fn: Callable[[sqlite3.Connection], Any], loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any]
    ) -> None:
        self.fn = fn
        self.loop = loop
        self.future = future


class _Stop(_Job):
    """Queued by ``stop()``: every job queued before it is finished first."""


def _noop(conn: sqlite3.Connection) -> None:
    return None


_Outcome = tuple[_Job, bool, Any]  # (job, succeeded, result or exception)


def _deliver(outcomes: list[_Outcome]) -> None:
    """Resolve futures from the worker thread: one loop wake-up per event loop, not per job."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
    for outcome in outcomes:
        by_loop.setdefault(outcome[0].loop, []).append(outcome)
    for loop, items in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle, items)
        except RuntimeError:
            pass  # the loop is closed: nobody can be waiting for these results any more


def _settle(outcomes: list[_Outcome]) -> None:
    for job, ok, value in outcomes:
        if job.future.done():  # the caller gave up (cancelled); the write happened regardless
            continue
        if ok:
            job.future.set_result(value)
        else:
            job.future.set_exception(value)


def _is_busy(exc: sqlite3.Error) -> bool:
    return (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in (_SQLITE_BUSY, _SQLITE_LOCKED)


def _execute_retrying(conn: sqlite3.Connection, sql: str) -> None:
    """Run ``sql``, retrying a few times if the database stays busy/locked past ``busy_timeout``."""
    for delay in (*_BUSY_RETRY_DELAYS, None):
        try:
            conn.execute(sql)
            return
        except sqlite3.OperationalError as exc:
            if delay is None or not _is_busy(exc):
                raise
            time.sleep(delay)


class _ConnectionThread:
    """One thread owning one connection, fed by a queue of jobs."""

    def __init__(self, name: str, connect: Callable[[], sqlite3.Connection]) -> None:
        self._name = name
        self._connect = connect
        self._queue: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._state: Literal["new", "starting", "running", "closed"] = "new"
        self._stop: _Stop | None = None

    @property
    def state(self) -> Literal["new", "starting", "running", "closed"]:
        return self._state

    async def start(self) -> None:
        """Start the thread and wait until its connection is open (or raise why it could not be)."""
        with self._lock:
            if self._state != "new":
                raise RuntimeError(f"{self._name} was already started")
            self._state = "starting"
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[Any] = loop.create_future()
        threading.Thread(target=self._main, args=(_Job(_noop, loop, ready),), name=self._name, daemon=True).start()
        await ready

    def submit(self, fn: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """Queue ``fn`` now (synchronously); the returned future resolves with its result."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._lock:
            if self._state != "running":
                raise StoreClosedError("the store is not open")
            self._queue.put(_Job(fn, loop, future))
        return future

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` on the connection's thread and return its result.

        Cancelling the caller does not withdraw a queued job: a write may still
        commit after its caller stopped waiting, as with any lost acknowledgement.
        """
        return await self.submit(fn)

    async def stop(self) -> None:
        """Finish every job already queued, close the connection and end the thread. Idempotent."""
        with self._lock:
            if self._state == "running":
                loop = asyncio.get_running_loop()
                self._stop = _Stop(_noop, loop, loop.create_future())
                self._queue.put(self._stop)
            self._state = "closed"
            stop = self._stop
        if stop is not None:
            await asyncio.shield(stop.future)

    def _main(self, ready: _Job) -> None:
        try:
            conn = self._connect()
        except BaseException as exc:
            with self._lock:
                self._state = "closed"
            _deliver([(ready, False, exc)])
            return
        with self._lock:
            closed_meanwhile = self._state != "starting"
            if not closed_meanwhile:
                self._state = "running"
        if closed_meanwhile:  # stop() was called while the connection was opening
            conn.close()
            _deliver([(ready, False, StoreClosedError("the store was closed while opening"))])
            return
        _deliver([(ready, True, None)])
        try:
            self._serve(conn)
        finally:
            with self._lock:
                self._state = "closed"
                stop = self._stop
            # Normally empty: stop() queues last. Non-empty only if _serve crashed.
            leftovers: list[_Outcome] = []
            while not self._queue.empty():
                job = self._queue.get_nowait()
                if not isinstance(job, _Stop):
                    leftovers.append((job, False, StoreClosedError("the store was closed")))
            _deliver(leftovers)
            try:
                conn.close()
            finally:
                if stop is not None:
                    _deliver([(stop, True, None)])

    def _serve(self, conn: sqlite3.Connection) -> None:
        raise NotImplementedError


class SQLiteReader(_ConnectionThread):
    """Runs read jobs one at a time, each in its own read transaction (a consistent snapshot)."""

    def _serve(self, conn: sqlite3.Connection) -> None:
        while not isinstance(job := self._queue.get(), _Stop):
            try:
                conn.execute("BEGIN")
                try:
                    outcome: _Outcome = (job, True, job.fn(conn))
                finally:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")  # a read-only transaction: nothing to keep
            except Exception as exc:
                outcome = (job, False, exc)
            _deliver([outcome])


class SQLiteWriter(_ConnectionThread):
    """Runs write jobs in batches, one ``BEGIN IMMEDIATE ... COMMIT`` per batch (group commit).

    ``commits`` and ``committed_jobs`` count successful commits and the jobs
    they carried, so tests and metrics can see how well writes are grouped.
    """

    def __init__(self, name: str, connect: Callable[[], sqlite3.Connection], *, max_batch: int = 256) -> None:
        super().__init__(name, connect)
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.max_batch = max_batch
        self.commits = 0
        self.committed_jobs = 0
        #: Writes committed on the caller's thread because the writer was idle.
        self.inline_commits = 0
        self._conn: sqlite3.Connection | None = None
        #: Held by whoever uses the connection: the writer thread for a batch, or an inline write.
        self._owner = threading.Lock()
        #: Jobs handed to the thread and not answered yet, and jobs waiting for the next flush
        #: (both touched on the event loop only).
        self._in_flight = 0
        self._gathered: list[_Job] = []

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Commit ``fn(conn)`` and return its result.

        Writes are gathered until the event loop has run everything that was ready, then committed
        together. A lone write that finds the writer thread idle is committed right there, on the
        event loop: it then costs no hop to the writer thread and back, two cross-thread wake-ups
        that cost more than its statements. Several writes at once, or writes arriving while the
        thread commits, go to the thread, which shares one commit among all that are waiting while
        the event loop goes on serving requests (group commit).
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._gathered.append(_Job(fn, loop, future))
        if len(self._gathered) == 1:
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        jobs, self._gathered = self._gathered, []
        if len(jobs) == 1 and self._in_flight == 0 and self._owner.acquire(blocking=False):
            try:
                conn = self._conn  # read under the owner lock: None once the thread let go of it
                if conn is not None and self.state == "running" and self._queue.empty():
                    job = jobs[0]
                    try:
                        result = self._run_inline(conn, job.fn)
                    except Exception as exc:
                        if not job.future.done():
                            job.future.set_exception(exc)
                    else:
                        if not job.future.done():
                            job.future.set_result(result)
                    return
            finally:
                self._owner.release()
        with self._lock:
            if self.state != "running":
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(StoreClosedError("the store is not open"))
                return
            self._hand_over(jobs)

    def _hand_over(self, jobs: list[_Job]) -> None:
        """Queue ``jobs`` for the thread (under ``_lock``, while it runs)."""
        for job in jobs:
            self._in_flight += 1
            job.future.add_done_callback(self._landed)
            self._queue.put(job)

    def _landed(self, _: asyncio.Future[Any]) -> None:
        self._in_flight -= 1

    async def stop(self) -> None:
        """Commit the writes already asked for (gathered ones too), then stop."""
        jobs, self._gathered = self._gathered, []
        with self._lock:
            if self.state == "running":
                self._hand_over(jobs)
        await super().stop()

    def _run_inline(self, conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
        _execute_retrying(conn, "BEGIN IMMEDIATE")
        try:
            result = fn(conn)
            _execute_retrying(conn, "COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self.commits += 1
        self.committed_jobs += 1
        self.inline_commits += 1
        return result

    def _serve(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        try:
            self._serve_batches(conn)
        finally:
            with self._owner:
                self._conn = None

    def _serve_batches(self, conn: sqlite3.Connection) -> None:
        while True:
            job = self._queue.get()  # block for the first job ...
            batch: list[_Job] = []
            while not isinstance(job, _Stop):
                batch.append(job)
                if len(batch) >= self.max_batch:
                    break
                try:
                    job = self._queue.get_nowait()  # ... then take whatever else is already waiting
                except queue.Empty:
                    break
            if batch:
                with self._owner:
                    self._commit_batch(conn, batch)
            if isinstance(job, _Stop):
                return

    def _commit_batch(self, conn: sqlite3.Connection, batch: list[_Job]) -> None:
        outcomes: list[_Outcome] = []
        try:
            _execute_retrying(conn, "BEGIN IMMEDIATE")
            if len(batch) == 1:
                # A job alone needs no savepoint: if it raises, rolling back the transaction undoes it.
                outcome = self._run_alone(conn, batch[0])
                if not outcome[1]:
                    _deliver([outcome])
                    return
                outcomes.append(outcome)
            else:
                for job in batch:
                    outcomes.append(self._run_job(conn, job))
            _execute_retrying(conn, "COMMIT")
        except Exception as exc:
            # The batch as a whole failed (BEGIN, COMMIT or a savepoint could not be
            # rolled back): nothing of it is durable, so every job gets the error.
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            _deliver([(job, False, exc) for job in batch])
            return
        self.commits += 1
        self.committed_jobs += len(batch)
        _deliver(outcomes)

    @staticmethod
    def _run_alone(conn: sqlite3.Connection, job: _Job) -> _Outcome:
        try:
            result = job.fn(conn)
        except Exception as exc:
            if not conn.in_transaction:
                raise  # SQLite rolled back the transaction itself (e.g. disk full): handled as a failed batch
            conn.execute("ROLLBACK")
            return (job, False, exc)
        return (job, True, result)

    @staticmethod
    def _run_job(conn: sqlite3.Connection, job: _Job) -> _Outcome:
        conn.execute("SAVEPOINT job")
        try:
            result = job.fn(conn)
        except Exception as exc:
            if not conn.in_transaction:
                raise  # SQLite rolled back the whole transaction (e.g. disk full): the batch is lost
            conn.execute("ROLLBACK TO job")
            conn.execute("RELEASE job")
            return (job, False, exc)
        conn.execute("RELEASE job")
        return (job, True, result)
