"""The journal store: the one interface every storage backend implements.

The store speaks domain verbs; callers never build SQL. Every verb that writes
is one transaction, and every write made on behalf of an attempt is fenced: it
lands only if the invocation is ``running`` and its current attempt number is
the one the caller holds. An attempt that was abandoned (timed out, its handler
crashed, the proxy restarted) can therefore never write again.

Invocation lifecycle::

    scheduled ──fire_timer──▶ pending ──claim──▶ running ──complete──▶ completed
                                 ▲                  │  └────fail─────▶ failed
                                 │                  ├──backoff──▶ backing_off ──fire_timer──▶ pending
                                 │                  ├──suspend──▶ suspended ──(a completion it waits on)──▶ pending
                                 │                  └──pause────▶ paused ──resume (operator)──▶ pending
                                 └──── abandon_running (proxy start) ◀── running

``paused`` is where an invocation whose retry policy ran out waits for an
operator (``on_max_attempts = "pause"``). It has not ended: its callers keep
waiting, it keeps its key's lock, and ``last_failure`` says why it stopped.
``resume`` makes it ``pending`` with a fresh retry budget (the policy counts the
attempts since ``attempts_at_resume``, which a suspension also moves on, so only
consecutive failed attempts count); ``cancel`` does the same with the
cancellation flag, so its compensations run; ``kill`` ends it.

Completable journal entries (sleep, call, awakeable) get at most one
completion each, written once: by a timer, by the callee's end, or by the
outside world. A completion that an invocation is suspended on makes it
``pending`` in the same transaction, and the verb reports it in ``Effects.woken``.

Keyed invocations (virtual objects and workflows) carry a ``key``. An
*exclusive* one holds the lock of its (service, key) from the moment it
becomes runnable until it ends, suspensions and backoffs included; while
another holds it, it waits as ``queued``, and the lock passes to the queued
invocations one at a time, in arrival order. State (per service and key) and
durable promises (per workflow key) change only in the transaction that
commits the journal entry that changed them.

Timers live in one table indexed by due time: ``(invocation_id, index)`` with
``index = -1`` for "start the invocation" (a delayed start or a retry backoff)
and ``index >= 0`` for a sleep entry.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Collection, Sequence
from typing import ClassVar, Literal

import msgspec

InvocationStatus = Literal[
    "scheduled", "queued", "pending", "running", "suspended", "backing_off", "paused", "completed", "failed"
]
ACTIVE_STATUSES: tuple[InvocationStatus, ...] = (
    "scheduled",
    "queued",
    "pending",
    "running",
    "suspended",
    "backing_off",
    "paused",
)
TERMINAL_STATUSES: tuple[InvocationStatus, ...] = ("completed", "failed")


class StoredFailure(msgspec.Struct, frozen=True, kw_only=True):
    code: int
    message: str


class NewInvocation(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    service: str
    handler: str
    input: bytes
    deployment_id: str
    key: str | None = None
    idempotency_key: str | None = None
    headers: dict[str, str] = {}
    #: The invocation whose call or send (at ``parent_index``) started this one.
    parent_id: str | None = None
    parent_index: int | None = None
    #: True for a call: this invocation's end becomes the completion of the parent's entry.
    parent_awaits: bool = False
    #: Start no earlier than this (a delayed send): the invocation is ``scheduled`` with a timer.
    run_at_ms: int | None = None
    #: Takes the lock of (service, key) before it runs; ``queued`` while another holds it.
    exclusive: bool = False


class Invocation(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    service: str
    handler: str
    key: str | None
    status: InvocationStatus
    input: bytes
    headers: dict[str, str]
    deployment_id: str
    idempotency_key: str | None
    attempt: int
    journal_len: int
    output: bytes | None
    failure: StoredFailure | None
    last_failure: StoredFailure | None
    next_run_at_ms: int | None
    created_at_ms: int
    modified_at_ms: int
    completed_at_ms: int | None
    parent_id: str | None = None
    parent_index: int | None = None
    parent_awaits: bool = False
    cancel_requested: bool = False
    #: While ``suspended``: the journal indices whose completion wakes it.
    waiting_on: list[int] | None = None
    exclusive: bool = False
    #: The value of ``attempt`` when its retry budget last started again: when an attempt ended
    #: suspended (it made progress), or when it was resumed (or cancelled) out of ``paused``.
    #: The retry policy counts ``attempt - attempts_at_resume``: consecutive failed attempts.
    attempts_at_resume: int = 0

    @property
    def attempts_since_resume(self) -> int:
        """The attempts the retry policy counts: those since the last suspension or resume."""
        return self.attempt - self.attempts_at_resume

    @property
    def done(self) -> bool:
        return self.status in TERMINAL_STATUSES


class JournalRow(msgspec.Struct, frozen=True, kw_only=True):
    index: int
    kind: str
    name: str
    attempt: int
    entry: bytes
    created_at_ms: int


class AttemptRow(msgspec.Struct, frozen=True, kw_only=True):
    attempt: int
    endpoint: str | None
    started_at_ms: int
    ended_at_ms: int | None
    outcome: str | None
    failure: StoredFailure | None


AppendOutcome = Literal["appended", "duplicate", "fenced", "gap", "conflict", "not_found"]
SuspendOutcome = Literal["suspended", "resume", "fenced"]
CompleteEntryOutcome = Literal["completed", "already_completed", "not_found"]
CancelOutcome = Literal["requested", "already_done", "not_found"]
ResumeOutcome = Literal["resumed", "not_paused", "not_found"]
#: ``retried``: a backing-off invocation runs its next attempt now; ``resumed``: a paused one was
#: resumed (as ``resume``); ``not_retryable``: it is in any other status.
RetryOutcome = Literal["retried", "resumed", "not_retryable", "not_found"]
#: ``workflow_busy``: a workflow's run whose key still has unfinished invocations.
PurgeOutcome = Literal["purged", "not_ended", "workflow_busy", "not_found"]
#: ``in_use``: services still point at the deployment, or unfinished invocations are pinned to it.
RemoveDeploymentOutcome = Literal["removed", "in_use", "not_found"]
#: A position in the listing of invocations (newest first): the ``(created_at_ms, id)`` of the last
#: invocation of the previous page; the next page starts after it.
InvocationCursor = tuple[int, str]


class CompletionRow(msgspec.Struct, frozen=True, kw_only=True):
    index: int
    result: bytes | None = None
    failure: StoredFailure | None = None
    created_at_ms: int = 0


class Claim(msgspec.Struct, frozen=True, kw_only=True):
    """What an attempt starts from: the invocation (with its new attempt number), its journal and completions."""

    invocation: Invocation
    journal: list[JournalRow]
    completions: list[CompletionRow] = []
    #: For a keyed invocation: the committed state of its (service, key).
    state: dict[str, bytes] = {}


class StateOp(msgspec.Struct, frozen=True, kw_only=True):
    """A change of keyed state, applied with the entry that made it."""

    op: Literal["set", "clear", "clear_all"]
    name: str = ""
    value: bytes | None = None


class PromiseOp(msgspec.Struct, frozen=True, kw_only=True):
    """A durable-promise action of a workflow key, applied with the entry that made it.

    ``get``: complete the entry now if the promise is completed, else when it is.
    ``peek``: complete the entry now with ``{"resolved": bool, "value": ...}``, or the
    promise's failure. ``complete``: complete the promise with ``value`` or ``failure``
    (and every entry waiting on it); the entry is completed with ``null``, or with
    a 409 failure if the promise was already completed.
    """

    op: Literal["get", "peek", "complete"]
    name: str
    value: bytes | None = None
    failure: StoredFailure | None = None


class PromiseRow(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    value: bytes | None
    failure: StoredFailure | None
    completed_at_ms: int


class KeyStatus(msgspec.Struct, frozen=True, kw_only=True):
    """An object or workflow key: its state, who holds its lock, who waits for it, its promises."""

    service: str
    key: str
    state: dict[str, bytes]
    lock_holder: str | None
    queue: list[str]
    promises: list[PromiseRow]


class Lease(msgspec.Struct, frozen=True, kw_only=True):
    """An instance's hold on the attempts it runs: renewed while it lives, taken over once past ``until_ms``."""

    owner: str
    until_ms: int


