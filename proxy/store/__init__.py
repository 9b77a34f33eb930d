"""The journal store: durable state of the proxy behind the ``JournalStore`` interface."""

from __future__ import annotations

from proxy.store.base import (
    ACTIVE_STATUSES,
    TERMINAL_STATUSES,
    AppendOutcome,
    AttemptRow,
    Claim,
    Created,
    Deployment,
    IdempotencyConflict,
    Invocation,
    InvocationStatus,
    JournalRow,
    JournalStore,
    NewInvocation,
    ServiceRow,
    StoredFailure,
)

__all__ = [
    "ACTIVE_STATUSES",
    "TERMINAL_STATUSES",
    "AppendOutcome",
    "AttemptRow",
    "Claim",
    "Created",
    "Deployment",
    "IdempotencyConflict",
    "Invocation",
    "InvocationStatus",
    "JournalRow",
    "JournalStore",
    "NewInvocation",
    "ServiceRow",
    "StoredFailure",
    "open_store",
    "redacted",
]

_SQLITE_PREFIX = "sqlite:///"


def open_store(
    db: str,
    *,
    synchronous: str = "FULL",
    instance_id: str = "",
    lease_ms: int = 10_000,
    pool_size: int = 16,
) -> JournalStore:
    """Make the store for ``db``; the caller then awaits ``store.open()``.

    ``db`` is a file path or a ``sqlite:///path`` URL (``sqlite:////abs/path``
    for an absolute path, as in SQLAlchemy); the file is created if missing.
    Or a ``postgresql://user:password@host:port/database`` URL (libpq's
    parameters, such as ``?sslmode=require``, may follow), for a database that
    several proxy instances share; ``instance_id`` names this one in the leases
    it holds (a new random name when empty).
    """
    scheme = db.split("://", 1)[0].lower() if "://" in db else None
    if scheme in ("postgresql", "postgres"):
        return _postgres_store(db, instance_id=instance_id, lease_ms=lease_ms, pool_size=pool_size)

    from proxy.store.sqlite import SQLiteStore  # keeps `import proxy.store` light

    if scheme == "sqlite":
        if not db.lower().startswith(_SQLITE_PREFIX) or len(db) == len(_SQLITE_PREFIX):
            raise ValueError(
                f"a SQLite URL needs a file path: sqlite:///relative.db or sqlite:////abs/path, not {db!r}"
            )
        path = db[len(_SQLITE_PREFIX) :]
    elif scheme is not None:
        raise ValueError(f"unsupported database URL {db!r}: use a SQLite file path, sqlite:///path or postgresql://...")
    else:
        path = db
    if not path or path == ":memory:" or path.startswith("file:"):
        raise ValueError(f"the journal needs a database file on disk, not {db!r}")
    if synchronous not in ("FULL", "NORMAL"):
        raise ValueError(f"synchronous must be FULL or NORMAL, not {synchronous!r}")
    return SQLiteStore(
        path, synchronous="FULL" if synchronous == "FULL" else "NORMAL", instance_id=instance_id or "local"
    )


def _postgres_store(db: str, *, instance_id: str, lease_ms: int, pool_size: int) -> JournalStore:
    try:
        from proxy.store.postgres import PostgresStore
    except ImportError as exc:
        raise ValueError(
            f"a PostgreSQL database needs the asyncpg driver ({exc}): pip install 'durable-proxy[postgres]'"
        ) from None
    if lease_ms <= 0:
        raise ValueError("lease_ms must be positive")
    if pool_size < 1:
        raise ValueError("the connection pool needs at least one connection")
    return PostgresStore(db, instance_id=instance_id or new_instance_id(), lease_ms=lease_ms, pool_size=pool_size)


def new_instance_id() -> str:
    """A name for an instance that was not given one: the host's name and a random suffix."""
    import secrets
    import socket

    return f"{socket.gethostname()[:40]}-{secrets.token_hex(4)}"


def redacted(db: str) -> str:
    """The database setting without its password, for messages and logs."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(db)
    if "://" not in db or parts.password is None:
        return db
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)))
