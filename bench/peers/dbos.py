"""DBOS Transact (Python): workflows run in-process by an HTTP service, journaled in SQLite.

Install (once, under ``$DURABLE_BENCH_HOME/dbos``): a virtualenv with ``dbos``,
``uvicorn``, ``starlette``, ``uvloop`` and ``httptools``.

Run: ``services/dbos_service.py`` serves ``POST /{sync|async}/{noop|steps3}``;
each route runs a DBOS workflow in-process (0 or 3 steps, each returning a
short string) and answers its result. Sync workflows run in Starlette's
thread pool; async ones on the event loop. The system database is a fresh
SQLite file set to WAL before DBOS opens it: DBOS leaves SQLite in its
rollback-journal mode, and WAL is its faster configuration. DBOS does not
change ``synchronous``, so SQLite's default (FULL) applies.

Both workflow styles are probed with a short sequential run of the 3-step
workflow, and the faster is measured; the probe's figures are kept.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

from bench.peers import (
    SERVICES,
    Peer,
    PeerUnavailable,
    Workload,
    bench_home,
    ensure_venv,
    package_version,
    read_marker,
    write_marker,
)
from bench.processes import Process, StartError, free_port, http_get

DBOS_VERSION = "3.4.0"
_REQUIREMENTS = [f"dbos=={DBOS_VERSION}", "uvicorn", "starlette", "uvloop", "httptools"]


class Dbos(Peer):
    name = "dbos"

    def __init__(self) -> None:
        self.home = bench_home() / "dbos"
        self.python: Path | None = None
        self.service: Process | None = None
        self.base = ""
        self.variant = "sync"
        self.versions: dict[str, str] = {}
        self.database: dict[str, Any] = {}

    def install(self) -> dict[str, str]:
        marker = self.home / "installed.json"
        python = self.home / "venv" / "bin" / "python"
        found = read_marker(marker)
        if found.get("dbos") == DBOS_VERSION and python.exists():
            self.python = python
            self.versions = {key: str(value) for key, value in found.items()}
            return self.versions
        self.home.mkdir(parents=True, exist_ok=True)
        log = self.home / "install.log"
        self.python = ensure_venv(self.home / "venv", _REQUIREMENTS, log)
        self.versions = {name: package_version(self.python, name) for name in ("dbos", "sqlalchemy", "uvicorn")}
        if self.versions["dbos"] != DBOS_VERSION:
            raise PeerUnavailable(f"dbos {self.versions['dbos']} is installed, not {DBOS_VERSION}")
        write_marker(marker, self.versions)
        return self.versions

    def start(self, workdir: Path) -> None:
        if self.python is None:
            raise PeerUnavailable("dbos is not installed")
        workdir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        db = workdir / "dbos.sqlite"
        self.base = f"http://127.0.0.1:{port}"
        self.service = Process(
            "dbos-service",
            [str(self.python), str(SERVICES / "dbos_service.py"), "--port", str(port), "--db", str(db), "--wal"],
            workdir / "dbos-service.log",
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            cwd=workdir,
            stop_signal=signal.SIGTERM,
        ).spawn()
        try:
            self.service.wait_healthy(f"{self.base}/health", timeout_s=90)
        except StartError as exc:
            raise PeerUnavailable(f"the DBOS service did not start: {exc}") from exc
        status, body = http_get(f"{self.base}/health")
        self.database = json.loads(body) if status == 200 else {}

    def variants(self) -> list[str]:
        return ["sync", "async"]

    def use_variant(self, variant: str) -> None:
        if variant not in self.variants():
            raise ValueError(f"unknown DBOS variant {variant!r}")
        self.variant = variant

    def workloads(self) -> dict[str, Workload]:
        return {
            "noop": Workload(f"{self.base}/{self.variant}/noop", '"r{i}"'),
            "steps3": Workload(f"{self.base}/{self.variant}/steps3", '"r{i}"'),
        }

    def pids(self) -> dict[str, int]:
        assert self.service is not None
        return {"dbos-service": self.service.pid}

    def describe(self) -> dict[str, Any]:
        return {
            "versions": self.versions,
            "variant": self.variant,
            "row_label": f"{self.variant} workflows, SQLite {self.database.get('journal_mode', '?')}",
            "variants": {
                "sync": "sync workflows, run by the route in Starlette's thread pool",
                "async": "async workflows, awaited by the route on the event loop",
            },
            "service": "uvicorn (uvloop, httptools) + Starlette, one process; workflows run in-process",
            "database": self.database,
        }

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop(grace_s=10)