class TimerRow(msgspec.Struct, frozen=True, kw_only=True):
    invocation_id: str
    #: -1: start the invocation; >= 0: complete the sleep entry at this index.
    index: int
    due_at_ms: int


class Ended(msgspec.Struct, frozen=True, kw_only=True):
    """An invocation that reached its end in a write (for the clients waiting on it)."""

    invocation_id: str
    output: bytes | None = None
    failure: StoredFailure | None = None


class Effects(msgspec.Struct, frozen=True, kw_only=True):
    """What a write did to other invocations, for the proxy to act on after the commit."""

    #: Became ``pending``: schedule an attempt.
    woken: list[str] = []
    #: Got a new completion (a running attempt may be waiting for it).
    notified: list[str] = []
    #: Reached their end.
    ended: list[Ended] = []


class AppendResult(msgspec.Struct, frozen=True, kw_only=True):
    outcome: AppendOutcome
    #: The invocation was cancelled meanwhile (read in the same transaction).
    cancel_requested: bool = False
    effects: Effects = Effects()
    #: The completion this entry got in the same commit (``completion=`` or a promise op), if any.
    completion: CompletionRow | None = None


class Created(msgspec.Struct, frozen=True, kw_only=True):
    invocation: Invocation
    #: False when an invocation with the same idempotency key already existed.
    created: bool
    #: Its first attempt, when it was asked for and the new invocation could start at once.
    claim: Claim | None = None


