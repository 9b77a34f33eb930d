"""The SQL of the journal store, part 8: purging ended invocations (the admin API's purge).

An ended invocation is referred to by nothing that still matters: its callees
keep their ``parent_id`` (not a foreign key; a callee ending after its caller
was purged completes nothing, as its caller's journal is gone), its caller keeps
the completion its end wrote, and it holds no key lock. So it goes with its
journal, completions, attempts and leftovers (timers, queue rows, promise
waiters: an ended invocation has none, but nothing may dangle).

A workflow's ``run`` is different: its key's state and promises belong to it,
and the workflow retention finds the keys to clean up through their runs. A run
is therefore purged with its whole key (``purge_workflow_key``), and only once
the key has no unfinished invocation.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Final

import msgspec

from proxy.store._ops import ENDED
from proxy.store._ops_keys import purge_workflow_key
from proxy.store._tx import Tx, for_update, lock_name, skip_locked, strings_in
from proxy.store.base import TERMINAL_STATUSES, InvocationStatus, PurgeOutcome, PurgeResult

#: The tables whose rows belong to one invocation (children of ``invocations``), children first.
_OWNED_BY_INVOCATION: Final = ("promise_waiters", "completions", "journal", "attempts", "timers", "key_queue")
#: The run of a workflow key, as the ingress creates it (the service must also be a workflow).
_WORKFLOW_RUN: Final = "handler = 'run' AND idempotency_key = 'run' AND key IS NOT NULL"
_UNFINISHED_OF_KEY: Final = (
    "SELECT 1 FROM invocations WHERE service = ? AND key = ? AND status NOT IN ('completed', 'failed') LIMIT 1"
)
_KEY_BUSY: Final = (
    "EXISTS (SELECT 1 FROM invocations u WHERE u.service = invocations.service AND u.key = invocations.key"
    " AND u.status NOT IN ('completed', 'failed'))"
)

_list_encoder = msgspec.json.Encoder()


def _is_workflow_run(
    workflow_services: Collection[str], service: str, handler: str, key: str | None, idempotency_key: str | None
) -> bool:
    return service in workflow_services and handler == "run" and idempotency_key == "run" and key is not None


async def delete_invocations(tx: Tx, ids: list[str]) -> int:
    """Delete these invocations and every row that belongs to them; returns how many invocations went."""
    if not ids:
        return 0
    listed = _list_encoder.encode(ids).decode()
    for table in _OWNED_BY_INVOCATION:
        await tx.execute(f"DELETE FROM {table} WHERE {strings_in(tx, 'invocation_id')}", (listed,))
    return await tx.execute(f"DELETE FROM invocations WHERE {strings_in(tx, 'id')}", (listed,))


async def purge_invocation(tx: Tx, invocation_id: str, workflow_services: Collection[str]) -> tuple[PurgeOutcome, int]:
    row = await tx.fetchone(
        f"SELECT status, service, handler, key, idempotency_key FROM invocations WHERE id = ?{for_update(tx)}",
        (invocation_id,),
    )
    if row is None:
        return "not_found", 0
    status, service, handler, key, idempotency_key = row
    if status not in TERMINAL_STATUSES:
        return "not_ended", 0
    if _is_workflow_run(workflow_services, service, handler, key, idempotency_key):
        await lock_name(tx, "key", service, key)
        if await tx.fetchone(_UNFINISHED_OF_KEY, (service, key)) is not None:
            return "workflow_busy", 0
        return "purged", await purge_workflow_key(tx, service, key)
    return "purged", await delete_invocations(tx, [invocation_id])


async def purge_invocations(
    tx: Tx,
    statuses: Sequence[InvocationStatus],
    service: str | None,
    ended_before_ms: int | None,
    limit: int,
    workflow_services: Collection[str],
) -> PurgeResult:
    where = [ENDED, f"status IN ({', '.join('?' * len(statuses))})"]
    params: list[object] = list(statuses)
    if service is not None:
        where.append("service = ?")
        params.append(service)
    if ended_before_ms is not None:
        where.append("completed_at_ms < ?")
        params.append(ended_before_ms)
    if workflow_services:
        # A run whose key still has unfinished invocations is left out here, not skipped below:
        # otherwise it would be picked again by every call and `more` would never become false.
        where.append(f"NOT ({_WORKFLOW_RUN} AND {strings_in(tx, 'service')} AND {_KEY_BUSY})")
        params.append(_list_encoder.encode(sorted(workflow_services)).decode())
    condition = " AND ".join(where)
    rows = await tx.fetchall(
        f"SELECT id, service, handler, key, idempotency_key FROM invocations WHERE {condition}"
        f" LIMIT ?{skip_locked(tx)}",
        (*params, limit),
    )
    purged = 0
    plain: list[str] = []
    gone: set[str] = set()
    for invocation_id, row_service, handler, key, idempotency_key in rows:
        if not _is_workflow_run(workflow_services, row_service, handler, key, idempotency_key):
            plain.append(invocation_id)
            continue
        await lock_name(tx, "key", row_service, key)
        if await tx.fetchone(_UNFINISHED_OF_KEY, (row_service, key)) is not None:
            continue  # a new invocation of the key arrived since the query above
        gone.update(
            r[0]
            for r in await tx.fetchall(
                "SELECT id FROM invocations WHERE service = ? AND key = ? AND status IN ('completed', 'failed')",
                (row_service, key),
            )
        )
        purged += await purge_workflow_key(tx, row_service, key)
    purged += await delete_invocations(tx, [i for i in plain if i not in gone])
    more = await tx.fetchone(f"SELECT 1 FROM invocations WHERE {condition} LIMIT 1", params) is not None
    return PurgeResult(purged=purged, more=more)
