"""The verbs every SQL backend shares: argument checks, then one ``_ops`` function in one transaction.

``SQLStore`` implements ``JournalStore`` once. A backend supplies how a verb's
function runs (``_write``: in a write transaction that commits before the verb
returns; ``_read``: in a read-only snapshot) and its lifecycle (``open``,
``close``, ``secret``). Arguments are checked here, before anything is queued
or sent to the database, so a bad call never reaches a transaction.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Collection, Coroutine, Sequence
from time import perf_counter
from typing import Any, TypeVar, get_args

import msgspec

from handler_sdk.protocol import manifest_decoder
from proxy.store import (
    _ops as ops,
    _ops_cancel as cancels,
    _ops_completions as completions,
    _ops_deployments as deployments,
    _ops_invocations as invocations,
    _ops_keys as keys,
    _ops_purge as purges,
)
from proxy.store._tx import Tx
from proxy.store.base import (
    TERMINAL_STATUSES,
    AppendResult,
    AttemptRow,
    CancelOutcome,
    Claim,
    CompleteEntryOutcome,
    CompletionRow,
    Created,
    Deployment,
    Effects,
    Invocation,
    InvocationCursor,
    InvocationStatus,
    JournalRow,
    JournalStore,
    KeyStatus,
    Lease,
    NewInvocation,
    PromiseOp,
    PurgeOutcome,
    PurgeResult,
    RemovedDeployment,
    ResumeOutcome,
    RetryOutcome,
    ServiceRow,
    StateOp,
    StoredFailure,
    SuspendOutcome,
    TimerRow,
)

__all__ = ["SQLStore"]


def verb_of(fn: Callable[..., object]) -> str:
    """The verb a write's function belongs to: ``SQLStore.append.<locals>.<lambda>`` -> ``append``.
    Remembered per code object (one per lambda in the source), as it is asked after every write."""
    code = getattr(fn, "__code__", None)
    verb = _verbs.get(code) if code is not None else None
    if verb is None:
        verb = fn.__qualname__.split(".<locals>", 1)[0].rsplit(".", 1)[-1]
        if code is not None:
            _verbs[code] = verb
    return verb


_verbs: dict[object, str] = {}


T = TypeVar("T")


class SQLStore(JournalStore):
    """``JournalStore`` over the shared SQL of ``_ops``; see the module docstring."""

    __slots__ = ()

    @abc.abstractmethod
    async def _transact(self, fn: Callable[[Tx], Coroutine[Any, Any, T]]) -> T:
        """Run ``fn`` in a write transaction; return its result once the transaction committed."""

    async def _write(self, fn: Callable[[Tx], Coroutine[Any, Any, T]]) -> T:
        """``_transact``, timed for ``write_observer`` when one is set."""
        observer = self.write_observer
        if observer is None:
            return await self._transact(fn)
        start = perf_counter()
        result = await self._transact(fn)
        observer(verb_of(fn), perf_counter() - start)
        return result

    @abc.abstractmethod
    async def _read(self, fn: Callable[[Tx], Coroutine[Any, Any, T]]) -> T:
        """Run ``fn`` on a consistent snapshot; it must not write."""

    def _lease(self, now_ms: int) -> Lease:
        return Lease(owner=self.instance_id, until_ms=now_ms + self.lease_ms)

    # ---------------------------------------------------------------- invocations

    async def create_invocation(self, new: NewInvocation, now_ms: int, *, claim_endpoint: str | None = None) -> Created:
        _check_new(new)
        return await self._write(
            lambda tx: invocations.create_invocation(tx, new, now_ms, claim_endpoint, self._lease(now_ms))
        )

    async def get_invocation(self, invocation_id: str) -> Invocation | None:
        return await self._read(lambda tx: ops.get_invocation(tx, invocation_id))

    async def get_journal(self, invocation_id: str) -> list[JournalRow]:
        return await self._read(lambda tx: ops.get_journal(tx, invocation_id))

    async def get_attempts(self, invocation_id: str) -> list[AttemptRow]:
        return await self._read(lambda tx: ops.get_attempts(tx, invocation_id))

    async def claim(self, invocation_id: str, endpoint: str | None, now_ms: int) -> Claim | None:
        return await self._write(lambda tx: invocations.claim(tx, invocation_id, endpoint, now_ms, self._lease(now_ms)))

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
        """See ``JournalStore.append``. ``state_op`` and ``promise_op`` need an invocation with a key;
        on one without, the job raises ``ValueError`` (only when the entry would be appended: the
        key is read in the transaction) and nothing of the append is written."""
        if index < 0:
            raise ValueError(f"journal index must be >= 0, not {index}")
        if child is not None:
            child = _child_of(child, invocation_id, index)
        if completion is not None:
            if completion.index != index:
                raise ValueError(f"the completion is for entry {completion.index}, not for the appended {index}")
            _check_result(completion.result, completion.failure)
        if state_op is not None:
            _check_state_op(state_op)
        if promise_op is not None:
            if completion is not None:
                raise ValueError("an entry with a promise_op gets its completion from it, not from completion=")
            _check_result(promise_op.value, promise_op.failure)
        return await self._write(
            lambda tx: invocations.append(
                tx,
                invocation_id,
                attempt,
                index,
                kind,
                name,
                entry,
                now_ms,
                child,
                timer_at_ms,
                completion,
                state_op,
                promise_op,
            )
        )

    async def complete(self, invocation_id: str, attempt: int, output: bytes, now_ms: int) -> Effects | None:
        return await self._write(lambda tx: invocations.complete(tx, invocation_id, attempt, output, now_ms))

    async def fail(
        self,
        invocation_id: str,
        attempt: int,
        failure: StoredFailure,
        now_ms: int,
        *,
        attempt_failure: StoredFailure | None = None,
    ) -> Effects | None:
        return await self._write(
            lambda tx: invocations.fail(tx, invocation_id, attempt, failure, now_ms, attempt_failure=attempt_failure)
        )

    async def backoff(
        self, invocation_id: str, attempt: int, failure: StoredFailure, next_run_at_ms: int, now_ms: int
    ) -> bool:
        return await self._write(
            lambda tx: invocations.backoff(tx, invocation_id, attempt, failure, next_run_at_ms, now_ms)
        )

    async def pause(self, invocation_id: str, attempt: int, failure: StoredFailure, now_ms: int) -> bool:
        return await self._write(lambda tx: invocations.pause(tx, invocation_id, attempt, failure, now_ms))

    async def resume(self, invocation_id: str, now_ms: int) -> tuple[ResumeOutcome, Effects]:
        return await self._write(lambda tx: invocations.resume(tx, invocation_id, now_ms))

    async def suspend(self, invocation_id: str, attempt: int, waiting_on: list[int], now_ms: int) -> SuspendOutcome:
        if any(index < 0 for index in waiting_on):
            raise ValueError(f"journal indices must be >= 0, not {waiting_on}")
        waiting_on = list(waiting_on)  # the caller may change its list while the job waits in the queue
        return await self._write(lambda tx: invocations.suspend(tx, invocation_id, attempt, waiting_on, now_ms))

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
        _check_result(result, failure)
        return await self._write(
            lambda tx: completions.complete_entry(tx, invocation_id, index, now_ms, result, failure, kind)
        )

    async def get_completions(self, invocation_id: str, indices: list[int]) -> list[CompletionRow]:
        indices = list(indices)
        return await self._read(lambda tx: ops.get_completions(tx, invocation_id, indices))

    async def fire_timer(self, invocation_id: str, index: int, now_ms: int) -> Effects:
        return await self._write(lambda tx: completions.fire_timer(tx, invocation_id, index, now_ms))

    async def fire_due_timers(self, now_ms: int, limit: int = 100) -> tuple[list[TimerRow], Effects]:
        limit = max(limit, 0)
        return await self._write(lambda tx: completions.fire_due_timers(tx, now_ms, limit))

    async def due_timers(self, before_ms: int, limit: int) -> list[TimerRow]:
        limit = max(limit, 0)
        return await self._read(lambda tx: ops.due_timers(tx, before_ms, limit))

    async def cancel(self, invocation_id: str, now_ms: int) -> tuple[CancelOutcome, Effects]:
        return await self._write(lambda tx: cancels.cancel(tx, invocation_id, now_ms))

    async def kill(self, invocation_id: str, failure: StoredFailure, now_ms: int) -> tuple[CancelOutcome, Effects]:
        return await self._write(lambda tx: cancels.kill(tx, invocation_id, failure, now_ms))

    async def abandon_running(self, now_ms: int) -> int:
        owner = self.instance_id if self.shared else None
        return await self._write(lambda tx: invocations.abandon_running(tx, now_ms, owner))

    async def renew_leases(self, now_ms: int) -> int:
        lease = self._lease(now_ms)
        return await self._write(lambda tx: invocations.renew_leases(tx, lease))

    async def take_over_expired(self, now_ms: int, limit: int = 100) -> list[str]:
        limit = max(limit, 0)
        return await self._write(lambda tx: invocations.take_over_expired(tx, now_ms, limit))

    async def list_stale_pending(self, before_ms: int, limit: int = 100) -> list[str]:
        limit = max(limit, 0)
        return await self._read(lambda tx: invocations.list_stale_pending(tx, before_ms, limit))

    async def list_runnable(self) -> list[str]:
        return await self._read(ops.list_runnable)

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
        statuses = None if status is None else _checked_statuses(status)
        if statuses == [] or limit <= 0:
            return []
        if cursor is not None:
            cursor = (int(cursor[0]), str(cursor[1]))
        return await self._read(
            lambda tx: ops.list_invocations(
                tx, statuses, service, handler, key, created_after_ms, created_before_ms, cursor, limit
            )
        )

    async def invocation_counts(self) -> dict[InvocationStatus, int]:
        return await self._read(ops.invocation_counts)

    async def pending_timer_count(self) -> int:
        return await self._read(ops.pending_timer_count)

    async def retry_now(self, invocation_id: str, now_ms: int) -> tuple[RetryOutcome, Effects]:
        return await self._write(lambda tx: invocations.retry_now(tx, invocation_id, now_ms))

    async def purge_invocation(
        self, invocation_id: str, *, workflow_services: Collection[str] = ()
    ) -> tuple[PurgeOutcome, int]:
        workflows = frozenset(workflow_services)
        return await self._write(lambda tx: purges.purge_invocation(tx, invocation_id, workflows))

    async def purge_invocations(
        self,
        *,
        statuses: Sequence[InvocationStatus] = TERMINAL_STATUSES,
        service: str | None = None,
        ended_before_ms: int | None = None,
        limit: int = 100,
        workflow_services: Collection[str] = (),
    ) -> PurgeResult:
        checked = _checked_statuses(statuses)
        if any(s not in TERMINAL_STATUSES for s in checked):
            raise ValueError(f"only ended invocations can be purged, not {checked}")
        if not checked or limit <= 0:
            return PurgeResult(purged=0, more=False)
        workflows = frozenset(workflow_services)
        return await self._write(
            lambda tx: purges.purge_invocations(tx, checked, service, ended_before_ms, limit, workflows)
        )

    # ---------------------------------------------------------------- keyed state

    async def get_state(self, service: str, key: str) -> dict[str, bytes]:
        return await self._read(lambda tx: keys.get_state(tx, service, key))

    async def key_status(self, service: str, key: str) -> KeyStatus:
        return await self._read(lambda tx: keys.key_status(tx, service, key))

    async def find_by_idempotency_key(
        self, service: str, handler: str, key: str | None, idempotency_key: str
    ) -> Invocation | None:
        return await self._read(lambda tx: ops.find_by_idempotency_key(tx, service, handler, key, idempotency_key))

    async def purge_workflows(self, service: str, ended_before_ms: int, limit: int = 1_000) -> int:
        limit = max(limit, 0)
        return await self._write(lambda tx: keys.purge_workflows(tx, service, ended_before_ms, limit))

    # ---------------------------------------------------------------- deployments

    async def register_deployment(self, deployment_id: str, uri: str, manifest: bytes, now_ms: int) -> Deployment:
        services = manifest_decoder.decode(manifest).services  # invalid manifests fail here, before any write
        return await self._write(
            lambda tx: deployments.register_deployment(tx, deployment_id, uri, manifest, services, now_ms)
        )

    async def remove_endpoint(self, uri: str) -> bool:
        return await self._write(lambda tx: deployments.remove_endpoint(tx, uri))

    async def remove_deployment(self, deployment_id: str) -> RemovedDeployment:
        return await self._write(lambda tx: deployments.remove_deployment(tx, deployment_id))

    async def list_deployments(self) -> list[Deployment]:
        return await self._read(deployments.list_deployments)

    async def get_deployment(self, deployment_id: str) -> Deployment | None:
        return await self._read(lambda tx: deployments.get_deployment(tx, deployment_id))

    async def list_services(self) -> list[ServiceRow]:
        return await self._read(deployments.list_services)


# --------------------------------------------------------------------------- argument checks (before queueing)


_STATUSES = frozenset(get_args(InvocationStatus))


def _checked_statuses(status: InvocationStatus | Sequence[InvocationStatus]) -> list[InvocationStatus]:
    """One status or several, as a list without repeats; ``ValueError`` for one that does not exist."""
    statuses: list[InvocationStatus] = [status] if isinstance(status, str) else list(dict.fromkeys(status))
    unknown = [s for s in statuses if s not in _STATUSES]
    if unknown:
        raise ValueError(f"unknown invocation status {unknown[0]!r}; the statuses are {sorted(_STATUSES)}")
    return statuses


def _check_new(new: NewInvocation) -> None:
    if (new.parent_id is None) != (new.parent_index is None):
        raise ValueError("parent_id and parent_index go together")
    if new.parent_awaits and new.parent_id is None:
        raise ValueError("parent_awaits needs a parent_id")


def _child_of(child: NewInvocation, invocation_id: str, index: int) -> NewInvocation:
    """The child started by entry ``index``: its parent link is that entry (filled in when left out)."""
    if child.parent_id is None and child.parent_index is None:
        child = msgspec.structs.replace(child, parent_id=invocation_id, parent_index=index)
    if (child.parent_id, child.parent_index) != (invocation_id, index):
        raise ValueError(
            f"the child {child.id} names {child.parent_id}@{child.parent_index} as its parent entry,"
            f" but it is started by {invocation_id}@{index}"
        )
    _check_new(child)
    return child


def _check_state_op(op: StateOp) -> None:
    if op.op == "set" and op.value is None:
        raise ValueError(f"setting the state {op.name!r} needs a value")
    if op.op != "clear_all" and not op.name:
        raise ValueError(f"a {op.op} of state needs the name of the state")


def _check_result(result: bytes | None, failure: StoredFailure | None) -> None:
    if result is not None and failure is not None:
        raise ValueError("a completion has a result or a failure, not both")
