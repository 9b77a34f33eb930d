"""A virtual object whose exclusive handler records when it enters and leaves, for the multi-instance tests.

``Guarded/{key}/bump`` runs a step ``enter`` first and a step ``leave`` last,
and increments the key's state ``n`` in between. ``$GUARDED_LEDGER`` is an
SQLite file: ``visits`` has one row per physical run of ``enter`` or
``leave`` (with the invocation, the pid and the wall-clock time in ns);
``inside`` holds the invocation inside each key (``enter`` inserts it,
``leave`` removes it); ``overlaps`` has a row whenever an invocation entered
a key another one was still inside. A single writer per key leaves
``overlaps`` empty.
"""

from __future__ import annotations

import os
import sqlite3
import time

from handler_sdk import Endpoint, ObjectContext, ObjectSharedContext, VirtualObject, current_step

_SCHEMA = """
CREATE TABLE IF NOT EXISTS visits (
    invocation_id TEXT NOT NULL, object_key TEXT NOT NULL, event TEXT NOT NULL, at_ns INTEGER NOT NULL,
    pid INTEGER NOT NULL, value INTEGER
);
CREATE TABLE IF NOT EXISTS inside (object_key TEXT PRIMARY KEY, invocation_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS overlaps (object_key TEXT NOT NULL, invocation_id TEXT NOT NULL, inside_id TEXT NOT NULL);
"""
#: How long ``enter`` holds on after it recorded the entry: time for an overlapping run to show.
DWELL_S = 0.01


def open_ledger(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """The ledger at ``path``, created if needed (the tests read it with this too)."""
    db = sqlite3.connect(path, timeout=30, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(_SCHEMA)
    return db


def _db() -> sqlite3.Connection:
    return open_ledger(os.environ["GUARDED_LEDGER"])


def enter(object_key: str) -> int:
    invocation_id = current_step().invocation_id
    db = _db()
    try:
        db.execute("BEGIN IMMEDIATE")
        at_ns = time.time_ns()
        row = (invocation_id, object_key, at_ns, os.getpid())
        db.execute("INSERT INTO visits VALUES (?, ?, 'enter', ?, ?, NULL)", row)
        inside = db.execute("SELECT invocation_id FROM inside WHERE object_key = ?", (object_key,)).fetchone()
        if inside is not None and inside[0] != invocation_id:
            db.execute("INSERT INTO overlaps VALUES (?, ?, ?)", (object_key, invocation_id, inside[0]))
        db.execute("INSERT OR REPLACE INTO inside VALUES (?, ?)", (object_key, invocation_id))
        db.execute("COMMIT")
    finally:
        db.close()
    time.sleep(DWELL_S)
    return at_ns


def leave(object_key: str, value: int) -> int:
    invocation_id = current_step().invocation_id
    db = _db()
    try:
        db.execute("BEGIN IMMEDIATE")
        at_ns = time.time_ns()
        db.execute(
            "INSERT INTO visits VALUES (?, ?, 'leave', ?, ?, ?)", (invocation_id, object_key, at_ns, os.getpid(), value)
        )
        db.execute("DELETE FROM inside WHERE object_key = ? AND invocation_id = ?", (object_key, invocation_id))
        db.execute("COMMIT")
    finally:
        db.close()
    return at_ns


guarded = VirtualObject("Guarded")


@guarded.handler()
async def bump(ctx: ObjectContext) -> int:
    await ctx.run("enter", enter, ctx.key())
    n = await ctx.get("n", type_hint=int) or 0
    ctx.set("n", n + 1)
    await ctx.run("leave", leave, ctx.key(), n + 1)
    return n + 1


@guarded.handler(kind="shared")
async def value(ctx: ObjectSharedContext) -> int:
    return await ctx.get("n", type_hint=int) or 0


app = Endpoint([guarded]).asgi()
