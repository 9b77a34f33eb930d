"""The journal store against a model made of plain dicts (a hypothesis state machine).

Every rule calls one verb of the store (``proxy.store.base.JournalStore``) and
the same verb of the model, and checks that both answered the same; after every
step the whole store is read back and compared with the model:

* each journal is contiguous from 0 and equal to the model's; what was observed
  before is a prefix of what is there now (an index is written once, a fenced or
  duplicate append never lands, a conflicting one never overwrites);
* each invocation's status, attempt, output, failure, waiting set and completions
  are the model's; an ended invocation never changes again; attempts only grow;
* the start timer (``index -1``) exists exactly while ``scheduled`` or ``backing_off``;
  the timers, the runnable list and the idempotency keys are the model's.

"restart" closes the store and opens a new one on the same file, through the
store's own API: nothing acknowledged may be lost or changed by it.

The store is async and the machine is sync: each example owns a private event
loop (``asyncio.Runner``) and a SQLite file in its own temporary directory, both
closed in ``teardown``.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import hypothesis.strategies as st
import pytest
from hypothesis import event
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from handler_sdk.protocol import COMPLETABLE_KINDS
from proxy.store.base import (
    TERMINAL_STATUSES,
    AppendOutcome,
    AttemptRow,
    CompleteEntryOutcome,
    CompletionRow,
    Effects,
    IdempotencyConflict,
    Invocation,
    InvocationStatus,
    JournalRow,
    NewInvocation,
    StoredFailure,
    SuspendOutcome,
    TimerRow,
)
from proxy.store.sqlite import SQLiteStore

T = TypeVar("T")

SERVICE = "svc"
Epoch = Literal["current", "stale", "future"]
IndexChoice = Literal["next", "duplicate_same", "duplicate_different", "gap", "past"]
#: The kinds appended by the machine; the store does not parse entries, only kinds matter to it.
KINDS = ("run", "sleep", "awakeable", "call", "send")

#: Weighted towards the choices that make progress, so that the journals grow and the ends happen.
EPOCHS = st.sampled_from(["current", "current", "current", "stale", "future"])
INDEX_CHOICES = st.sampled_from(["next", "next", "next", "duplicate_same", "duplicate_different", "gap", "past"])
#: Which invocation a rule acts on: an index into a list, preferring those the rule can act on when ``favour``.
#: (Favouring is the simplest draw, so that hypothesis's many "all zeros" draws still make progress.)
PICK = st.tuples(st.booleans().map(lambda b: not b), st.integers(min_value=0, max_value=1_000))
FAILURES = st.builds(
    StoredFailure, code=st.sampled_from([400, 409, 500]), message=st.sampled_from(["", "boom", "é\u2028"])
)


@dataclass
class ModelInvocation:
    id: str
    handler: str
    key: str | None
    idempotency_key: str | None
    input: bytes
    status: InvocationStatus
    parent: tuple[str, int] | None = None
    parent_awaits: bool = False
    attempt: int = 0
    #: (kind, name, attempt, entry) at each index.
    journal: list[tuple[str, str, int, bytes]] = field(default_factory=list)
    #: index -> (result, failure)
    completions: dict[int, tuple[bytes | None, StoredFailure | None]] = field(default_factory=dict)
    waiting_on: list[int] | None = None
    output: bytes | None = None
    failure: StoredFailure | None = None
    last_failure: StoredFailure | None = None
    next_run_at_ms: int | None = None


@dataclass
class Snapshot:
    invocations: dict[str, tuple[Invocation, list[JournalRow], list[CompletionRow], list[AttemptRow]]]
    timers: list[TimerRow]
    runnable: list[str]
    idempotency: dict[tuple[str, str | None, str], str | None]


class StoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="store-model-"))
        self.path = self.dir / "journal.db"
        self.runner = asyncio.Runner()
        self.store = self._open()
        self.now = 1_000
        self.invocations: dict[str, ModelInvocation] = {}
        #: (handler, key, idempotency key) -> invocation id
        self.idempotency: dict[tuple[str, str | None, str], str] = {}
        #: (invocation id, index) -> due time
        self.timers: dict[tuple[str, int], int] = {}
        #: What the store was seen to hold: journals (to check they only grow), attempts, ended invocations.
        self.seen_journals: dict[str, list[tuple[str, str, int, bytes]]] = {}
        self.seen_attempts: dict[str, int] = {}
        self.seen_ended: dict[str, tuple[str, bytes | None, StoredFailure | None]] = {}
        #: Steps run, and the step of the last restart or abandon_running: those two rules take no argument,
        #: so hypothesis would draw them most often; they wait a few steps between them instead.
        self.steps = 0
        self.last_disruption = 0

    # ------------------------------------------------------------------ plumbing

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.runner.run(coro)

    def _open(self) -> SQLiteStore:
        # NORMAL: a clean close (all a restart does here) loses nothing, and it spares an fsync per step.
        store = SQLiteStore(self.path, synchronous="NORMAL")
        self._run(store.open())
        return store

    def teardown(self) -> None:
        try:
            self._run(self.store.close())
        finally:
            self.runner.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    def _tick(self) -> int:
        self.now += 7
        return self.now

    def _pick(self, pick: tuple[bool, int], *favoured: InvocationStatus) -> ModelInvocation:
        """An invocation: one whose status is in ``favoured`` when asked to favour them and there is one."""
        favour, number = pick
        ids = sorted(self.invocations)
        if favour:
            ids = [i for i in ids if self.invocations[i].status in favoured] or ids
        return self.invocations[ids[number % len(ids)]]

    def _attempt_for(self, inv: ModelInvocation, epoch: Epoch) -> int:
        if epoch == "current":
            return inv.attempt
        if epoch == "stale":
            return inv.attempt - 1
        return inv.attempt + 1

    def _fenced(self, inv: ModelInvocation, attempt: int) -> bool:
        return inv.status != "running" or inv.attempt != attempt

    # ------------------------------------------------------------------ model helpers

    def _add_completion(
        self, inv_id: str, index: int, result: bytes | None, failure: StoredFailure | None, woken: list[str]
    ) -> bool:
        """The model of ``add_completion``: once per existing entry; wakes an invocation suspended on it."""
        inv = self.invocations[inv_id]
        if index >= len(inv.journal) or index in inv.completions:
            return False
        inv.completions[index] = (None if failure is not None else result, failure)
        if inv.status == "suspended" and inv.waiting_on is not None and index in inv.waiting_on:
            inv.status = "pending"
            inv.waiting_on = None
            woken.append(inv_id)
        return True

    def _end(self, inv: ModelInvocation, output: bytes | None, failure: StoredFailure | None, woken: list[str]) -> None:
        for timer in [t for t in self.timers if t[0] == inv.id]:
            del self.timers[timer]
        if inv.parent is not None and inv.parent_awaits:
            if self._add_completion(inv.parent[0], inv.parent[1], output, failure, woken):
                event(f"a callee's end completed its caller's entry{' and woke it' if woken else ''}")

    def _open_entries(self, inv: ModelInvocation) -> list[int]:
        """The indices of ``inv``'s completable entries that have no completion yet."""
        return [i for i, (kind, *_) in enumerate(inv.journal) if kind in COMPLETABLE_KINDS and i not in inv.completions]

    def _check_woken(self, effects: Effects, woken: list[str]) -> None:
        assert sorted(effects.woken) == sorted(woken), (effects, woken)

    # ------------------------------------------------------------------ rules: invocations

    @initialize(count=st.integers(min_value=1, max_value=3))
    def start(self, count: int) -> None:
        """A few invocations, one of them running: the rules then have something to work on."""
        for _ in range(count):
            self.create("a", None, None, b"1", None)
        self._claim(self.invocations["inv-000"])

    @rule(
        handler=st.sampled_from(["a", "b"]),
        key=st.sampled_from([None, "k"]),
        idempotency_key=st.sampled_from([None, "i1", "i2"]),
        value=st.sampled_from([b"1", b"2"]),
        delay=st.none() | st.integers(min_value=0, max_value=500),
    )
    def create(
        self, handler: str, key: str | None, idempotency_key: str | None, value: bytes, delay: int | None
    ) -> None:
        now = self._tick()
        new_id = f"inv-{len(self.invocations):03d}"
        run_at = None if delay is None else now + delay
        new = NewInvocation(
            id=new_id,
            service=SERVICE,
            handler=handler,
            input=value,
            deployment_id="dp",
            key=key,
            idempotency_key=idempotency_key,
            run_at_ms=run_at,
        )
        scope = None if idempotency_key is None else (handler, key, idempotency_key)
        existing = None if scope is None else self.idempotency.get(scope)
        if existing is not None and self.invocations[existing].input != value:
            with pytest.raises(IdempotencyConflict) as raised:
                self._run(self.store.create_invocation(new, now))
            assert raised.value.existing.id == existing
            return
        created = self._run(self.store.create_invocation(new, now))
        if existing is not None:
            assert not created.created
            assert created.invocation.id == existing
            return
        assert created.created and created.invocation.id == new_id
        self.invocations[new_id] = ModelInvocation(
            id=new_id,
            handler=handler,
            key=key,
            idempotency_key=idempotency_key,
            input=value,
            status="pending" if run_at is None else "scheduled",
            next_run_at_ms=run_at,
        )
        if run_at is not None:
            self.timers[(new_id, -1)] = run_at
        if scope is not None:
            self.idempotency[scope] = new_id

    @precondition(lambda self: self.invocations)
    @rule(pick=PICK)
    def claim(self, pick: tuple[bool, int]) -> None:
        self._claim(self._pick(pick, "pending", "backing_off"))

    def _claim(self, inv: ModelInvocation) -> None:
        claimed = self._run(self.store.claim(inv.id, "http://h", self._tick()))
        if inv.status not in ("pending", "backing_off"):
            assert claimed is None, (inv.status, claimed)
            return
        assert claimed is not None, inv
        inv.status = "running"
        inv.attempt += 1
        inv.waiting_on = None
        inv.next_run_at_ms = None
        self.timers.pop((inv.id, -1), None)
        assert claimed.invocation.attempt == inv.attempt
        assert claimed.invocation.status == "running"
        assert [(r.kind, r.name, r.attempt, r.entry) for r in claimed.journal] == inv.journal
        assert [r.index for r in claimed.journal] == list(range(len(inv.journal)))
        assert {c.index: (c.result, c.failure) for c in claimed.completions} == inv.completions

    @precondition(lambda self: self.invocations)
    @rule(
        pick=PICK,
        epoch=EPOCHS,
        index_choice=INDEX_CHOICES,
        kind=st.sampled_from(KINDS),
        name=st.sampled_from(["", "step"]),
        nonce=st.integers(min_value=0, max_value=3),
        offset=st.integers(min_value=0, max_value=100),
        sleep_ms=st.integers(min_value=0, max_value=500),
    )
    def append(
        self,
        pick: tuple[bool, int],
        epoch: Epoch,
        index_choice: IndexChoice,
        kind: str,
        name: str,
        nonce: int,
        offset: int,
        sleep_ms: int,
    ) -> None:
        """An append by any attempt (current, stale, future) at any index (next, taken, past the end)."""
        inv = self._pick(pick, "running")
        self._append(inv, self._attempt_for(inv, epoch), index_choice, kind, name, nonce, offset, sleep_ms)

    @precondition(lambda self: any(inv.status == "running" for inv in self.invocations.values()))
    @rule(pick=PICK, kind=st.sampled_from(KINDS), nonce=st.integers(min_value=0, max_value=3), resend=st.booleans())
    def append_step(self, pick: tuple[bool, int], kind: str, nonce: int, resend: bool) -> None:
        """What a healthy attempt does most: append its next entry (so that journals grow); with
        ``resend``, the same append again, as when its ack was lost: a duplicate, whose effects
        (callee, timer) do not happen twice."""
        inv = self._pick((True, pick[1]), "running")
        self._append(inv, inv.attempt, "next", kind, "", nonce, 0, 100)
        if resend:
            self._append(inv, inv.attempt, "duplicate_same", kind, "", nonce, len(inv.journal) - 1, 100)

    def _append(
        self,
        inv: ModelInvocation,
        attempt: int,
        index_choice: IndexChoice,
        kind: str,
        name: str,
        nonce: int,
        offset: int,
        sleep_ms: int,
    ) -> None:
        length = len(inv.journal)
        entry = b'{"n":%d}' % nonce
        index = length
        if index_choice == "gap":
            index = length + 1 + offset % 3
        elif index_choice != "next" and length:
            index = offset % length
            if index_choice == "duplicate_same":
                kind, name, _, entry = inv.journal[index]
            elif index_choice == "duplicate_different":
                stored_kind, name, _, stored_entry = inv.journal[index]
                kind, entry = stored_kind, stored_entry + b" "
        now = self._tick()
        timer_at = now + sleep_ms if kind == "sleep" else None
        child = None
        if kind in ("call", "send"):
            child = NewInvocation(
                id=f"{inv.id}.{index}",
                service=SERVICE,
                handler="a",
                input=b"0",
                deployment_id="dp",
                parent_awaits=kind == "call",
            )
        result = self._run(
            self.store.append(inv.id, attempt, index, kind, name, entry, now, child=child, timer_at_ms=timer_at)
        )
        expected: AppendOutcome
        if self._fenced(inv, attempt):
            expected = "fenced"
        elif index > length:
            expected = "gap"
        elif index == length:
            expected = "appended"
        else:
            expected = "duplicate" if inv.journal[index] == (kind, name, attempt, entry) else "conflict"
        assert result.outcome == expected, (result, expected, inv)
        event(f"append: {expected}")
        woken: list[str] = []
        if expected == "appended":
            inv.journal.append((kind, name, attempt, entry))
            if timer_at is not None:
                self.timers[(inv.id, index)] = timer_at
            if child is not None:
                self.invocations[child.id] = ModelInvocation(
                    id=child.id,
                    handler=child.handler,
                    key=None,
                    idempotency_key=None,
                    input=child.input,
                    status="pending",
                    parent=(inv.id, index),
                    parent_awaits=child.parent_awaits,
                )
                woken.append(child.id)
        self._check_woken(result.effects, woken)
        assert result.completion is None

    @precondition(lambda self: self.invocations)
    @rule(
        pick=PICK,
        epoch=EPOCHS,
        how=st.sampled_from(["suspend", "backoff", "complete", "fail"]),
        waiting_on=st.lists(st.integers(min_value=0, max_value=6), max_size=3),
        output=st.sampled_from([b"null", b'"ok"', b"[1,2]"]),
        failure=FAILURES,
        attempt_failure=st.none() | FAILURES,
        delay=st.integers(min_value=0, max_value=500),
    )
    def end_attempt(
        self,
        pick: tuple[bool, int],
        epoch: Epoch,
        how: Literal["suspend", "backoff", "complete", "fail"],
        waiting_on: list[int],
        output: bytes,
        failure: StoredFailure,
        attempt_failure: StoredFailure | None,
        delay: int,
    ) -> None:
        """An attempt (current, stale or future) ends: it suspends, backs off, completes or fails.

        One rule for the four, so that they are drawn no more often than an append."""
        inv = self._pick(pick, "running")
        attempt = self._attempt_for(inv, epoch)
        if how == "suspend":
            if pick[0] and self._open_entries(inv):
                waiting_on = self._open_entries(inv)  # what a handler does: wait for its open futures
            self._suspend(inv, attempt, waiting_on)
        elif how == "backoff":
            self._backoff(inv, attempt, failure, delay)
        elif how == "complete":
            self._complete(inv, attempt, output)
        else:
            self._fail(inv, attempt, failure, attempt_failure)

    def _complete(self, inv: ModelInvocation, attempt: int, output: bytes) -> None:
        effects = self._run(self.store.complete(inv.id, attempt, output, self._tick()))
        if self._fenced(inv, attempt):
            assert effects is None
            return
        assert effects is not None
        event("complete: completed")
        inv.status, inv.output = "completed", output
        woken: list[str] = []
        self._end(inv, output, None, woken)
        self._check_woken(effects, woken)
        assert [(e.invocation_id, e.output, e.failure) for e in effects.ended] == [(inv.id, output, None)]

    def _fail(
        self, inv: ModelInvocation, attempt: int, failure: StoredFailure, attempt_failure: StoredFailure | None
    ) -> None:
        effects = self._run(self.store.fail(inv.id, attempt, failure, self._tick(), attempt_failure=attempt_failure))
        if self._fenced(inv, attempt):
            assert effects is None
            return
        assert effects is not None
        event("fail: failed")
        inv.status, inv.failure = "failed", failure
        if attempt_failure is not None:
            inv.last_failure = attempt_failure
        woken: list[str] = []
        self._end(inv, None, failure, woken)
        self._check_woken(effects, woken)
        assert [(e.invocation_id, e.output, e.failure) for e in effects.ended] == [(inv.id, None, failure)]

    def _backoff(self, inv: ModelInvocation, attempt: int, failure: StoredFailure, delay: int) -> None:
        now = self._tick()
        done = self._run(self.store.backoff(inv.id, attempt, failure, now + delay, now))
        assert done == (not self._fenced(inv, attempt))
        if done:
            event("backoff: backing_off")
            inv.status, inv.last_failure, inv.next_run_at_ms = "backing_off", failure, now + delay
            self.timers[(inv.id, -1)] = now + delay

    def _suspend(self, inv: ModelInvocation, attempt: int, waiting_on: list[int]) -> None:
        outcome = self._run(self.store.suspend(inv.id, attempt, waiting_on, self._tick()))
        expected: SuspendOutcome
        if self._fenced(inv, attempt):
            expected = "fenced"
        elif not waiting_on or any(i in inv.completions for i in waiting_on):
            expected = "resume"
            inv.status = "pending"
        else:
            expected = "suspended"
            inv.status, inv.waiting_on = "suspended", sorted(set(waiting_on))
        assert outcome == expected, (outcome, expected, inv)
        event(f"suspend: {expected}")

    @precondition(lambda self: any(i.parent_awaits and i.status == "pending" for i in self.invocations.values()))
    @rule(pick=PICK, output=st.sampled_from([b"null", b'"ok"']), failure=st.none() | FAILURES)
    def run_callee(self, pick: tuple[bool, int], output: bytes, failure: StoredFailure | None) -> None:
        """A callee runs to its end in one attempt: its end completes its caller's call entry."""
        callees = sorted(i for i, inv in self.invocations.items() if inv.parent_awaits and inv.status == "pending")
        callee = self.invocations[callees[pick[1] % len(callees)]]
        self._claim(callee)
        assert callee.status == "running"
        if failure is None:
            self._complete(callee, callee.attempt, output)
        else:
            self._fail(callee, callee.attempt, failure, None)

    @precondition(lambda self: self.invocations)
    @rule(
        pick=PICK,
        offset=st.integers(min_value=0, max_value=100),
        kind=st.sampled_from([None, "sleep", "awakeable", "call", "run"]),
        result=st.sampled_from([None, b'"r"']),
        failure=st.none() | FAILURES,
    )
    def complete_entry(
        self, pick: tuple[bool, int], offset: int, kind: str | None, result: bytes | None, failure: StoredFailure | None
    ) -> None:
        inv = self._pick(pick, "suspended", "running")
        index = offset % (len(inv.journal) + 1)  # sometimes past the end
        if pick[0] and self._open_entries(inv):
            index = self._open_entries(inv)[offset % len(self._open_entries(inv))]
        if failure is not None:
            result = None
        outcome, effects = self._run(
            self.store.complete_entry(inv.id, index, self._tick(), result=result, failure=failure, kind=kind)
        )
        expected: CompleteEntryOutcome
        woken: list[str] = []
        stored_kind = inv.journal[index][0] if index < len(inv.journal) else None
        if stored_kind is not None:
            event(f"complete_entry on {stored_kind}")
        if stored_kind not in COMPLETABLE_KINDS or (kind is not None and kind != stored_kind):
            expected = "not_found"
        elif index in inv.completions:
            expected = "already_completed"
        else:
            expected = "completed"
            assert self._add_completion(inv.id, index, result, failure, woken)
        assert outcome == expected, (outcome, expected, inv)
        event(f"complete_entry: {expected}{' (woke it)' if woken else ''}")
        self._check_woken(effects, woken)

    @rule(pick=PICK, index=st.integers(min_value=-1, max_value=4))
    def fire_timer(self, pick: tuple[bool, int], index: int) -> None:
        """Fire an existing timer (when favoured), or whatever (invocation, index) is picked."""
        if pick[0] and self.timers:
            timers = sorted(self.timers)
            inv_id, index = timers[pick[1] % len(timers)]
        elif self.invocations:
            inv_id = self._pick(pick).id
        else:
            inv_id = "inv-none"
        effects = self._run(self.store.fire_timer(inv_id, index, self._tick()))
        woken: list[str] = []
        if self.timers.pop((inv_id, index), None) is not None:
            event(f"fire_timer: {'start' if index < 0 else 'sleep'}")
            inv = self.invocations[inv_id]
            if index < 0:
                if inv.status in ("scheduled", "backing_off"):
                    inv.status = "pending"
                    woken.append(inv_id)
            else:
                self._add_completion(inv_id, index, None, None, woken)
        self._check_woken(effects, woken)

    def _may_disrupt(self) -> bool:
        return self.steps - self.last_disruption >= 6

    @precondition(_may_disrupt)
    @rule()
    def abandon_running(self) -> None:
        self.last_disruption = self.steps
        count = self._run(self.store.abandon_running(self._tick()))
        running = [inv for inv in self.invocations.values() if inv.status == "running"]
        assert count == len(running)
        for inv in running:
            inv.status = "pending"

    @precondition(_may_disrupt)
    @rule()
    def restart(self) -> None:
        event("restart")
        self.last_disruption = self.steps
        self._run(self.store.close())
        self.store = self._open()

    # ------------------------------------------------------------------ invariants

    async def _snapshot(self) -> Snapshot:
        """Everything the invariant compares, read through the store's API (the reads run concurrently)."""
        store = self.store
        rows = await store.list_invocations(limit=10_000)

        async def details(inv_id: str) -> tuple[list[JournalRow], list[CompletionRow], list[AttemptRow]]:
            journal = await store.get_journal(inv_id)
            completions = await store.get_completions(inv_id, list(range(len(journal) + 2)))
            return journal, completions, await store.get_attempts(inv_id)

        per_invocation = await asyncio.gather(*(details(row.id) for row in rows))
        found = await asyncio.gather(
            *(store.find_by_idempotency_key(SERVICE, *scope) for scope in self.idempotency),
        )
        return Snapshot(
            invocations={row.id: (row, *more) for row, more in zip(rows, per_invocation, strict=True)},
            timers=await store.due_timers(2**62, 10_000),
            runnable=await store.list_runnable(),
            idempotency={scope: None if f is None else f.id for scope, f in zip(self.idempotency, found, strict=True)},
        )

    @invariant()
    def store_matches_model(self) -> None:
        self.steps += 1
        snapshot = self._run(self._snapshot())
        assert sorted(snapshot.invocations) == sorted(self.invocations)
        for row, journal, completions, attempts in snapshot.invocations.values():
            inv = self.invocations[row.id]
            assert (row.status, row.attempt, row.journal_len) == (inv.status, inv.attempt, len(inv.journal)), (
                row,
                inv,
            )
            assert (row.output, row.failure, row.last_failure) == (inv.output, inv.failure, inv.last_failure)
            assert row.waiting_on == (inv.waiting_on if inv.status == "suspended" else None), (row, inv)
            assert (row.parent_id, row.parent_index) == (inv.parent or (None, None))
            assert (row.handler, row.key, row.idempotency_key, row.input) == (
                inv.handler,
                inv.key,
                inv.idempotency_key,
                inv.input,
            )
            # The start timer exists exactly while the invocation waits for it.
            if inv.status in ("scheduled", "backing_off"):
                assert row.next_run_at_ms == self.timers[(inv.id, -1)]
            else:
                assert (inv.id, -1) not in self.timers
            # Attempts only grow; an ended invocation never changes again.
            assert row.attempt >= self.seen_attempts.get(row.id, 0)
            self.seen_attempts[row.id] = row.attempt
            if row.id in self.seen_ended:
                assert (row.status, row.output, row.failure) == self.seen_ended[row.id], row
            elif row.status in TERMINAL_STATUSES:
                self.seen_ended[row.id] = (row.status, row.output, row.failure)

            assert [r.index for r in journal] == list(range(len(journal))), "the journal has a hole"
            entries = [(r.kind, r.name, r.attempt, r.entry) for r in journal]
            assert entries == inv.journal, (entries, inv.journal)
            seen = self.seen_journals.get(row.id, [])
            assert entries[: len(seen)] == seen, "an entry observed earlier changed"
            self.seen_journals[row.id] = entries
            assert {c.index: (c.result, c.failure) for c in completions} == inv.completions

            assert [a.attempt for a in attempts] == list(range(1, inv.attempt + 1))
            assert all(a.ended_at_ms is not None for a in attempts[:-1]), "an older attempt never ended"
            if attempts:
                assert (attempts[-1].ended_at_ms is None) == (inv.status == "running")

        assert {(t.invocation_id, t.index): t.due_at_ms for t in snapshot.timers} == self.timers
        assert [t.due_at_ms for t in snapshot.timers] == sorted(t.due_at_ms for t in snapshot.timers)
        assert sorted(snapshot.runnable) == sorted(i for i, inv in self.invocations.items() if inv.status == "pending")
        # One idempotency key, one invocation.
        assert snapshot.idempotency == self.idempotency


def test_store_agrees_with_its_model() -> None:
    """Runs under the loaded hypothesis profile (``tests/properties/conftest.py``)."""
    run_state_machine_as_test(StoreMachine)
