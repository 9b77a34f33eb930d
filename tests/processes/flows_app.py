"""Handlers for the sleep and call-chain crash tests, with a ledger of every step's executions.

``$FLOWS_LEDGER`` is an SQLite file: ``executions`` has one row per physical run
of a step (with the pid and the wall-clock time), ``applied`` one row per step
of an invocation (keyed by the step's idempotency key), the way a downstream
that honours idempotency keys would record it. ``$GATE_DIR`` stops the first
execution of the step named ``$GATE_STEP`` until ``$GATE_DIR/release`` exists.
"""

from __future__ import annotations

import os
import sqlite3
import time
from datetime import timedelta
from pathlib import Path

from handler_sdk import Context, Endpoint, Service, current_step

LEDGER = os.environ["FLOWS_LEDGER"]
GATE_DIR = Path(os.environ["GATE_DIR"])
GATE_STEP = os.environ.get("GATE_STEP", "")


def _db() -> sqlite3.Connection:
    db = sqlite3.connect(LEDGER, timeout=30, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE IF NOT EXISTS executions (key TEXT, step TEXT, pid INTEGER, at_ms INTEGER)")
    db.execute("CREATE TABLE IF NOT EXISTS applied (key TEXT PRIMARY KEY, step TEXT, at_ms INTEGER)")
    return db


def _gate(step: str) -> None:
    if step != GATE_STEP:
        return
    try:
        os.close(os.open(GATE_DIR / "taken", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return
    (GATE_DIR / "holder.tmp").write_text(str(os.getpid()))
    (GATE_DIR / "holder.tmp").rename(GATE_DIR / "holder")
    deadline = time.monotonic() + 120
    while not (GATE_DIR / "release").exists() and time.monotonic() < deadline:
        time.sleep(0.02)


def effect(step: str) -> int:
    """A side effect: logged on every execution, applied once per idempotency key."""
    _gate(step)
    key = current_step().idempotency_key
    now = time.time_ns() // 1_000_000
    db = _db()
    try:
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO executions VALUES (?, ?, ?, ?)", (key, step, os.getpid(), now))
        db.execute("INSERT OR IGNORE INTO applied VALUES (?, ?, ?)", (key, step, now))
        db.execute("COMMIT")
    finally:
        db.close()
    return now


sleeper = Service("Sleeper")


@sleeper.handler()
async def nap(ctx: Context, seconds: float) -> int:
    await ctx.run("before", effect, "before")
    await ctx.sleep(timedelta(seconds=seconds))
    return await ctx.run("after", effect, "after")


chain = Service("Chain")


@chain.handler()
async def a(ctx: Context, n: int) -> int:
    await ctx.run("a-step", effect, "a-step")
    return await ctx.call("Chain", "b", n + 1, type_hint=int) + 1


@chain.handler()
async def b(ctx: Context, n: int) -> int:
    await ctx.run("b-step", effect, "b-step")
    return await ctx.call("Chain", "c", n + 1, type_hint=int) + 1


@chain.handler()
async def c(ctx: Context, n: int) -> int:
    await ctx.run("c-step", effect, "c-step")
    await ctx.run("c-gated", effect, "c-gated")
    return n


app = Endpoint([sleeper, chain]).asgi()
