"""The PostgreSQL journal store: one database shared by any number of proxy instances.

Design, in short:

* Every write verb is one ``READ COMMITTED`` transaction on a pooled
  connection, running the same SQL as the SQLite store (``_ops``). What
  SQLite's single writer gives by construction, the verbs get from locks taken
  before they decide anything: the row of every invocation they change or
  complete an entry of (``lock_invocation``, ``SELECT ... FOR UPDATE``, or the
  fencing ``UPDATE`` itself), and an advisory lock for an object key or a
  promise (``lock_name``), so two verbs on the same invocation or key take
  turns while the others run side by side. Updates re-check their conditions
  on the latest row. A transaction that loses a race anyway (a deadlock
  between a cancel walking down to callees and a callee ending up to its
  caller; two first uses of one idempotency key) is rolled back and run again
  from the start; it had no effect.
* ``SERIALIZABLE`` was the first design and is what the shared SQL was checked
  against, but its predicate locks are taken per index page: invocation ids
  grow with time, so concurrent unrelated invocations share pages, and most
  transactions under load failed as conflicts.
* A verb returns only after its ``COMMIT`` returned, so an acknowledged append
  (or claim, or completion) is durable (``synchronous_commit`` as the server
  is configured; ``on`` by default).
* Fencing needs no lease check: every write on behalf of an attempt names its
  attempt number, and the row must still be ``running`` at that number in the
  same transaction. An instance that took an invocation over made it
  ``pending`` (and its next claim bumps the number), so the old owner's writes
  all miss.
* Commits that matter to other instances (an invocation ended, an entry got a
  completion, deployments changed) send a ``NOTIFY`` inside the same
  transaction, so it is delivered if and only if the commit happened.
  ``subscribe`` listens on a connection of its own and reconnects when it is
  lost, reporting the gap.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import re
import secrets
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Any, Final, TypeAlias, TypeVar

import asyncpg
import msgspec
from asyncpg.pool import PoolConnectionProxy

from proxy.store import _ops_deployments as deployments, redacted
from proxy.store._sql_store import SQLStore, verb_of
from proxy.store._sqlite_writer import StoreClosedError
from proxy.store._tx import Dialect, Row, Tx
from proxy.store.base import AppendResult, Broadcast, Deployment, Effects, RemovedDeployment, StoreUnavailable
from proxy.store.migrate import migrate_postgresql

__all__ = ["CHANNEL", "PostgresStore", "PostgresTx"]

log = logging.getLogger("durable_proxy.store")

T = TypeVar("T")

#: A connection of the pool, or one of its own.
Connection: TypeAlias = "asyncpg.Connection[Any] | PoolConnectionProxy[Any]"

#: The ``LISTEN``/``NOTIFY`` channel the instances sharing a database talk on.
CHANNEL: Final = "durable_proxy"
#: A transaction that lost a race is run again up to this many times before the verb gives up.
_MAX_RETRIES: Final = 50
#: NOTIFY payloads must stay under 8000 bytes; ids are short, so this many per message is safe.
_IDS_PER_MESSAGE: Final = 100
#: SQLSTATE classes that mean "the database cannot serve this now", not "this request is wrong".
_UNAVAILABLE_CLASSES: Final = ("08", "53", "57", "58")
#: The server ended this session for sitting in a transaction longer than the lease (see ``open``).
_IDLE_IN_TRANSACTION_TIMEOUT: Final = "25P03"

_broadcast_encoder = msgspec.json.Encoder()
_broadcast_decoder = msgspec.json.Decoder(Broadcast)
_PLACEHOLDER = re.compile(r"\?")


@functools.lru_cache(maxsize=2048)
def _numbered(sql: str) -> str:
    """``?`` placeholders -> ``$1``, ``$2``... (the shared SQL never has a ``?`` inside a literal)."""
    counter = iter(range(1, sql.count("?") + 1))
    return _PLACEHOLDER.sub(lambda _: f"${next(counter)}", sql)


def _rowcount(status: str) -> int:
    """The row count of a command tag (``UPDATE 3``, ``INSERT 0 1``); 0 for tags without one."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


class PostgresTx:
    """A ``Tx`` over an asyncpg connection inside a transaction."""

    __slots__ = ("_conn",)

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    @property
    def dialect(self) -> Dialect:
        return "postgresql"

    async def execute(self, sql: str, params: Sequence[object] = ()) -> int:
        return _rowcount(await self._conn.execute(_numbered(sql), *params))

    async def fetchone(self, sql: str, params: Sequence[object] = ()) -> Row | None:
        return await self._conn.fetchrow(_numbered(sql), *params)

    async def fetchall(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        return list(await self._conn.fetch(_numbered(sql), *params))

    async def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        await self._conn.executemany(_numbered(sql), list(rows))


def _unavailable(exc: BaseException) -> StoreUnavailable | None:
    """The ``StoreUnavailable`` an error stands for, or None when it is a bug or a bad request."""
    if isinstance(exc, asyncpg.PostgresError):
        state = str(getattr(exc, "sqlstate", "") or "")
        if state[:2] in _UNAVAILABLE_CLASSES or state == _IDLE_IN_TRANSACTION_TIMEOUT:
            return StoreUnavailable(f"the journal database is unavailable ({state}): {exc}")
        return None
    if isinstance(exc, (OSError, asyncpg.InterfaceError, asyncio.TimeoutError)):
        return StoreUnavailable(f"the journal database is unreachable: {exc}")
    return None


def _effects_of(result: object) -> Effects | None:
    if isinstance(result, Effects):
        return result
    if isinstance(result, AppendResult):
        return result.effects
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], Effects):
        return result[1]
    return None


