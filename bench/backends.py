"""How durable-proxy's store is provided for a run: the scenarios do not depend on it.

A backend prepares a fresh store in a work directory (optionally seeded with
completed invocations), names the ``serve`` arguments that point the proxy at
it, counts invocations by status (to wait for a state without the admin API's
paging), and describes itself for the report. ``sqlite`` is the embedded
store at its default durability (``synchronous=FULL``). ``postgresql`` is a
fresh database on a PostgreSQL server, shared by one or more proxy
instances (``instances``), each started with ``serve_args(i)``.
"""

from __future__ import annotations

import abc
import asyncio
import re
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

#: The PostgreSQL server the bench database is created on, unless ``--postgres-url`` names another.
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
#: The database created (dropped first) for each PostgreSQL stack.
DEFAULT_POSTGRES_DB = "durable_bench"
#: The server settings that say how durable a commit is, and what it costs; recorded with the machine.
_PG_SETTINGS = (
    "synchronous_commit", "fsync", "wal_sync_method", "full_page_writes", "commit_delay", "wal_level",
    "shared_buffers", "max_connections",
)  # fmt: skip
_DATABASE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class Backend(abc.ABC):
    #: The name used in ``--backend`` and in the report.
    name: str
    #: How many proxy processes share the store.
    instances: int = 1

    @abc.abstractmethod
    def prepare(self, workdir: Path, *, seed_completed: int = 0) -> dict[str, Any]:
        """Make a fresh, empty store under ``workdir`` (with ``seed_completed`` completed
        invocations of ``Bench/noop`` in it); returns what the seeding did."""

    @abc.abstractmethod
    def serve_args(self, instance: int = 0) -> list[str]:
        """The ``python -m proxy serve`` arguments that select this store, for proxy ``instance``
        (0 to ``instances - 1``)."""

    @abc.abstractmethod
    def count_invocations(self, status: str) -> int:
        """How many invocations of the store have ``status`` now."""

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]: ...

    def server_process(self) -> tuple[int, str] | None:
        """A database server on this machine whose CPU the driver samples: its main PID, and
        the database measured. None for an embedded store."""
        return None

    def discard(self) -> None:  # noqa: B027 - most stores keep nothing outside the work directory
        """Remove what ``prepare`` made outside the work directory (once the proxies stopped)."""


class SqliteBackend(Backend):
    """The embedded SQLite store in one file, at the proxy's default durability."""

    name = "sqlite"

    def __init__(self, synchronous: str = "FULL") -> None:
        self.synchronous = synchronous
        self.path: Path | None = None

    def prepare(self, workdir: Path, *, seed_completed: int = 0) -> dict[str, Any]:
        workdir.mkdir(parents=True, exist_ok=True)
        self.path = workdir / "durable-proxy.db"
        for leftover in workdir.glob("durable-proxy.db*"):
            leftover.unlink()
        if seed_completed <= 0:
            return {}
        from bench.seed import seed_completed as seed

        return asyncio.run(seed(str(self.path), seed_completed))

    def serve_args(self, instance: int = 0) -> list[str]:
        if self.path is None:
            raise RuntimeError("prepare() the backend first")
        return ["--db", str(self.path), "--sqlite-synchronous", self.synchronous]

    def count_invocations(self, status: str) -> int:
        if self.path is None:
            raise RuntimeError("prepare() the backend first")
        with closing(sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=10)) as conn:
            found: int = conn.execute("SELECT count(*) FROM invocations WHERE status = ?", (status,)).fetchone()[0]
        return found

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "sqlite_synchronous": self.synchronous,
            "journal_mode": "WAL",
            "sqlite_version": sqlite3.sqlite_version,
        }


class PostgresUnavailable(RuntimeError):
    """The PostgreSQL server cannot be used: not reachable, or no client library."""


