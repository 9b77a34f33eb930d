"""How durable-proxy's store is provided for a run: the scenarios do not depend on it.

A backend prepares a fresh store in a work directory (optionally seeded with
completed invocations), names the ``serve`` arguments that point the proxy at
it, counts invocations by status (to wait for a state without the admin API's
paging), and describes itself for the report. ``sqlite`` is the embedded
store at its default durability (``synchronous=FULL``).
"""

from __future__ import annotations

import abc
import asyncio
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any


class Backend(abc.ABC):
    #: The name used in ``--backend`` and in the report.
    name: str

    @abc.abstractmethod
    def prepare(self, workdir: Path, *, seed_completed: int = 0) -> dict[str, Any]:
        """Make a fresh, empty store under ``workdir`` (with ``seed_completed`` completed
        invocations of ``Bench/noop`` in it); returns what the seeding did."""

    @abc.abstractmethod
    def serve_args(self) -> list[str]:
        """The ``python -m proxy serve`` arguments that select this store."""

    @abc.abstractmethod
    def count_invocations(self, status: str) -> int:
        """How many invocations of the store have ``status`` now."""

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]: ...


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

    def serve_args(self) -> list[str]:
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


BACKENDS = ("sqlite",)


def make_backend(name: str) -> Backend:
    if name == "sqlite":
        return SqliteBackend()
    raise ValueError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")