class PostgresStore(SQLStore):
    """A ``JournalStore`` in a PostgreSQL database, shared by every proxy instance pointed at it."""

    __slots__ = (
        "_closing",
        "_dsn",
        "_idle",
        "_in_flight",
        "_listener",
        "_pool",
        "_pool_size",
        "_secret",
        "_subscriber",
        "instance_id",
        "lease_ms",
    )

    shared = True

    def __init__(self, dsn: str, *, instance_id: str, lease_ms: int = 10_000, pool_size: int = 16) -> None:
        if not instance_id:
            raise ValueError("a PostgreSQL store needs this instance's id (its name in leases)")
        self._dsn = dsn
        self.instance_id = instance_id
        self.lease_ms = lease_ms
        self.write_observer: Callable[[str, float], None] | None = None
        self._pool_size = pool_size
        self._pool: asyncpg.Pool[Any] | None = None
        self._secret: bytes | None = None
        self._listener: asyncpg.Connection[Any] | None = None
        self._subscriber: asyncio.Task[None] | None = None
        #: Verbs started and not yet returned; ``close`` lets them finish.
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False

    async def open(self) -> None:
        if self._pool is not None:
            raise RuntimeError("PostgresStore.open() may only be called once; make a new store to reopen")
        try:
            self._pool = await asyncpg.create_pool(
                self._dsn,
                min_size=min(2, self._pool_size),
                max_size=self._pool_size,
                statement_cache_size=1024,
                # A process stopped (SIGSTOP, a VM freeze) inside a transaction would keep its row locks, and
                # the others skip locked rows when they take over expired leases: the invocation it was
                # writing would stay stuck until it woke. Its session ends instead, releasing them, once it
                # has been silent inside a transaction for a lease; verbs never wait on anything else there.
                server_settings={"idle_in_transaction_session_timeout": str(self.lease_ms)},
                reset=_reset,
            )
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreUnavailable(f"cannot connect to the PostgreSQL database {redacted(self._dsn)}: {exc}") from None
        try:
            async with self._pool.acquire() as conn:
                await migrate_postgresql(conn)
            candidate = secrets.token_bytes(32)
            self._secret = await self._write(lambda tx: deployments.ensure_secret(tx, candidate))
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Let the verbs already started finish, then close every connection. Safe to call twice."""
        self._closing = True
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=30)
        except TimeoutError:
            log.warning("closing the store with %d operations still running", self._in_flight)
        if self._subscriber is not None:
            self._subscriber.cancel()
            await asyncio.gather(self._subscriber, return_exceptions=True)
            self._subscriber = None
        if self._listener is not None:
            listener, self._listener = self._listener, None
            await _close_quietly(listener)
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), timeout=10)
            except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                pool.terminate()

    async def secret(self) -> bytes:
        if self._secret is None:
            raise StoreClosedError("the store is not open")
        return self._secret

    def _open_pool(self) -> asyncpg.Pool[Any]:
        if self._pool is None or self._closing:
            raise StoreClosedError("the store is closed")
        return self._pool

    async def _transact(self, fn: Callable[[Tx], Coroutine[Any, Any, T]]) -> T:
        pool = self._open_pool()
        self._begin()
        try:
            return await self._write_on(pool, fn)
        finally:
            self._end()

    async def _read(self, fn: Callable[[Tx], Coroutine[Any, Any, T]]) -> T:
        pool = self._open_pool()
        self._begin()
        try:
            async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
                return await fn(PostgresTx(conn))
        except Exception as exc:
            unavailable = _unavailable(exc)
            if unavailable is None:
                raise
            raise unavailable from exc
        finally:
            self._end()

    def _begin(self) -> None:
        self._in_flight += 1
        self._idle.clear()

    def _end(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0:
            self._idle.set()

    async def _write_on(self, pool: asyncpg.Pool[Any], fn: Callable[[Tx], Coroutine[Any, Any, T]]) -> T:
        for retry in range(_MAX_RETRIES + 1):
            try:
                async with pool.acquire() as conn, conn.transaction():
                    result = await fn(PostgresTx(conn))
                    await self._announce(conn, fn, result)
                return result
            except (asyncpg.SerializationError, asyncpg.DeadlockDetectedError, asyncpg.UniqueViolationError):
                # Lost a race with a concurrent transaction; nothing of this one was committed.
                if retry == _MAX_RETRIES:
                    raise StoreUnavailable(
                        f"a write kept conflicting with concurrent ones ({_MAX_RETRIES} retries)"
                    ) from None
                await asyncio.sleep(random.uniform(0, min(0.05, 0.001 * 2**retry)))
            except Exception as exc:
                unavailable = _unavailable(exc)
                if unavailable is None:
                    raise
                raise unavailable from exc
        raise AssertionError("unreachable")

    async def _announce(self, conn: Connection, fn: Callable[..., object], result: object) -> None:
        """Inside the write's transaction: tell the other instances what it did that concerns them."""
        effects = _effects_of(result)
        changed = (
            isinstance(result, Deployment)
            or (isinstance(result, RemovedDeployment) and result.outcome == "removed")
            or (result is True and verb_of(fn) == "remove_endpoint")
        )
        if not changed and (effects is None or not (effects.ended or effects.notified)):
            return
        ended = [] if effects is None else [e.invocation_id for e in effects.ended]
        notified = [] if effects is None else effects.notified
        for message in _messages(self.instance_id, ended, notified, changed):
            await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, message)

    async def subscribe(self, on_broadcast: Callable[[Broadcast], None], on_gap: Callable[[], None]) -> None:
        if self._subscriber is not None:
            raise RuntimeError("already subscribed")
        self._open_pool()
        connected = asyncio.get_running_loop().create_future()
        self._subscriber = asyncio.get_running_loop().create_task(
            self._listen(on_broadcast, on_gap, connected), name="durable-proxy-listen"
        )
        await asyncio.shield(connected)

    async def _listen(
        self, on_broadcast: Callable[[Broadcast], None], on_gap: Callable[[], None], connected: asyncio.Future[None]
    ) -> None:
        """Hold a ``LISTEN`` connection for as long as the store is open, making it again when lost."""

        def deliver(_conn: object, _pid: int, _channel: str, payload: object) -> None:
            try:
                broadcast = _broadcast_decoder.decode(str(payload))
            except msgspec.DecodeError:
                log.warning("ignoring a malformed broadcast on %s: %.200r", CHANNEL, payload)
                return
            if broadcast.sender != self.instance_id:
                on_broadcast(broadcast)

        delay = 0.05
        first = True
        while True:
            lost = asyncio.Event()
            try:
                listener = await asyncpg.connect(self._dsn)
                listener.add_termination_listener(lambda _conn, lost=lost: lost.set())
                await listener.add_listener(CHANNEL, deliver)
            except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("cannot listen for other instances' commits (%s); retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            self._listener = listener
            delay = 0.05
            if first:
                first = False
                if not connected.done():
                    connected.set_result(None)
            else:
                on_gap()  # whatever was committed while nobody listened was not heard
            try:
                await _wait_lost(listener, lost)
            finally:
                self._listener = None
                await _close_quietly(listener)
            log.warning("lost the connection that hears other instances' commits; reconnecting")


async def _wait_lost(listener: asyncpg.Connection[Any], lost: asyncio.Event) -> None:
    """Until the connection is lost; a cheap query every few seconds notices a silently dead peer."""
    while not lost.is_set():
        try:
            await asyncio.wait_for(lost.wait(), timeout=5)
        except TimeoutError:
            try:
                await asyncio.wait_for(listener.execute("SELECT 1"), timeout=5)
            except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                return


async def _reset(conn: asyncpg.Connection[Any]) -> None:
    """Make a connection ready for its next user. Sessions hold nothing but transactions (advisory
    locks are transaction-scoped, listening has a connection of its own), so the pool's default reset
    (unlock all advisory locks, close cursors, unlisten, reset settings: one more round trip after
    every verb) comes down to ending a transaction that an interrupted verb left open."""
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


async def _close_quietly(conn: asyncpg.Connection[Any]) -> None:
    try:
        await asyncio.wait_for(conn.close(), timeout=2)
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        conn.terminate()


def _messages(sender: str, ended: list[str], notified: list[str], deployments_changed: bool) -> list[str]:
    """The broadcasts for one commit, split so that each payload stays well under NOTIFY's 8000 bytes."""
    messages: list[str] = []
    while ended or notified or deployments_changed:
        chunk_ended, ended = ended[:_IDS_PER_MESSAGE], ended[_IDS_PER_MESSAGE:]
        room = _IDS_PER_MESSAGE - len(chunk_ended)
        chunk_notified, notified = notified[:room], notified[room:]
        broadcast = Broadcast(
            sender=sender, ended=chunk_ended, notified=chunk_notified, deployments=deployments_changed
        )
        messages.append(_broadcast_encoder.encode(broadcast).decode())
        deployments_changed = False
    return messages
