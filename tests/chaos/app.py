"""The interpreter service of the chaos suite: ``Chaos/run`` runs a program (see ``programs``), and the
``Counter`` virtual object adds amounts to its key's state.

Every step function writes ``$CHAOS_LEDGER``, an SQLite file outside the
proxy (WAL, ``synchronous=FULL``), in one transaction:

* ``executions``: one row per physical execution of a step (with the invocation's attempt that ran it and
  the pid);
* ``applied``: one row per step, keyed by ``current_step().idempotency_key``
  (``INSERT OR IGNORE``), as a downstream that honours idempotency keys would
  record it, with the value the step returned;
* ``sleeps``: for the step after each sleep, when it ran and when the sleep was due;
* ``awakeables``: the ids the programs hand out, for the driver to resolve;
* ``counter_effects``: one row per ``Counter/add`` (by idempotency key), with
  the value it read and the amount it added.

Run it with ``uvicorn tests.chaos.app:app``.
"""

from __future__ import annotations

import os
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from handler_sdk import Context, Endpoint, ObjectContext, Service, TerminalError, VirtualObject, current_step

from .programs import (
    TERMINAL_STEP_CODE,
    AddRequest,
    Program,
    canonical,
    caught_contribution,
    counter_effect_value,
    failed_contribution,
    planned_failure_message,
    result_of,
    step_value,
    terminal_message,
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS executions (
    invocation_id TEXT NOT NULL, step_index INTEGER NOT NULL, name TEXT NOT NULL, attempt INTEGER NOT NULL,
    pid INTEGER NOT NULL, at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS applied (
    key TEXT PRIMARY KEY, invocation_id TEXT NOT NULL, step_index INTEGER NOT NULL, name TEXT NOT NULL,
    value TEXT NOT NULL, at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS sleeps (
    invocation_id TEXT NOT NULL, step_index INTEGER NOT NULL, wake_at_ms INTEGER NOT NULL,
    woke_at_ms INTEGER NOT NULL, pid INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS awakeables (
    awakeable_id TEXT PRIMARY KEY, invocation_id TEXT NOT NULL, tag TEXT NOT NULL, k INTEGER NOT NULL,
    at_ms INTEGER NOT NULL, resolved_at_ms INTEGER
);
CREATE TABLE IF NOT EXISTS counter_effects (
    key TEXT PRIMARY KEY, object_key TEXT NOT NULL, tag TEXT NOT NULL, value_read INTEGER NOT NULL,
    amount INTEGER NOT NULL, at_ms INTEGER NOT NULL
);
"""


def open_ledger(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """The ledger at ``path``, created if needed (the driver and the checker open it with this too)."""
    db = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.executescript(SCHEMA)
    return db


def _ledger() -> sqlite3.Connection:
    return open_ledger(Path(os.environ["CHAOS_LEDGER"]))


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _record(name: str, value: str, attempt: int, extra: tuple[str, tuple[Any, ...]] | None = None) -> None:
    """Log this execution and apply the step once per idempotency key, in one transaction."""
    step = current_step()
    at = now_ms()
    db = _ledger()
    try:
        db.execute("BEGIN IMMEDIATE")
        db.execute(
            "INSERT INTO executions VALUES (?, ?, ?, ?, ?, ?)",
            (step.invocation_id, step.index, name, attempt, os.getpid(), at),
        )
        db.execute(
            "INSERT OR IGNORE INTO applied VALUES (?, ?, ?, ?, ?, ?)",
            (step.idempotency_key, step.invocation_id, step.index, name, value, at),
        )
        if extra is not None:
            db.execute(extra[0], extra[1])
        db.execute("COMMIT")
    finally:
        db.close()  # an open transaction is rolled back


def effect(tag: str, k: int, name: str, attempt: int) -> str:
    value = step_value(tag, k, name)
    _record(name, value, attempt)
    return value


def woke(tag: str, k: int, name: str, wake_at_ms: int, attempt: int) -> str:
    value = step_value(tag, k, name)
    step = current_step()
    row = (step.invocation_id, step.index, wake_at_ms, now_ms(), os.getpid())
    _record(name, value, attempt, ("INSERT INTO sleeps VALUES (?, ?, ?, ?, ?)", row))
    return value


def hand_out(tag: str, k: int, name: str, awakeable_id: str, attempt: int) -> str:
    value = step_value(tag, k, name)
    step = current_step()
    row = (awakeable_id, step.invocation_id, tag, k, now_ms())
    _record(name, value, attempt, ("INSERT OR IGNORE INTO awakeables VALUES (?, ?, ?, ?, ?, NULL)", row))
    return value


def fail_step(tag: str, k: int, name: str, attempt: int) -> str:
    message = terminal_message(tag, k)
    _record(name, message, attempt)
    raise TerminalError(message, status_code=TERMINAL_STEP_CODE)


def counter_effect(object_key: str, tag: str, value_read: int, amount: int, attempt: int) -> str:
    value = counter_effect_value(object_key, value_read, amount)
    step = current_step()
    row = (step.idempotency_key, object_key, tag, value_read, amount, now_ms())
    _record("effect", value, attempt, ("INSERT OR IGNORE INTO counter_effects VALUES (?, ?, ?, ?, ?, ?)", row))
    return value


chaos = Service("Chaos")


@chaos.handler()
async def run(ctx: Context, program: dict[str, Any]) -> dict[str, Any]:
    return await interpret(ctx, cast(Program, program))


async def interpret(ctx: Context, program: Program) -> dict[str, Any]:
    tag = program["tag"]
    contributions: list[str] = []
    for k, op in enumerate(program["ops"]):
        match op["op"]:
            case "step":
                contributions.append(await ctx.run(f"step-{k}", effect, tag, k, f"step-{k}", ctx.attempt))
            case "sleep":
                started = await ctx.now(f"now-{k}")
                wake_at_ms = round(started.timestamp() * 1000) + op["ms"]
                await ctx.sleep_until(datetime.fromtimestamp(wake_at_ms / 1000, UTC), f"sleep-{k}")
                contributions.append(await ctx.run(f"woke-{k}", woke, tag, k, f"woke-{k}", wake_at_ms, ctx.attempt))
            case "call":
                try:
                    result = await ctx.call("Chaos", "run", op["program"], name=f"call-{k}")
                    contributions.append(canonical(result))
                except TerminalError as exc:
                    contributions.append(failed_contribution(exc.status_code, exc.message))
            case "send":
                await ctx.send("Chaos", "run", op["program"], name=f"send-{k}")
                contributions.append("sent")
            case "add":
                request: AddRequest = {"amount": op["amount"], "tag": f"{tag}#{k}"}
                if op.get("send"):
                    await ctx.send("Counter", "add", request, key=op["key"], name=f"add-{k}")
                else:
                    await ctx.call("Counter", "add", request, key=op["key"], name=f"add-{k}")
                contributions.append("added")
            case "awakeable":
                awakeable_id, value = ctx.awakeable(type_hint=str, name=f"awk-{k}")
                await ctx.run(f"hand-out-{k}", hand_out, tag, k, f"hand-out-{k}", awakeable_id, ctx.attempt)
                contributions.append(await value)
            case "terminal":
                try:
                    await ctx.run(f"terminal-{k}", fail_step, tag, k, f"terminal-{k}", ctx.attempt)
                    contributions.append("not raised")
                except TerminalError as exc:
                    contributions.append(caught_contribution(exc.status_code, exc.message))
    if program["fail"] is not None:
        raise TerminalError(planned_failure_message(tag), status_code=program["fail"])
    return result_of(tag, contributions)


counter = VirtualObject("Counter")


@counter.handler()
async def add(ctx: ObjectContext, request: dict[str, Any]) -> int:
    n = await ctx.get("n", type_hint=int) or 0
    amount = int(request["amount"])
    await ctx.run("effect", counter_effect, ctx.key(), str(request["tag"]), n, amount, ctx.attempt)
    ctx.set("n", n + amount)
    return n + amount


#: Wait in-process for at most 200 ms, then suspend: sleeps under 200 ms end in-process, longer ones
#: suspend and are resumed by the proxy's timer; awaits of calls and awakeables do either. It is well
#: under the proxy's inactivity timeout of the chaos run (1 s), which a wait does not reset.
app = Endpoint([chaos, counter], suspend_after=timedelta(milliseconds=200)).asgi()
