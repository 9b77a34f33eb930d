"""Seeded random handler programs for the chaos suite, and what each of them must produce.

A program is JSON that ``tests.chaos.app`` interprets, one op after another::

    {"tag": "chaos-7-12", "ops": [{"op": "step"}, {"op": "sleep", "ms": 120}, ...], "fail": null}

=============  ======================================================  ==========================
op             what the interpreter does                               journal entries (names)
=============  ======================================================  ==========================
``step``       ``ctx.run`` a step that writes the ledger               run ``step-k``
``sleep``      ``ctx.now``, ``ctx.sleep_until(now + ms)``, then a      now ``now-k``, sleep
               step that records when it woke                          ``sleep-k``, run ``woke-k``
``call``       ``ctx.call`` the interpreter with a child program;      call ``call-k``
               a child that fails is caught
``send``       ``ctx.send`` the interpreter a child program            send ``send-k``
``add``        call (or send) ``Counter/{key}/add`` with an amount     call|send ``add-k``
``awakeable``  ``ctx.awakeable``, hand its id out through a step       awakeable ``awk-k``,
               (the ledger), await the value the driver resolves       run ``hand-out-k``
``terminal``   a step raises ``TerminalError``; the program catches    run ``terminal-k``
=============  ======================================================  ==========================

``k`` is the op's position in the program. Every value a program sees derives
from its tag and the op's position (step results, awakeable values, a child's
result), so the final result, a digest of those values, is known in advance:
``expected_outcome`` computes it. A program with ``fail`` set ends with a
``TerminalError`` of that status after running its ops.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from typing import Any, Literal, NotRequired, TypedDict

#: The status of a program that fails on purpose, and of a step that raises ``TerminalError``.
PLANNED_FAILURE_CODE = 418
TERMINAL_STEP_CODE = 460
COUNTER_KEYS = ("alpha", "beta", "gamma", "delta")


class Op(TypedDict):
    op: Literal["step", "sleep", "call", "send", "add", "awakeable", "terminal"]
    ms: NotRequired[int]
    program: NotRequired[Program]
    key: NotRequired[str]
    amount: NotRequired[int]
    send: NotRequired[bool]


class Program(TypedDict):
    tag: str
    ops: list[Op]
    fail: int | None


class AddRequest(TypedDict):
    """The input of ``Counter/{key}/add``."""

    amount: int
    tag: str


@dataclasses.dataclass(frozen=True, slots=True)
class Sizes:
    """How big programs get. The CI run keeps them small: few ops, short sleeps."""

    min_ops: int = 2
    max_ops: int = 5
    child_min_ops: int = 1
    child_max_ops: int = 3
    max_depth: int = 2
    sleep_ms: tuple[int, int] = (50, 400)
    #: Chance that a root program, or a child, ends with a planned ``TerminalError``.
    root_fail_rate: float = 0.05
    child_fail_rate: float = 0.15
    counter_keys: tuple[str, ...] = COUNTER_KEYS


_WEIGHTS: dict[str, int] = {"step": 30, "sleep": 14, "call": 10, "send": 7, "add": 13, "awakeable": 12, "terminal": 9}


def root_tag(seed: int, i: int) -> str:
    """The tag of root program ``i``; it doubles as the invocation's idempotency key."""
    return f"chaos-{seed}-{i}"


def generate(seed: int, i: int, sizes: Sizes = Sizes()) -> Program:
    """Root program ``i`` of run ``seed``: the same program for the same (seed, i)."""
    rng = random.Random(f"{seed}/{i}")
    return _program(rng, root_tag(seed, i), 0, sizes)


def _program(rng: random.Random, tag: str, depth: int, sizes: Sizes) -> Program:
    low, high = (sizes.min_ops, sizes.max_ops) if depth == 0 else (sizes.child_min_ops, sizes.child_max_ops)
    kinds = [k for k in _WEIGHTS if depth < sizes.max_depth or k not in ("call", "send")]
    weights = [_WEIGHTS[k] for k in kinds]
    ops: list[Op] = []
    for k in range(rng.randint(low, high)):
        kind = rng.choices(kinds, weights)[0]
        match kind:
            case "sleep":
                ops.append({"op": "sleep", "ms": rng.randint(*sizes.sleep_ms)})
            case "call" | "send":
                child = _program(rng, f"{tag}/{k}", depth + 1, sizes)
                ops.append({"op": kind, "program": child})
            case "add":
                key = rng.choice(sizes.counter_keys)
                ops.append({"op": "add", "key": key, "amount": rng.randint(1, 9), "send": rng.random() < 0.3})
            case "step":
                ops.append({"op": "step"})
            case "awakeable":
                ops.append({"op": "awakeable"})
            case _:
                ops.append({"op": "terminal"})
    rate = sizes.root_fail_rate if depth == 0 else sizes.child_fail_rate
    return {"tag": tag, "ops": ops, "fail": PLANNED_FAILURE_CODE if rng.random() < rate else None}


