"""A counter object for the crash tests of virtual objects, with a ledger of every step's executions.

``$OBJECTS_LEDGER`` is an SQLite file: ``executions`` has one row per physical
run of a step (with the pid), ``applied`` one row per step of an invocation
(keyed by the step's idempotency key, as a downstream that honours
idempotency keys would record it), with the counter value the invocation read.
"""

from __future__ import annotations

import os
import sqlite3

from handler_sdk import Context, Endpoint, ObjectContext, ObjectSharedContext, Service, VirtualObject, current_step

_SCHEMA = """
CREATE TABLE IF NOT EXISTS executions (step_key TEXT, object_key TEXT, value_read INTEGER, pid INTEGER);
CREATE TABLE IF NOT EXISTS applied (step_key TEXT PRIMARY KEY, object_key TEXT, value_read INTEGER, pid INTEGER);
CREATE TABLE IF NOT EXISTS awakeables (object_key TEXT, awakeable_id TEXT PRIMARY KEY);
"""


def open_ledger(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """The ledger at ``path``, created if needed (the tests read it with this too)."""
    db = sqlite3.connect(path, timeout=30, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(_SCHEMA)
    return db


def _db() -> sqlite3.Connection:
    return open_ledger(os.environ["OBJECTS_LEDGER"])


def apply(object_key: str, value_read: int) -> None:
    """A side effect of the increment: logged on every execution, applied once per idempotency key."""
    step_key = current_step().idempotency_key
    row = (step_key, object_key, value_read, os.getpid())
    db = _db()
    try:
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO executions VALUES (?, ?, ?, ?)", row)
        db.execute("INSERT OR IGNORE INTO applied VALUES (?, ?, ?, ?)", row)
        db.execute("COMMIT")
    finally:
        db.close()


def hand_out(object_key: str, awakeable_id: str) -> None:
    db = _db()
    try:
        db.execute("INSERT OR IGNORE INTO awakeables VALUES (?, ?)", (object_key, awakeable_id))
    finally:
        db.close()


counter = VirtualObject("Counter")


@counter.handler()
async def increment(ctx: ObjectContext) -> int:
    n = await ctx.get("n", type_hint=int) or 0
    await ctx.run("apply", apply, ctx.key(), n)
    ctx.set("n", n + 1)
    return n + 1


@counter.handler()
async def hold(ctx: ObjectContext) -> str:
    """Hold the key until the awakeable it hands out (in the ledger's ``awakeables``) is resolved."""
    awakeable_id, released = ctx.awakeable(type_hint=str)
    await ctx.run("hand-out", hand_out, ctx.key(), awakeable_id)
    return await released


@counter.handler(kind="shared")
async def value(ctx: ObjectSharedContext) -> int:
    return await ctx.get("n", type_hint=int) or 0


plain = Service("Plain")


@plain.handler()
async def ping(ctx: Context) -> str:
    return "pong"


app = Endpoint([counter, plain]).asgi()
