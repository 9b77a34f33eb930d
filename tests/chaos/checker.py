"""The checker of a chaos run: what the clients saw, the proxy's journals and the ledger, against the programs.

It runs after the nemesis stopped and everything drained, and checks that

* every acknowledged invocation reached a terminal state, with the expected
  result, identical across every answer observed for its idempotency key;
* every journal (of the roots, of their callees, of the ``Counter`` calls) is
  contiguous (indices 0..n-1), holds exactly the entries the program implies,
  each name once, with attempt numbers that never decrease along it, and the
  recorded values the program implies;
* every journaled step was applied exactly once, with the journaled value,
  and nothing else was applied (re-executions are counted, not failed: a step
  runs at least once);
* no sleep woke before its ``wake_at``; each counter holds exactly the sum of
  the amounts added to it, and no add read a stale value;
* ``PRAGMA integrity_check`` said "ok" after every proxy kill, every killed
  process came back, and at least ``K`` kills were injected (anti-vacuity).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sqlite3
import statistics
from collections import Counter as Tally
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from handler_sdk.protocol import callee_invocation_id

from .nemesis import Fault
from .programs import (
    COUNTER_LAYOUT,
    TERMINAL_STEP_CODE,
    Outcome,
    Program,
    canonical,
    counter_amounts,
    counter_effect_value,
    expected_outcome,
    layout,
    step_value,
    terminal_message,
)

FENCED_LOG_LINE = "rejected an append from superseded attempt"
TERMINAL_STATUSES = ("completed", "failed")


@dataclasses.dataclass(slots=True)
class Answer:
    """One final answer of the ingress about a root invocation (an attach or a repeated call)."""

    status: int
    body: Any
    invocation_id: str | None
    at_s: float
    via: str


@dataclasses.dataclass(slots=True)
class Submission:
    i: int
    key: str
    program: Program
    invocation_id: str | None = None
    answers: list[Answer] = dataclasses.field(default_factory=list)
    #: Client tries that got no usable answer (connection refused or reset, timeout, 5xx).
    failed_tries: int = 0
    #: Answers that were neither usable nor a transient error (e.g. a 404 for the invocation).
    odd: list[str] = dataclasses.field(default_factory=list)

    @property
    def answered(self) -> bool:
        return bool(self.answers)


@dataclasses.dataclass(frozen=True, slots=True)
class Violation:
    category: str  # lost | duplicated | wrong | stuck | early-sleep | integrity | restart | vacuous | checker
    message: str

    def __str__(self) -> str:
        return f"[{self.category}] {self.message}"


@dataclasses.dataclass(slots=True)
class Report:
    figures: dict[str, Any]
    violations: list[Violation]

    @property
    def ok(self) -> bool:
        return not self.violations

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            **self.figures,
            "violations": [{"category": v.category, "message": v.message} for v in self.violations],
        }

    def summary(self, limit: int = 40) -> str:
        f = self.figures
        inv = f["invocations"]
        lines = [
            f"chaos seed {f['seed']}: {'OK' if self.ok else 'FAILED'} in {f['duration_s']:.1f}s",
            f"  invocations: submitted {inv['submitted']}, acknowledged {inv['acknowledged']}, "
            f"completed {inv['completed']}, failed-terminal {inv['failed_terminal']} "
            f"(planned {inv['planned_failures']}); checked {f['tree']['invocations']} invocations in all",
            f"  faults: {f['faults']['total']} ({', '.join(f'{k} {v}' for k, v in f['faults']['by_kind'].items())}); "
            f"kills {f['faults']['kills']} (wanted >= {f['faults']['kills_wanted']}, "
            f"under load {f.get('kills_under_load')})",
            f"  lost {f['lost']}, duplicated {f['duplicated']}, wrong {f['wrong']}, stuck {f['stuck']}; "
            f"re-executed steps {f['re_executed']}, fenced writes {f['fenced_writes']}",
            f"  recovery after proxy kills: p50 {f['recovery_ms']['p50']} ms, max {f['recovery_ms']['max']} ms "
            f"({f['recovery_ms']['samples']} measured); integrity_check ok {f['integrity']['ok']}"
            f"/{f['integrity']['checks']}",
            f"  client retries {f['client_retries']}; steps {f['tree']['run_steps']}, sleeps {f['tree']['sleeps']}, "
            f"awakeables {f['tree']['awakeables']}, counter adds {f['tree']['counter_adds']}",
        ]
        for violation in self.violations[:limit]:
            lines.append(f"  {violation}")
        if len(self.violations) > limit:
            lines.append(f"  ... and {len(self.violations) - limit} more violations")
        return "\n".join(lines)


@dataclasses.dataclass(slots=True)
class RunData:
    """Everything the driver collected, for the checker."""

    seed: int
    kills_wanted: int
    admin: str
    ledger: Path
    proxy_db: Path
    proxy_log: str
    submissions: list[Submission]
    faults: list[Fault]
    #: Seconds since the start at which the ingress answered something useful.
    ingress_successes: list[float]
    duration_s: float
    resolved_awakeables: int
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: The proxies' PostgreSQL database, when they shared one (``proxy_db`` is then unused).
    proxy_dsn: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Node:
    """An invocation the programs imply: a root, a called or sent child, or a ``Counter/add``."""

    invocation_id: str
    where: str  # a human label: the program tag, or tag#k for a counter add
    program: Program | None = None
    counter_key: str | None = None
    amount: int = 0


class _Checker:
    def __init__(self, data: RunData, client: httpx.AsyncClient) -> None:
        self.data = data
        self.client = client
        self.violations: list[Violation] = []
        self.tally: Tally[str] = Tally()
        #: Journaled run steps: idempotency key -> (recorded value, where, the attempt that journaled it).
        self.journaled_runs: dict[str, tuple[str, str, int]] = {}
        #: Sleep entries: (invocation id, index of the step after the sleep) -> wake_at_ms.
        self.sleeps: dict[tuple[str, int], int] = {}
        self.nodes: dict[str, Node] = {}
        self.statuses: Tally[str] = Tally()
        self.attempt_outcomes: Tally[str] = Tally()
        self.max_attempt = 0

    def flag(self, category: str, message: str) -> None:
        self.tally[category] += 1
        self.violations.append(Violation(category, message))

    async def get(self, path: str) -> tuple[int, Any]:
        for delay in (0.2, 0.5, 1.0, 2.0, 4.0, 0.0):
            try:
                response = await self.client.get(f"{self.data.admin}{path}", timeout=30)
                return response.status_code, response.json()
            except (httpx.HTTPError, json.JSONDecodeError):
                if not delay:
                    raise
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ the clients' view

    def check_answers(self) -> None:
        for sub in self.data.submissions:
            if sub.invocation_id is None:
                self.flag(
                    "stuck",
                    f"{sub.key}: the send was never acknowledged ({sub.failed_tries} failed tries; {sub.odd[:3]})",
                )
                continue
            if not sub.answers:
                self.flag("stuck", f"{sub.key} ({sub.invocation_id}): acknowledged, never answered ({sub.odd[:3]})")
                continue
            expected = expected_outcome(sub.program)
            first = sub.answers[0]
            for answer in sub.answers:
                if answer.invocation_id != sub.invocation_id:
                    self.flag(
                        "duplicated",
                        f"{sub.key}: answer via {answer.via} is for {answer.invocation_id}, "
                        f"but the key was acknowledged as {sub.invocation_id}",
                    )
                if (answer.status, answer.body) != (first.status, first.body):
                    self.flag(
                        "wrong",
                        f"{sub.key} ({sub.invocation_id}): answers differ: {first.status} {first.body!r} "
                        f"via {first.via} vs {answer.status} {answer.body!r} via {answer.via}",
                    )
            problem = _outcome_problem(expected, first.status, first.body)
            if problem:
                self.flag("wrong", f"{sub.key} ({sub.invocation_id}): the client got {problem}")

    # ------------------------------------------------------------------ the proxy's journals

    async def walk(self) -> None:
        queue: asyncio.Queue[Node] = asyncio.Queue()
        for sub in self.data.submissions:
            if sub.invocation_id is not None:
                queue.put_nowait(Node(sub.invocation_id, sub.key, program=sub.program))

        async def worker() -> None:
            while True:
                node = await queue.get()
                try:
                    if node.invocation_id in self.nodes:
                        self.flag("duplicated", f"{node.where}: invocation {node.invocation_id} is implied twice")
                        continue
                    self.nodes[node.invocation_id] = node
                    for child in await self.check_node(node):
                        queue.put_nowait(child)
                except Exception as exc:  # report it, and go on with the rest
                    self.flag("checker", f"{node.where} ({node.invocation_id}): {type(exc).__name__}: {exc}")
                finally:
                    queue.task_done()

        workers = [asyncio.ensure_future(worker()) for _ in range(8)]
        try:
            await queue.join()
        finally:
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    async def check_node(self, node: Node) -> list[Node]:
        status, found = await self.get(f"/invocations/{node.invocation_id}")
        if status == 404:
            self.flag("lost", f"{node.where}: invocation {node.invocation_id} does not exist")
            return []
        if status != 200:
            self.flag("wrong", f"{node.where}: GET /invocations/{node.invocation_id} answered {status}: {found}")
            return []
        self.statuses[found["status"]] += 1
        self.max_attempt = max(self.max_attempt, int(found["attempt"]))
        self.attempt_outcomes.update(str(a["outcome"]) for a in found.get("attempts", []))
        where = f"{node.where} ({node.invocation_id})"
        if found["status"] not in TERMINAL_STATUSES:
            self.flag(
                "stuck",
                f"{where}: still {found['status']} at attempt {found['attempt']} after the drain; "
                f"last failure {found.get('last_failure')}; journal {_journal_brief(found['journal'])}",
            )
        journal: list[dict[str, Any]] = found["journal"]
        self.check_journal_shape(where, journal)
        if node.program is not None:
            return self.check_program(node, where, found, journal)
        self.check_counter_add(node, where, found, journal)
        return []

    def check_journal_shape(self, where: str, journal: list[dict[str, Any]]) -> None:
        indices = [entry["index"] for entry in journal]
        if indices != list(range(len(journal))):
            self.flag("wrong", f"{where}: journal indices are not 0..n-1: {indices}")
        names = [(entry["kind"], entry["name"]) for entry in journal]
        repeated = [name for name, count in Tally(names).items() if count > 1]
        if repeated:
            self.flag("duplicated", f"{where}: journal entries recorded more than once: {repeated}")
        attempts = [entry["attempt"] for entry in journal]
        if any(later < earlier for earlier, later in zip(attempts, attempts[1:], strict=False)):
            self.flag("wrong", f"{where}: an entry was written by an older attempt than one before it: {attempts}")

    def record_run(self, invocation_id: str, where: str, entry: dict[str, Any]) -> None:
        recorded = entry["entry"]
        failure = recorded.get("failure")
        value = failure["message"] if failure else recorded.get("result")
        self.journaled_runs[f"{invocation_id}:{entry['index']}"] = (
            str(value),
            f"{where} {entry['name']}",
            int(entry["attempt"]),
        )

    def check_program(self, node: Node, where: str, found: dict[str, Any], journal: list[dict[str, Any]]) -> list[Node]:
        program = node.program
        assert program is not None
        tag = program["tag"]
        expected = expected_outcome(program)
        if found["status"] in TERMINAL_STATUSES:
            problem = _stored_outcome_problem(expected, found)
            if problem:
                self.flag("wrong", f"{where}: ended {problem}")
        plan = layout(program)
        actual = [(entry["kind"], entry["name"]) for entry in journal]
        wanted = [(e.kind, e.name) for e in plan]
        if found["status"] in TERMINAL_STATUSES and actual != wanted:
            self.flag("wrong", f"{where}: journal {actual} is not the program's {wanted}")
        elif actual != wanted[: len(actual)]:
            self.flag("wrong", f"{where}: journal {actual} is not a prefix of the program's {wanted}")
        children: list[Node] = []
        for entry, step in zip(journal, plan, strict=False):
            if (entry["kind"], entry["name"]) != (step.kind, step.name):
                break
            k, op, recorded = step.k, step.op, entry["entry"]
            label = f"{where} entry {entry['index']} ({entry['kind']} {entry['name']})"
            match entry["kind"]:
                case "run":
                    self.record_run(node.invocation_id, where, entry)
                    if op["op"] == "terminal":
                        failure = recorded.get("failure") or {}
                        if (failure.get("code"), failure.get("message")) != (
                            TERMINAL_STEP_CODE,
                            terminal_message(tag, k),
                        ):
                            self.flag("wrong", f"{label}: recorded {recorded}, expected its terminal failure")
                    elif recorded.get("result") != (value := step_value(tag, k, entry["name"])):
                        self.flag("wrong", f"{label}: recorded {recorded}, expected {value}")
                    if entry["name"].startswith("woke-"):
                        sleep = journal[entry["index"] - 1]
                        self.sleeps[(node.invocation_id, entry["index"])] = sleep["entry"]["wake_at_ms"]
                        if not sleep.get("completed"):
                            self.flag("wrong", f"{label}: ran after a sleep that is not completed")
                case "call" | "send":
                    child_id = callee_invocation_id(node.invocation_id, entry["index"])
                    if op["op"] == "add":
                        children.append(
                            Node(child_id, f"{tag}#{k}", counter_key=op["key"], amount=op["amount"]),
                        )
                    else:
                        child = op["program"]
                        children.append(Node(child_id, child["tag"], program=child))
                        if entry["kind"] == "call" and entry.get("completed"):
                            child_expected = expected_outcome(child)
                            problem = _completion_problem(child_expected, entry)
                            if problem:
                                self.flag("wrong", f"{label}: the call was completed with {problem}")
                case "sleep":
                    if recorded.get("wake_at_ms", 0) - _now_before(journal, entry["index"]) != op.get("ms"):
                        self.flag("wrong", f"{label}: wake_at_ms {recorded.get('wake_at_ms')} is not now + {op}")
        return children

    def check_counter_add(self, node: Node, where: str, found: dict[str, Any], journal: list[dict[str, Any]]) -> None:
        self.tally["counter_adds"] += 1
        if found.get("key") != node.counter_key or found.get("handler") != "add":
            self.flag("wrong", f"{where}: expected Counter/{node.counter_key}/add, found {found.get('key')}")
        actual = [(entry["kind"], entry["name"]) for entry in journal]
        if found["status"] in TERMINAL_STATUSES and actual != COUNTER_LAYOUT:
            self.flag("wrong", f"{where}: journal {actual} is not {COUNTER_LAYOUT}")
            return
        if len(journal) < 2:
            return
        got = journal[0]["entry"]
        value_read = got.get("value") if got.get("found") else 0
        self.record_run(node.invocation_id, where, journal[1])
        wanted = counter_effect_value(str(node.counter_key), int(value_read or 0), node.amount)
        if journal[1]["entry"].get("result") != wanted:
            self.flag("wrong", f"{where}: effect recorded {journal[1]['entry']}, expected {wanted}")
        if found["status"] == "completed" and found.get("output") != int(value_read or 0) + node.amount:
            self.flag("wrong", f"{where}: returned {found.get('output')}, read {value_read} + {node.amount}")
        if found["status"] == "failed":
            self.flag("wrong", f"{where}: failed: {found.get('failure')}")

    # ------------------------------------------------------------------ the ledger

    def check_ledger(self) -> dict[str, Any]:
        db = sqlite3.connect(f"file:{self.data.ledger}?mode=ro", uri=True, timeout=60)
        try:
            applied = {key: (value, name) for key, value, name in db.execute("SELECT key, value, name FROM applied")}
            runs = db.execute("SELECT invocation_id, step_index, attempt, pid, at_ms FROM executions").fetchall()
            sleeps = db.execute("SELECT invocation_id, step_index, wake_at_ms, woke_at_ms, pid FROM sleeps").fetchall()
            effects = db.execute("SELECT object_key, tag, value_read, amount FROM counter_effects").fetchall()
            awakeables = db.execute("SELECT count(*) FROM awakeables").fetchone()[0]
        finally:
            db.close()
        executions = Tally(f"{inv}:{idx}" for inv, idx, _, _, _ in runs)
        for key, (value, where, _) in sorted(self.journaled_runs.items()):
            if key not in applied:
                self.flag("lost", f"{where}: journaled step {key} was never applied")
            elif applied[key][0] != value:
                self.flag("wrong", f"{where}: step {key} applied {applied[key][0]!r}, journaled {value!r}")
        for key in sorted(set(applied) - set(self.journaled_runs)):
            self.flag("duplicated", f"step {key} ({applied[key][1]}) was applied but is in no journal checked")
        re_executed = {key: n for key, n in executions.items() if n > 1}
        # At least once, but a committed step never runs again: a later attempt replays its result.
        by_attempt = Tally((f"{inv}:{idx}", attempt) for inv, idx, attempt, _, _ in runs)
        for (key, attempt), n in sorted(by_attempt.items()):
            journaled = self.journaled_runs.get(key)
            if journaled is None:
                continue
            if attempt > journaled[2]:
                self.flag(
                    "duplicated",
                    f"{journaled[1]}: step {key} was journaled by attempt {journaled[2]}, "
                    f"yet attempt {attempt} ran it again",
                )
            elif attempt == journaled[2] and n > 1:
                self.flag("duplicated", f"{journaled[1]}: attempt {attempt} ran step {key} {n} times")
        early = 0
        late = sorted(woke_at - wake_at for _, _, wake_at, woke_at, _ in sleeps)
        for invocation_id, index, wake_at, woke_at, pid in sleeps:
            if woke_at < wake_at:
                early += 1
                self.flag(
                    "early-sleep",
                    f"{invocation_id}: the step at {index} ran at {woke_at}, {wake_at - woke_at} ms before "
                    f"the sleep's wake_at {wake_at} (pid {pid})",
                )
            due = self.sleeps.get((invocation_id, index))
            if due is not None and due != wake_at:
                self.flag("wrong", f"{invocation_id}: sleep before {index} journaled {due}, step saw {wake_at}")
        return {
            "applied": len(applied),
            "executions": sum(executions.values()),
            "re_executed": len(re_executed),
            "re_executions": sum(n - 1 for n in re_executed.values()),
            "sleeps_checked": len(sleeps),
            "early_sleeps": early,
            "sleep_lateness_ms": {
                "p50": late[len(late) // 2] if late else None,
                "p99": late[len(late) * 99 // 100] if late else None,
                "max": late[-1] if late else None,
            },
            "awakeables_handed_out": awakeables,
            "counter_effects": effects,
        }

    async def check_counters(self, effects: list[tuple[str, str, int, int]]) -> dict[str, Any]:
        amounts = counter_amounts([sub.program for sub in self.data.submissions if sub.invocation_id])
        by_key: dict[str, list[tuple[int, int, str]]] = {}
        for object_key, tag, value_read, amount in effects:
            by_key.setdefault(object_key, []).append((value_read, amount, tag))
        figures: dict[str, Any] = {}
        for key in sorted(set(amounts) | set(by_key)):
            want = sum(amounts.get(key, []))
            rows = sorted(by_key.get(key, []))
            status, found = await self.get(f"/objects/Counter/{key}")
            state = found.get("state", {}).get("n") if status == 200 else None
            figures[key] = {"expected": want, "state": state, "adds": len(rows)}
            if state != want:
                category = "lost" if (state or 0) < want else "duplicated"
                self.flag(category, f"Counter/{key} holds {state}, expected {want} (from {len(amounts[key])} adds)")
            added = sum(a for _, a, _ in rows)
            if len(rows) != len(amounts.get(key, [])) or added != want:
                self.flag(
                    "wrong",
                    f"Counter/{key}: the ledger has {len(rows)} adds summing to {added}, "
                    f"expected {len(amounts.get(key, []))} summing to {want}",
                )
            running = 0
            for value_read, amount, tag in rows:
                if value_read != running:
                    self.flag("wrong", f"Counter/{key}: {tag} read {value_read}, the adds before it sum to {running}")
                    break
                running += amount
        return figures

    async def count_proxy_invocations(self) -> int | None:
        if self.data.proxy_dsn is not None:
            try:
                conn = await asyncpg.connect(self.data.proxy_dsn)
                try:
                    count: int = await conn.fetchval("SELECT count(*) FROM invocations")
                    return count
                finally:
                    await conn.close()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                return None
        return await asyncio.to_thread(self._count_sqlite_invocations)

    def _count_sqlite_invocations(self) -> int | None:
        try:
            db = sqlite3.connect(f"file:{self.data.proxy_db}?mode=ro", uri=True, timeout=60)
            try:
                count: int = db.execute("SELECT count(*) FROM invocations").fetchone()[0]
                return count
            finally:
                db.close()
        except sqlite3.Error:
            return None


async def check(data: RunData) -> Report:
    async with httpx.AsyncClient() as client:
        checker = _Checker(data, client)
        checker.check_answers()
        await checker.walk()
        ledger = checker.check_ledger()
        counters = await checker.check_counters(ledger.pop("counter_effects"))
        stored = await checker.count_proxy_invocations()
    if stored is not None and stored != len(checker.nodes):
        checker.flag("duplicated", f"the proxy holds {stored} invocations, the programs imply {len(checker.nodes)}")
    faults = data.faults
    kills = sum(1 for f in faults if f.kind == "kill")
    integrity = [f.integrity for f in faults if f.integrity is not None]
    for fault in faults:
        if fault.integrity is not None and fault.integrity != "ok":
            checker.flag("integrity", f"integrity_check after the proxy kill at {fault.at_s:.1f}s: {fault.integrity}")
        if fault.error is not None:
            checker.flag("restart", f"{fault.kind} of {fault.target} at {fault.at_s:.1f}s: {fault.error}")
    if kills < data.kills_wanted:
        checker.flag("vacuous", f"only {kills} kills were injected, fewer than the {data.kills_wanted} wanted")
    recovery = _recovery_times(faults, data.ingress_successes)
    subs = data.submissions
    first = [s.answers[0] for s in subs if s.answers]
    figures: dict[str, Any] = {
        "seed": data.seed,
        "duration_s": round(data.duration_s, 2),
        "invocations": {
            "submitted": len(subs),
            "acknowledged": sum(1 for s in subs if s.invocation_id),
            "answered": len(first),
            "completed": sum(1 for a in first if a.status == 200),
            "failed_terminal": sum(1 for a in first if a.status != 200),
            "planned_failures": sum(1 for s in subs if s.program["fail"] is not None),
        },
        "tree": {
            "invocations": len(checker.nodes),
            "statuses": dict(checker.statuses),
            "run_steps": len(checker.journaled_runs),
            "sleeps": ledger["sleeps_checked"],
            "sleep_lateness_ms": ledger["sleep_lateness_ms"],
            "awakeables": ledger["awakeables_handed_out"],
            "awakeables_resolved": data.resolved_awakeables,
            "counter_adds": checker.tally["counter_adds"],
            "proxy_invocations": stored,
            "attempts": dict(sorted(checker.attempt_outcomes.items())),
            "max_attempt": checker.max_attempt,
        },
        "faults": {
            "total": len(faults),
            "kills": kills,
            "kills_wanted": data.kills_wanted,
            "by_kind": dict(sorted(Tally(f"{f.kind}:{f.target.split('-')[0]}" for f in faults).items())),
            "log": [f.as_json() for f in faults],
        },
        "lost": checker.tally["lost"],
        "duplicated": checker.tally["duplicated"],
        "wrong": checker.tally["wrong"] + checker.tally["early-sleep"],
        "stuck": checker.tally["stuck"],
        "re_executed": ledger["re_executed"],
        "re_executions": ledger["re_executions"],
        "step_executions": ledger["executions"],
        "fenced_writes": data.proxy_log.count(FENCED_LOG_LINE),
        "client_retries": sum(s.failed_tries for s in subs),
        "recovery_ms": recovery,
        "integrity": {"checks": len(integrity), "ok": sum(1 for r in integrity if r == "ok")},
        "counters": counters,
        **data.extra,
    }
    return Report(figures=figures, violations=checker.violations)


# ---------------------------------------------------------------------- helpers


def _outcome_problem(expected: Outcome, status: int, body: Any) -> str | None:
    if expected.completed:
        if status == 200 and body == expected.result:
            return None
        return f"{status} {body!r}, expected 200 {expected.result!r}"
    wanted = {"code": expected.code, "message": expected.message}
    if status == expected.code and body == wanted:
        return None
    return f"{status} {body!r}, expected {expected.code} {wanted!r}"


def _stored_outcome_problem(expected: Outcome, found: dict[str, Any]) -> str | None:
    if expected.completed:
        if found["status"] == "completed" and found.get("output") == expected.result:
            return None
        return f"{found['status']} {found.get('output')!r} {found.get('failure')}, expected {expected.result!r}"
    wanted = {"code": expected.code, "message": expected.message}
    if found["status"] == "failed" and found.get("failure") == wanted:
        return None
    return f"{found['status']} {found.get('output')!r} {found.get('failure')}, expected failure {wanted}"


def _completion_problem(expected: Outcome, entry: dict[str, Any]) -> str | None:
    failure = entry.get("failure")
    if expected.completed:
        if failure is None and canonical(entry.get("result")) == canonical(expected.result):
            return None
    elif failure == {"code": expected.code, "message": expected.message}:
        return None
    return f"{entry.get('result')!r} / {failure}, expected {expected}"


def _now_before(journal: list[dict[str, Any]], index: int) -> int:
    previous = journal[index - 1]["entry"] if index > 0 else {}
    now_ms: int = previous.get("now_ms", 0)
    return now_ms


def _journal_brief(journal: list[dict[str, Any]]) -> str:
    return ", ".join(
        f"{e['index']}:{e['kind']} {e['name']}@{e['attempt']}{'' if e.get('completed', True) else ' (open)'}"
        for e in journal
    )


def _recovery_times(faults: list[Fault], successes: list[float]) -> dict[str, Any]:
    """Per proxy kill: from the restart to the first useful ingress answer before the next proxy kill."""
    proxy_kills = sorted((f for f in faults if f.kind == "kill" and f.target == "proxy"), key=lambda f: f.at_s)
    times = sorted(successes)
    samples: list[float] = []
    for n, fault in enumerate(proxy_kills):
        if fault.restarted_at_s is None:
            continue
        until = proxy_kills[n + 1].at_s if n + 1 < len(proxy_kills) else float("inf")
        after = next((t for t in times if fault.restarted_at_s < t < until), None)
        if after is not None:
            fault.recovery_s = round(after - fault.restarted_at_s, 3)
            samples.append(after - fault.restarted_at_s)
    return {
        "samples": len(samples),
        "unmeasured": len(proxy_kills) - len(samples),
        "p50": round(statistics.median(samples) * 1000) if samples else None,
        "max": round(max(samples) * 1000) if samples else None,
    }
