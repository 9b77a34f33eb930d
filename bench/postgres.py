"""durable-proxy on PostgreSQL: the 3-step workload with one proxy instance, then with several.

Each instance count gets a fresh database (``--postgres-db``, dropped and
created again on the server of ``--postgres-url``), its proxies (each with
its own ports and ``--instance-id``), and the benchmark app registered once,
through the first instance. The driver spreads the requests over every
instance's ingress. The server is used as it is configured: its version and
durability settings go into the report. When it runs on this machine, the
driver samples its CPU as ``postgres``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.backends import PostgresBackend, PostgresUnavailable, postgres_server
from bench.ours import Settings, log, run_ours, three_step_phases


def run_postgres(
    settings: Settings,
    server_url: str,
    database: str,
    instance_counts: list[int],
    workdir: Path,
    only: list[str],
    *,
    keep: bool = False,
) -> dict[str, Any]:
    """The 3-step phases of ``only`` with each number of instances; ``status`` says why none ran."""
    results: dict[str, Any] = {"status": "ok", "server": None, "runs": {}, "failed": [], "errors": 0}
    scenario = three_step_phases(only)
    if scenario is None:
        results["status"] = "not run: the scenarios chosen have no 3-step phase (latency, throughput or steps3)"
        return results
    try:
        server = postgres_server(server_url)
    except PostgresUnavailable as exc:
        log(f"[postgresql] unavailable: {exc}")
        results["status"] = f"unavailable: {exc}"
        return results
    results["server"] = server
    log(
        f"[postgresql] PostgreSQL {server['version']} at {server['url']}: synchronous_commit="
        f"{server['synchronous_commit']}, fsync={server['fsync']}; database {database}"
        + ("" if server["cpu_sampled"] else "; its CPU is not sampled (not a process of this machine)")
    )
    for count in instance_counts:
        key = f"x{count}"

        def backend(count: int = count) -> PostgresBackend:
            return PostgresBackend(server_url, database=database, instances=count, server=server, keep=keep)

        run = run_ours(
            settings, backend, workdir / f"postgresql-{key}", [scenario.name], scenarios=(scenario,), tag=f"pg×{count}"
        )
        results["runs"][key] = run
        results["failed"] += [f"{key}.{name}" for name in run["failed"]]
        results["errors"] += run["errors"]
    return results
