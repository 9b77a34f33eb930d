"""The SQL of the SQLite store, part 5: deployments, services and the per-database secret (see ``_sqlite_ops``)."""

from __future__ import annotations

import sqlite3

import msgspec

from handler_sdk.protocol import ServiceManifest
from proxy.store.base import Deployment, ServiceRow

SECRET_KEY = "token_secret"


def read_secret(conn: sqlite3.Connection) -> bytes | None:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (SECRET_KEY,)).fetchone()
    return None if row is None else bytes(row[0])


def ensure_secret(conn: sqlite3.Connection, candidate: bytes) -> bytes:
    """Store ``candidate`` as the secret unless the database already has one; return the stored one."""
    conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", (SECRET_KEY, candidate))
    secret = read_secret(conn)
    assert secret is not None
    return secret


def get_deployment(conn: sqlite3.Connection, deployment_id: str) -> Deployment | None:
    row = conn.execute("SELECT id, manifest, created_at_ms FROM deployments WHERE id = ?", (deployment_id,)).fetchone()
    if row is None:
        return None
    endpoints = conn.execute(
        "SELECT uri FROM deployment_endpoints WHERE deployment_id = ? ORDER BY created_at_ms, uri", (deployment_id,)
    ).fetchall()
    return Deployment(id=row[0], manifest=row[1], endpoints=[e[0] for e in endpoints], created_at_ms=row[2])


def list_deployments(conn: sqlite3.Connection) -> list[Deployment]:
    endpoints: dict[str, list[str]] = {}
    for deployment_id, uri in conn.execute(
        "SELECT deployment_id, uri FROM deployment_endpoints ORDER BY created_at_ms, uri"
    ).fetchall():
        endpoints.setdefault(deployment_id, []).append(uri)
    rows = conn.execute("SELECT id, manifest, created_at_ms FROM deployments ORDER BY created_at_ms, id").fetchall()
    return [Deployment(id=r[0], manifest=r[1], endpoints=endpoints.get(r[0], []), created_at_ms=r[2]) for r in rows]


def list_services(conn: sqlite3.Connection) -> list[ServiceRow]:
    rows = conn.execute("SELECT name, deployment_id, manifest, modified_at_ms FROM services ORDER BY name").fetchall()
    return [ServiceRow(name=r[0], deployment_id=r[1], manifest=r[2], modified_at_ms=r[3]) for r in rows]


def register_deployment(
    conn: sqlite3.Connection,
    deployment_id: str,
    uri: str,
    manifest: bytes,
    services: list[ServiceManifest],
    now_ms: int,
) -> Deployment:
    """``services`` is the decoded ``manifest``; decoding happens before the job so bad input never queues."""
    same = conn.execute(
        "SELECT d.id FROM deployment_endpoints e JOIN deployments d ON d.id = e.deployment_id"
        " WHERE e.uri = ? AND d.manifest = ?",
        (uri, manifest),
    ).fetchone()
    if same is not None:  # a re-registration of the same endpoint: nothing changes
        found = get_deployment(conn, same[0])
        assert found is not None
        return found
    twin = conn.execute(
        "SELECT id FROM deployments WHERE manifest = ? ORDER BY created_at_ms, id LIMIT 1", (manifest,)
    ).fetchone()
    if twin is not None:
        chosen = str(twin[0])
    else:
        chosen = deployment_id
        conn.execute(
            "INSERT INTO deployments (id, manifest, created_at_ms) VALUES (?, ?, ?)", (chosen, manifest, now_ms)
        )
    conn.execute(
        "INSERT INTO deployment_endpoints (uri, deployment_id, created_at_ms) VALUES (?, ?, ?)"
        " ON CONFLICT (uri) DO UPDATE SET deployment_id = excluded.deployment_id,"
        " created_at_ms = excluded.created_at_ms",
        (uri, chosen, now_ms),
    )
    conn.executemany(
        "INSERT INTO services (name, deployment_id, manifest, modified_at_ms) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (name) DO UPDATE SET deployment_id = excluded.deployment_id, manifest = excluded.manifest,"
        " modified_at_ms = excluded.modified_at_ms",
        [(service.name, chosen, msgspec.json.encode(service), now_ms) for service in services],
    )
    deployment = get_deployment(conn, chosen)
    assert deployment is not None
    return deployment


def remove_endpoint(conn: sqlite3.Connection, uri: str) -> bool:
    return conn.execute("DELETE FROM deployment_endpoints WHERE uri = ?", (uri,)).rowcount > 0