def redact(url: str) -> str:
    """``url`` without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def database_url(server_url: str, database: str) -> str:
    """``server_url`` pointing at ``database`` instead (its query, such as ``sslmode``, kept)."""
    return urlunsplit(urlsplit(server_url)._replace(path=f"/{database}"))


def check_database_name(name: str) -> str:
    if not _DATABASE_NAME.match(name):
        raise ValueError(f"a bench database name is lower-case letters, digits and _, not {name!r}")
    return name


def _connect_error(url: str, exc: BaseException) -> PostgresUnavailable:
    reason = str(exc).strip() or type(exc).__name__
    return PostgresUnavailable(f"cannot connect to {redact(url)}: {reason.splitlines()[0]}")


async def _connect(url: str) -> Any:
    try:
        import asyncpg
    except ImportError:
        raise PostgresUnavailable("asyncpg is not installed") from None
    try:
        return await asyncpg.connect(url, timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise _connect_error(url, exc) from None


def _local_postmaster(backend_pid: int, host: str | None) -> int | None:
    """The postmaster's PID when the server runs on this machine (its backend is a process here)."""
    if host not in (None, "", "localhost", "127.0.0.1", "::1") and not (host or "").startswith("/"):
        return None
    try:
        if Path(f"/proc/{backend_pid}/comm").read_text().strip() not in ("postgres", "postmaster"):
            return None
        parent = int(Path(f"/proc/{backend_pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        if Path(f"/proc/{parent}/comm").read_text().strip() not in ("postgres", "postmaster"):
            return None
    except (OSError, ValueError, IndexError):
        return None
    return parent


async def _server_info(url: str) -> dict[str, Any]:
    conn = await _connect(url)
    try:
        info: dict[str, Any] = {
            "url": redact(url),
            "version": str(await conn.fetchval("SHOW server_version")).split()[0],
            "version_full": await conn.fetchval("SELECT version()"),
        }
        for setting in _PG_SETTINGS:
            info[setting] = await conn.fetchval("SELECT current_setting($1)", setting)
        info["postmaster_pid"] = _local_postmaster(
            await conn.fetchval("SELECT pg_backend_pid()"), urlsplit(url).hostname
        )
        info["cpu_sampled"] = info["postmaster_pid"] is not None
        return info
    finally:
        await conn.close()


def postgres_server(url: str) -> dict[str, Any]:
    """The server's version and durability settings, and its postmaster PID when it runs on this
    machine (else None); raises ``PostgresUnavailable`` with the reason when it cannot be used."""
    try:
        return asyncio.run(asyncio.wait_for(_server_info(url), 15))
    except PostgresUnavailable:
        raise
    except Exception as exc:
        raise _connect_error(url, exc) from None


async def _recreate(server_url: str, database: str, *, create: bool = True) -> None:
    conn = await _connect(server_url)
    try:
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            database,
        )
        await conn.execute(f'DROP DATABASE IF EXISTS "{database}"')
        if create:
            await conn.execute(f'CREATE DATABASE "{database}"')
    finally:
        await conn.close()


class PostgresBackend(Backend):
    """A fresh database on a PostgreSQL server (as the server is configured), shared by ``instances``
    proxy processes, each with its own ``--instance-id``."""

    name = "postgresql"

    def __init__(
        self,
        server_url: str = DEFAULT_POSTGRES_URL,
        *,
        database: str = DEFAULT_POSTGRES_DB,
        instances: int = 1,
        server: dict[str, Any] | None = None,
        keep: bool = False,
    ) -> None:
        if instances < 1:
            raise ValueError("a PostgreSQL backend needs at least one proxy instance")
        self.server_url = server_url
        self.database = check_database_name(database)
        self.url = database_url(server_url, self.database)
        self.instances = instances
        self.server = server
        self.keep = keep
        self._prepared = False

    def prepare(self, workdir: Path, *, seed_completed: int = 0) -> dict[str, Any]:
        if seed_completed > 0:
            raise NotImplementedError("seeding completed invocations is only done on SQLite")
        workdir.mkdir(parents=True, exist_ok=True)
        asyncio.run(_recreate(self.server_url, self.database))
        self._prepared = True
        return {}

    def serve_args(self, instance: int = 0) -> list[str]:
        if not self._prepared:
            raise RuntimeError("prepare() the backend first")
        return ["--db", self.url, "--instance-id", f"bench-{instance + 1}"]

    def count_invocations(self, status: str) -> int:
        async def count() -> int:
            conn = await _connect(self.url)
            try:
                found: int = await conn.fetchval("SELECT count(*) FROM invocations WHERE status = $1", status)
                return found
            finally:
                await conn.close()

        return asyncio.run(count())

    def describe(self) -> dict[str, Any]:
        server = self.server or {}
        return {
            "backend": self.name,
            "instances": self.instances,
            "database": self.database,
            "server": redact(self.server_url),
            "postgresql_version": server.get("version"),
            "synchronous_commit": server.get("synchronous_commit"),
            "fsync": server.get("fsync"),
        }

    def server_process(self) -> tuple[int, str] | None:
        pid = (self.server or {}).get("postmaster_pid")
        return None if pid is None else (int(pid), self.database)

    def discard(self) -> None:
        if self._prepared and not self.keep:
            asyncio.run(_recreate(self.server_url, self.database, create=False))
            self._prepared = False


BACKENDS = ("sqlite", "postgresql")


def make_backend(name: str) -> Backend:
    """A backend with its defaults (PostgreSQL: one instance, on the default server)."""
    if name == "sqlite":
        return SqliteBackend()
    if name == "postgresql":
        return PostgresBackend()
    raise ValueError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")
