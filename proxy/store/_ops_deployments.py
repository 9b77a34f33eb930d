"""The SQL of the journal store, part 5: deployments, services and the per-database secret (see ``_ops``)."""

from __future__ import annotations

import msgspec

from handler_sdk.protocol import ServiceManifest
from proxy.store._ops import UNFINISHED
from proxy.store._tx import Tx, lock_name
from proxy.store.base import Deployment, RemovedDeployment, ServiceRow

SECRET_KEY = "token_secret"


async def read_secret(tx: Tx) -> bytes | None:
    row = await tx.fetchone("SELECT value FROM meta WHERE key = ?", (SECRET_KEY,))
    return None if row is None else bytes(row[0])


async def ensure_secret(tx: Tx, candidate: bytes) -> bytes:
    """Store ``candidate`` as the secret unless the database already has one; return the stored one."""
    await tx.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT DO NOTHING", (SECRET_KEY, candidate))
    secret = await read_secret(tx)
    assert secret is not None
    return secret


async def get_deployment(tx: Tx, deployment_id: str) -> Deployment | None:
    row = await tx.fetchone("SELECT id, manifest, created_at_ms FROM deployments WHERE id = ?", (deployment_id,))
    if row is None:
        return None
    endpoints = await tx.fetchall(
        "SELECT uri FROM deployment_endpoints WHERE deployment_id = ? ORDER BY created_at_ms, uri", (deployment_id,)
    )
    return Deployment(id=row[0], manifest=row[1], endpoints=[e[0] for e in endpoints], created_at_ms=row[2])


async def list_deployments(tx: Tx) -> list[Deployment]:
    endpoints: dict[str, list[str]] = {}
    for deployment_id, uri in await tx.fetchall(
        "SELECT deployment_id, uri FROM deployment_endpoints ORDER BY created_at_ms, uri"
    ):
        endpoints.setdefault(deployment_id, []).append(uri)
    rows = await tx.fetchall("SELECT id, manifest, created_at_ms FROM deployments ORDER BY created_at_ms, id")
    return [Deployment(id=r[0], manifest=r[1], endpoints=endpoints.get(r[0], []), created_at_ms=r[2]) for r in rows]


async def list_services(tx: Tx) -> list[ServiceRow]:
    rows = await tx.fetchall("SELECT name, deployment_id, manifest, modified_at_ms FROM services ORDER BY name")
    return [ServiceRow(name=r[0], deployment_id=r[1], manifest=r[2], modified_at_ms=r[3]) for r in rows]


async def register_deployment(
    tx: Tx,
    deployment_id: str,
    uri: str,
    manifest: bytes,
    services: list[ServiceManifest],
    now_ms: int,
) -> Deployment:
    """``services`` is the decoded ``manifest``; decoding happens before the job so bad input never queues."""
    await lock_name(tx, "deployments")  # concurrent registrations of one manifest make one deployment
    same = await tx.fetchone(
        "SELECT d.id FROM deployment_endpoints e JOIN deployments d ON d.id = e.deployment_id"
        " WHERE e.uri = ? AND d.manifest = ?",
        (uri, manifest),
    )
    if same is not None:  # a re-registration of the same endpoint: nothing changes
        found = await get_deployment(tx, same[0])
        assert found is not None
        return found
    twin = await tx.fetchone(
        "SELECT id FROM deployments WHERE manifest = ? ORDER BY created_at_ms, id LIMIT 1", (manifest,)
    )
    if twin is not None:
        chosen = str(twin[0])
    else:
        chosen = deployment_id
        await tx.execute(
            "INSERT INTO deployments (id, manifest, created_at_ms) VALUES (?, ?, ?)", (chosen, manifest, now_ms)
        )
    await tx.execute(
        "INSERT INTO deployment_endpoints (uri, deployment_id, created_at_ms) VALUES (?, ?, ?)"
        " ON CONFLICT (uri) DO UPDATE SET deployment_id = excluded.deployment_id,"
        " created_at_ms = excluded.created_at_ms",
        (uri, chosen, now_ms),
    )
    await tx.executemany(
        "INSERT INTO services (name, deployment_id, manifest, modified_at_ms) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (name) DO UPDATE SET deployment_id = excluded.deployment_id, manifest = excluded.manifest,"
        " modified_at_ms = excluded.modified_at_ms",
        [(service.name, chosen, msgspec.json.encode(service), now_ms) for service in services],
    )
    deployment = await get_deployment(tx, chosen)
    assert deployment is not None
    return deployment


async def remove_endpoint(tx: Tx, uri: str) -> bool:
    return await tx.execute("DELETE FROM deployment_endpoints WHERE uri = ?", (uri,)) > 0


async def remove_deployment(tx: Tx, deployment_id: str) -> RemovedDeployment:
    await lock_name(tx, "deployments")  # no registration joins it while it goes
    if await tx.fetchone("SELECT 1 FROM deployments WHERE id = ?", (deployment_id,)) is None:
        return RemovedDeployment(outcome="not_found")
    services = [
        str(r[0])
        for r in await tx.fetchall("SELECT name FROM services WHERE deployment_id = ? ORDER BY name", (deployment_id,))
    ]
    row = await tx.fetchone(
        f"SELECT count(*) FROM invocations WHERE {UNFINISHED} AND deployment_id = ?", (deployment_id,)
    )
    unfinished = 0 if row is None else int(row[0])
    if services or unfinished:
        return RemovedDeployment(outcome="in_use", services=services, unfinished=unfinished)
    await tx.execute("DELETE FROM deployment_endpoints WHERE deployment_id = ?", (deployment_id,))
    await tx.execute("DELETE FROM deployments WHERE id = ?", (deployment_id,))
    return RemovedDeployment(outcome="removed")
