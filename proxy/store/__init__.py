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
]

_SQLITE_PREFIX = "sqlite:///"


def open_store(db: str, *, synchronous: str = "FULL") -> JournalStore:
    """Make the store for ``db``; the caller then awaits ``store.open()``.

    ``db`` is a file path or a ``sqlite:///path`` URL (``sqlite:////abs/path``
    for an absolute path, as in SQLAlchemy). The file is created if missing.
    """
    from proxy.store.sqlite import SQLiteStore  # keeps `import proxy.store` light

    scheme = db.split("://", 1)[0].lower() if "://" in db else None
    if scheme in ("postgresql", "postgres"):
        raise ValueError("PostgreSQL support is not available yet; use a SQLite file path or sqlite:///path")
    if scheme == "sqlite":
        if not db.lower().startswith(_SQLITE_PREFIX) or len(db) == len(_SQLITE_PREFIX):
            raise ValueError(
                f"a SQLite URL needs a file path: sqlite:///relative.db or sqlite:////abs/path, not {db!r}"
            )
        path = db[len(_SQLITE_PREFIX) :]
    elif scheme is not None:
        raise ValueError(f"unsupported database URL {db!r}: use a SQLite file path or sqlite:///path")
    else:
        path = db
    if not path or path == ":memory:" or path.startswith("file:"):
        raise ValueError(f"the journal needs a database file on disk, not {db!r}")
    if synchronous not in ("FULL", "NORMAL"):
        raise ValueError(f"synchronous must be FULL or NORMAL, not {synchronous!r}")
    return SQLiteStore(path, synchronous="FULL" if synchronous == "FULL" else "NORMAL")