class Deployment(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    manifest: bytes
    endpoints: list[str]
    created_at_ms: int


class PurgeResult(msgspec.Struct, frozen=True, kw_only=True):
    """What a bulk purge did: ``purged`` invocations deleted; ``more``: others still match."""

    purged: int
    more: bool


class RemovedDeployment(msgspec.Struct, frozen=True, kw_only=True):
    """What ``remove_deployment`` did, and when it refused, why."""

    outcome: RemoveDeploymentOutcome
    #: The services that still point at the deployment (``in_use``).
    services: list[str] = []
    #: How many unfinished invocations are pinned to it (``in_use``).
    unfinished: int = 0


class ServiceRow(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    deployment_id: str
    manifest: bytes
    modified_at_ms: int


class StoreUnavailable(Exception):
    """The database cannot take writes (or reads) right now: full, I/O error, busy past its retries.

    Nothing of the failed operation was committed. The proxy answers 503 and tries again later;
    it never reports such an operation as done.
    """


class IdempotencyConflict(Exception):
    """The idempotency key is already bound to an invocation with a different request."""

    def __init__(self, existing: Invocation) -> None:
        super().__init__(f"idempotency key already used by {existing.id} with a different request")
        self.existing = existing


class Broadcast(msgspec.Struct, frozen=True, kw_only=True):
    """What a commit of another instance sharing the database means to this one."""

    #: The instance that committed it.
    sender: str
    #: Invocations that reached their end (clients may be waiting for them here).
    ended: list[str] = []
    #: Invocations that got a completion (an attempt running here may be waiting for it).
    notified: list[str] = []
    #: Deployments or services changed.
    deployments: bool = False


class JournalStore(abc.ABC):
    """Durable state of the proxy. See the module docstring for the fencing rule."""

    __slots__ = ("write_observer",)

    #: True when several proxy instances may share this database: each runs the attempts it claimed
    #: under a lease, takes over the expired leases of the others, and hears their commits.
    shared: ClassVar[bool] = False
    #: This instance's name in the leases it holds.
    instance_id: str
    #: How long a lease lasts unless renewed.
    lease_ms: int
    #: Called after every committed write transaction with the verb's name and its duration in
    #: seconds, for metrics; None: not observed.
    write_observer: Callable[[str, float], None] | None

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect, migrate the schema to the latest version, check integrity."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def secret(self) -> bytes:
        """A random key made once per database, for signing attempt tokens."""

    # ---------------------------------------------------------------- invocations

    @abc.abstractmethod
    async def create_invocation(self, new: NewInvocation, now_ms: int, *, claim_endpoint: str | None = None) -> Created:
        """Insert a ``pending`` invocation, or return the one holding the same idempotency key.

        The idempotency key is scoped to (service, handler, key). A repeat with a
        different input raises ``IdempotencyConflict``. ``run_at_ms`` makes it
        ``scheduled`` with a start timer. An ``exclusive`` invocation whose key is
        locked by another is ``queued``; otherwise it takes the lock (a scheduled one
        takes it when its timer fires).

        With ``claim_endpoint``, a new invocation that is ``pending`` is also
        claimed for that endpoint in the same transaction (``Created.claim``, as
        ``claim`` returns it): one commit instead of two before it runs.
        """

    @abc.abstractmethod
    async def get_invocation(self, invocation_id: str) -> Invocation | None: ...

    @abc.abstractmethod
    async def get_journal(self, invocation_id: str) -> list[JournalRow]: ...

    @abc.abstractmethod
    async def get_attempts(self, invocation_id: str) -> list[AttemptRow]: ...

    @abc.abstractmethod
    async def claim(self, invocation_id: str, endpoint: str | None, now_ms: int) -> Claim | None:
        """Start a new attempt: ``pending`` (or ``backing_off``, dropping its timer) -> ``running``, attempt + 1.

        Clears ``waiting_on``; returns the journal and every completion. None when
        the invocation is not claimable (scheduled, queued, running, suspended, paused, ended or unknown).
        """

    @abc.abstractmethod
    async def append(
        self,
        invocation_id: str,
        attempt: int,
        index: int,
        kind: str,
        name: str,
        entry: bytes,
        now_ms: int,
        *,
        child: NewInvocation | None = None,
        timer_at_ms: int | None = None,
        completion: CompletionRow | None = None,
        state_op: StateOp | None = None,
        promise_op: PromiseOp | None = None,
    ) -> AppendResult:
        """Append one journal entry for the given attempt, with its effects, in one transaction.

        Outcomes: ``appended``: written now. ``duplicate``: this exact entry is
        already at ``index`` (a retried append whose ack was lost; no effect is
        applied twice). ``fenced``: the attempt is not the current running one.
        ``gap``: ``index`` is past the end of the journal. ``conflict``: a
        different entry is already at ``index``. ``not_found``: unknown invocation.

        Effects, applied only when the outcome is ``appended``:
        ``child``: create this invocation (a call or send; its id is derived from
        the parent, so it is created at most once; ``run_at_ms`` makes it
        ``scheduled`` with a start timer, else ``pending`` and listed in
        ``effects.woken``). ``timer_at_ms``: a sleep timer for this entry.
        ``completion``: complete this entry at once (e.g. a call to an unknown
        service fails immediately). ``state_op``: change the state of the
        invocation's (service, key). ``promise_op``: see ``PromiseOp``, on the
        promises of the invocation's (service, key).
        An exclusive child whose key is locked is created ``queued``.
        """

    @abc.abstractmethod
    async def complete(self, invocation_id: str, attempt: int, output: bytes, now_ms: int) -> Effects | None:
        """``running`` -> ``completed`` with ``output``; None if fenced.

        A call's end becomes the completion of the caller's entry, in the same
        transaction (``effects.notified``, and ``effects.woken`` if the caller
        was suspended on it). ``effects.ended`` lists this invocation. The end of
        an exclusive invocation passes its key's lock to the oldest ``queued``
        invocation of that key, which becomes ``pending`` (``effects.woken``); the
        same holds for every way an invocation ends (``fail``, ``cancel``, ``kill``).
        """

    @abc.abstractmethod
    async def fail(
        self,
        invocation_id: str,
        attempt: int,
        failure: StoredFailure,
        now_ms: int,
        *,
        attempt_failure: StoredFailure | None = None,
    ) -> Effects | None:
        """``running`` -> ``failed``; None if fenced. Completes the caller's entry like ``complete``.

        ``attempt_failure``, when given, is what the attempt itself failed with
        (recorded on the attempt and as the last failure), while ``failure`` is
        how the invocation ends (e.g. "gave up after 30 attempts").
        """

    @abc.abstractmethod
    async def backoff(
        self, invocation_id: str, attempt: int, failure: StoredFailure, next_run_at_ms: int, now_ms: int
    ) -> bool:
        """``running`` -> ``backing_off`` with a start timer at ``next_run_at_ms``; False if fenced."""

    @abc.abstractmethod
    async def pause(self, invocation_id: str, attempt: int, failure: StoredFailure, now_ms: int) -> bool:
        """``running`` -> ``paused`` after the retry policy's last attempt; False if fenced.

        ``failure`` (what the attempt failed with) becomes ``last_failure`` and is
        recorded on the attempt, whose outcome is ``paused``. The invocation does not
        end: nothing is reported to its callers, it keeps its key's lock and its timers.
        """

    @abc.abstractmethod
    async def resume(self, invocation_id: str, now_ms: int) -> tuple[ResumeOutcome, Effects]:
        """``paused`` -> ``pending`` (listed in ``effects.woken``), with a fresh retry budget:
        ``attempts_at_resume`` becomes the current ``attempt`` (the counter itself goes on).
        ``not_paused`` for an invocation in any other status, ``not_found`` for an unknown one."""

    @abc.abstractmethod
    async def suspend(self, invocation_id: str, attempt: int, waiting_on: list[int], now_ms: int) -> SuspendOutcome:
        """End the attempt waiting for any of ``waiting_on`` to be completed.

        ``resume`` (status ``pending``) when ``waiting_on`` is empty or one of
        them is already completed, or when a cancellation is pending: the
        invocation must run again now. ``suspended`` otherwise. ``fenced`` if the
        attempt is not the current running one.
        """

    @abc.abstractmethod
    async def complete_entry(
        self,
        invocation_id: str,
        index: int,
        now_ms: int,
        *,
        result: bytes | None = None,
        failure: StoredFailure | None = None,
        kind: str | None = None,
    ) -> tuple[CompleteEntryOutcome, Effects]:
        """Write the completion of the entry at ``index`` (once).

        ``not_found`` when the invocation or the entry does not exist, or when
        ``kind`` is given and the entry is of another kind (or not completable).
        ``already_completed`` when it has a completion. A completion of an entry
        the invocation is suspended on wakes it.
        """

    @abc.abstractmethod
    async def get_completions(self, invocation_id: str, indices: list[int]) -> list[CompletionRow]:
        """The existing completions among ``indices``."""

    @abc.abstractmethod
    async def fire_timer(self, invocation_id: str, index: int, now_ms: int) -> Effects:
        """Delete the timer and apply it: ``-1`` makes a scheduled or backing-off invocation
        ``pending``; ``>= 0`` completes that sleep entry with ``null``. A timer that no
        longer exists does nothing."""

    @abc.abstractmethod
    async def fire_due_timers(self, now_ms: int, limit: int = 100) -> tuple[list[TimerRow], Effects]:
        """Fire (as ``fire_timer``) up to ``limit`` timers due by ``now_ms``, earliest first, in one
        transaction. Timers another instance is firing at the same moment are skipped, not fired twice."""

    @abc.abstractmethod
    async def due_timers(self, before_ms: int, limit: int) -> list[TimerRow]:
        """Timers due before ``before_ms``, earliest first (uses the due-time index)."""

    @abc.abstractmethod
    async def cancel(self, invocation_id: str, now_ms: int) -> tuple[CancelOutcome, Effects]:
        """Ask an invocation, and the callees of its calls (recursively), to cancel.

        An invocation that never started (``scheduled``, or ``pending`` at attempt
        0) ends failed at once with 409 "cancelled". A ``suspended``,
        ``backing_off`` or ``paused`` one becomes ``pending`` to run its
        compensations (a paused one with a fresh retry budget, as ``resume``). A
        ``running`` one gets the flag, which its next append or await reports.
        """

    @abc.abstractmethod
    async def kill(self, invocation_id: str, failure: StoredFailure, now_ms: int) -> tuple[CancelOutcome, Effects]:
        """End an invocation and the callees of its calls (recursively) at once, failed with
        ``failure``; their attempts are fenced and their timers removed. No compensation runs."""

    @abc.abstractmethod
    async def abandon_running(self, now_ms: int) -> int:
        """On proxy start: ``running`` invocations -> ``pending`` (fences the old attempts). A store that
        is not ``shared`` takes them all; a shared one only those leased to this instance (a restart
        under the same ``instance_id``), unleased, or with an expired lease."""

    @abc.abstractmethod
    async def renew_leases(self, now_ms: int) -> int:
        """Extend, to ``now_ms + lease_ms``, the lease of every running invocation this instance holds."""

    @abc.abstractmethod
    async def take_over_expired(self, now_ms: int, limit: int = 100) -> list[str]:
        """Running invocations whose lease ran out before ``now_ms`` -> ``pending`` (their attempts are
        fenced and closed as abandoned); returns their ids, for this instance to claim."""

    @abc.abstractmethod
    async def list_stale_pending(self, before_ms: int, limit: int = 100) -> list[str]:
        """``pending`` invocations last changed before ``before_ms``: woken by an instance that did not
        live to claim them."""

    @abc.abstractmethod
    async def subscribe(self, on_broadcast: Callable[[Broadcast], None], on_gap: Callable[[], None]) -> None:
        """Hear the commits of the other instances sharing the database, until ``close``.

        ``on_gap`` is called when broadcasts may have been missed (the connection
        that hears them was lost and made again): whoever relies on them should
        read the store again. A store no other instance shares has nothing to hear.
        """

    @abc.abstractmethod
    async def list_runnable(self) -> list[str]:
        """Ids of every ``pending`` invocation, oldest first."""

    # ---------------------------------------------------------------- keyed state

    @abc.abstractmethod
    async def get_state(self, service: str, key: str) -> dict[str, bytes]: ...

    @abc.abstractmethod
    async def key_status(self, service: str, key: str) -> KeyStatus: ...

    @abc.abstractmethod
    async def find_by_idempotency_key(
        self, service: str, handler: str, key: str | None, idempotency_key: str
    ) -> Invocation | None:
        """The invocation created with this idempotency key (a workflow's run uses ``run`` as its key)."""

    @abc.abstractmethod
    async def purge_workflows(self, service: str, ended_before_ms: int, limit: int = 1_000) -> int:
        """Delete workflow keys of ``service`` whose ``run`` invocation ended before ``ended_before_ms``:
        every invocation of the key (with its journal, completions, attempts), its state and its promises.
        Returns how many keys were purged (at most ``limit``)."""

    @abc.abstractmethod
    async def list_invocations(
        self,
        *,
        status: InvocationStatus | Sequence[InvocationStatus] | None = None,
        service: str | None = None,
        handler: str | None = None,
        key: str | None = None,
        created_after_ms: int | None = None,
        created_before_ms: int | None = None,
        cursor: InvocationCursor | None = None,
        limit: int = 100,
    ) -> list[Invocation]:
        """Newest first: by ``created_at_ms``, then by ``id``, both descending (a total order).

        Every filter given must match: ``status`` (one, or any of several), ``service``,
        ``handler``, ``key``, and ``created_after_ms < created_at_ms < created_before_ms``.
        ``cursor`` is the ``(created_at_ms, id)`` of the last invocation of the previous page:
        the page starts right after it, so invocations created meanwhile never shift the pages
        (keyset pagination). Uses the indexes of the creation time, of the service, of the
        unfinished and of the ended invocations. ``ValueError`` for an unknown status.
        """

    @abc.abstractmethod
    async def invocation_counts(self) -> dict[InvocationStatus, int]:
        """How many invocations have each status (every status is a key, 0 when none).

        The unfinished ones are counted on their partial index; the ended ones (most of
        the table) on theirs, which still visits every ended invocation."""

    @abc.abstractmethod
    async def pending_timer_count(self) -> int:
        """How many timers have not fired yet (delayed starts, backoffs and sleeps)."""

    @abc.abstractmethod
    async def retry_now(self, invocation_id: str, now_ms: int) -> tuple[RetryOutcome, Effects]:
        """Run the next attempt now, in one transaction: ``backing_off`` -> ``pending`` (listed in
        ``effects.woken``), its start timer dropped; its retry budget is not reset (the attempt counts
        as any other). A ``paused`` invocation is resumed instead, as ``resume`` does (``resumed``).
        ``not_retryable`` for every other status (a ``scheduled`` invocation keeps its delay)."""

    @abc.abstractmethod
    async def purge_invocation(
        self, invocation_id: str, *, workflow_services: Collection[str] = ()
    ) -> tuple[PurgeOutcome, int]:
        """Delete an ended invocation with its journal, completions and attempts; returns the outcome
        and the number of invocations deleted.

        Nothing else refers to an ended invocation by a foreign key: its callees keep their
        ``parent_id`` (a call's end completes nothing once its caller is gone), its caller keeps
        the completion its end wrote. The state of an object key is not touched. The ``run`` of a
        workflow (a service named in ``workflow_services``) takes its whole key with it, as the
        workflow retention does: every ended invocation of the key, its state and its promises,
        so that neither outlives the run that owns them; ``workflow_busy`` when the key still has
        unfinished invocations. ``not_ended`` for an invocation that has not ended."""

    @abc.abstractmethod
    async def purge_invocations(
        self,
        *,
        statuses: Sequence[InvocationStatus] = TERMINAL_STATUSES,
        service: str | None = None,
        ended_before_ms: int | None = None,
        limit: int = 100,
        workflow_services: Collection[str] = (),
    ) -> PurgeResult:
        """Delete up to ``limit`` ended invocations (with ``statuses``, of ``service``, ended before
        ``ended_before_ms``), each as ``purge_invocation`` does, in one transaction; a workflow's
        run whose key still has unfinished invocations is left out. ``purged`` counts the invocations
        deleted (a workflow's run brings its key's other ended invocations along); ``more`` says
        whether others still match, so a caller can loop until it is False. ``ValueError`` for a
        status that is not an ended one."""

    # ---------------------------------------------------------------- deployments

    @abc.abstractmethod
    async def register_deployment(self, deployment_id: str, uri: str, manifest: bytes, now_ms: int) -> Deployment:
        """Record ``uri`` as an endpoint of a deployment serving ``manifest``.

        An endpoint whose manifest equals an existing deployment's joins that
        deployment (instances of one deployment); otherwise ``deployment_id`` is
        created. The services in the manifest then point at that deployment.
        """

    @abc.abstractmethod
    async def remove_endpoint(self, uri: str) -> bool: ...

    @abc.abstractmethod
    async def remove_deployment(self, deployment_id: str) -> RemovedDeployment:
        """Delete a deployment and its endpoints, unless it is in use (``in_use``, with why): a
        service still points at it (new invocations would go there), or an unfinished invocation
        is pinned to it (its journal must be replayed by that code). Ended invocations may stay
        pinned to a removed deployment: nothing runs them again."""

    @abc.abstractmethod
    async def list_deployments(self) -> list[Deployment]: ...

    @abc.abstractmethod
    async def get_deployment(self, deployment_id: str) -> Deployment | None: ...

    @abc.abstractmethod
    async def list_services(self) -> list[ServiceRow]: ...