# ---------------------------------------------------------------------- values


def _h(*parts: object) -> str:
    return hashlib.sha256("#".join(str(p) for p in parts).encode()).hexdigest()[:12]


def step_value(tag: str, k: int, name: str) -> str:
    """What the step ``name`` of op ``k`` returns (the same on every execution)."""
    return f"{name}:{_h(tag, k, name)}"


def awakeable_value(tag: str, k: int) -> str:
    """The value the driver resolves the awakeable of op ``k`` with."""
    return f"awk:{_h('awakeable', tag, k)}"


def terminal_message(tag: str, k: int) -> str:
    return f"terminal step {tag}#{k}"


def planned_failure_message(tag: str) -> str:
    return f"planned failure of {tag}"


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def digest(contributions: list[str]) -> str:
    return hashlib.sha256("|".join(contributions).encode()).hexdigest()[:32]


def result_of(tag: str, contributions: list[str]) -> dict[str, Any]:
    """A program's result from what its ops contributed."""
    return {"tag": tag, "ops": len(contributions), "digest": digest(contributions)}


def failed_contribution(code: int, message: str) -> str:
    return f"failed:{code}:{message}"


def caught_contribution(code: int, message: str) -> str:
    return f"caught:{code}:{message}"


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    """How an invocation must end: ``result`` when it completes, else ``code`` and ``message``."""

    completed: bool
    result: Any = None
    code: int = 0
    message: str = ""


def expected_outcome(program: Program) -> Outcome:
    """The outcome the interpreter must reach for ``program``, whatever failed on the way."""
    tag = program["tag"]
    contributions: list[str] = []
    for k, op in enumerate(program["ops"]):
        match op["op"]:
            case "step":
                contributions.append(step_value(tag, k, f"step-{k}"))
            case "sleep":
                contributions.append(step_value(tag, k, f"woke-{k}"))
            case "call":
                child = expected_outcome(op["program"])
                if child.completed:
                    contributions.append(canonical(child.result))
                else:
                    contributions.append(failed_contribution(child.code, child.message))
            case "send":
                contributions.append("sent")
            case "add":
                contributions.append("added")
            case "awakeable":
                contributions.append(awakeable_value(tag, k))
            case "terminal":
                contributions.append(caught_contribution(TERMINAL_STEP_CODE, terminal_message(tag, k)))
    if program["fail"] is not None:
        return Outcome(completed=False, code=program["fail"], message=planned_failure_message(tag))
    return Outcome(completed=True, result=result_of(tag, contributions))


# ---------------------------------------------------------------------- journal layout


@dataclasses.dataclass(frozen=True, slots=True)
class Expected:
    """One journal entry a program must write, with the op it belongs to."""

    kind: str
    name: str
    k: int
    op: Op


def layout(program: Program) -> list[Expected]:
    """The journal the interpreter writes for ``program``, entry by entry."""
    entries: list[Expected] = []
    for k, op in enumerate(program["ops"]):

        def add(kind: str, name: str, op: Op = op, k: int = k) -> None:
            entries.append(Expected(kind, name, k, op))

        match op["op"]:
            case "step":
                add("run", f"step-{k}")
            case "sleep":
                add("now", f"now-{k}")
                add("sleep", f"sleep-{k}")
                add("run", f"woke-{k}")
            case "call":
                add("call", f"call-{k}")
            case "send":
                add("send", f"send-{k}")
            case "add":
                add("send" if op.get("send") else "call", f"add-{k}")
            case "awakeable":
                add("awakeable", f"awk-{k}")
                add("run", f"hand-out-{k}")
            case "terminal":
                add("run", f"terminal-{k}")
    return entries


#: The journal of every ``Counter/{key}/add``.
COUNTER_LAYOUT = [("get_state", "n"), ("run", "effect"), ("set_state", "n")]


def counter_effect_value(object_key: str, value_read: int, amount: int) -> str:
    return f"{object_key}:{value_read}+{amount}"


def walk(program: Program) -> list[Program]:
    """``program`` and every program below it (called or sent), depth first."""
    found = [program]
    for op in program["ops"]:
        if "program" in op:
            found.extend(walk(op["program"]))
    return found


def counter_amounts(programs: list[Program]) -> dict[str, list[int]]:
    """The amounts each counter key must receive from ``programs`` and their descendants."""
    amounts: dict[str, list[int]] = {}
    for root in programs:
        for program in walk(root):
            for op in program["ops"]:
                if op["op"] == "add":
                    amounts.setdefault(op["key"], []).append(op["amount"])
    return amounts
