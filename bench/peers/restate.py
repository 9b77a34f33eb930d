"""Restate: restate-server from npm, and a Python service on restate-sdk served by hypercorn.

Install (once, under ``$DURABLE_BENCH_HOME/restate``): the npm package
``@restatedev/restate-server`` (its linux-x64 binary ships inside the
platform package ``@restatedev/restate-server-linux-x64``) and a virtualenv
with ``restate-sdk[serde]`` and ``hypercorn``.

Run: one restate-server with a fresh ``--base-dir``, on loopback ports chosen
per run, telemetry off and durability at its defaults; the service
``services/restate_service.py`` (``noop`` and ``steps3``). It is measured in
two ways, registered twice:

``bidi``
    the default registration: HTTP/2, one bidirectional stream per
    invocation; each step's result is acknowledged on the stream once it is
    durable. Restate's fast mode, and the main row.
``request-response``
    registered with ``use_http_11: true``: the service answers after each
    step, and the server invokes it again with the journal, as durable-proxy
    does with an endpoint that suspends.

The service is stopped with SIGINT (restate-sdk installs its own SIGTERM
handler), the server with SIGTERM.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import time
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
    run_logged,
    write_marker,
)
from bench.processes import Process, StartError, free_port, http_get, http_post_json

SERVER_VERSION = "1.7.12"
SDK_VERSION = "1.3.0"
_NPM_PACKAGE = "@restatedev/restate-server"
_REQUIREMENTS = [f"restate-sdk[serde]=={SDK_VERSION}", "hypercorn", "uvloop"]

_CONFIG = """\
# restate-server for the durable-proxy benchmark: one node, loopback only.
# Durability is left at the server's defaults.
cluster-name = "durable-proxy-bench"
node-name = "n1"
bind-address = "127.0.0.1:{node_port}"
advertised-address = "http://127.0.0.1:{node_port}/"
listen-mode = "tcp"
disable-telemetry = true
log-filter = "warn,restate=warn"

[admin]
bind-address = "127.0.0.1:{admin_port}"

[ingress]
bind-address = "127.0.0.1:{ingress_port}"
"""


class Restate(Peer):
    name = "restate"

    def __init__(self) -> None:
        self.home = bench_home() / "restate"
        self.server_bin: Path | None = None
        self.python: Path | None = None
        self.server: Process | None = None
        self.services: dict[str, Process] = {}
        self.ingress = ""
        self.admin = ""
        self.variant = "bidi"
        self.versions: dict[str, str] = {}
        self.deployments: dict[str, Any] = {}

    # ------------------------------------------------------------------ install

    def install(self) -> dict[str, str]:
        if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
            raise PeerUnavailable(f"restate-server from npm is used on linux-x64 only, not {platform.machine()}")
        marker = self.home / "installed.json"
        wanted = {"restate-server": SERVER_VERSION, "restate-sdk": SDK_VERSION}
        found = read_marker(marker)
        if {k: found.get(k) for k in wanted} == wanted and Path(found.get("server_bin", "")).is_file():
            self.server_bin = Path(found["server_bin"])
            self.python = self.home / "venv" / "bin" / "python"
            if self.python.exists():
                self.versions = {**wanted, "hypercorn": found.get("hypercorn", "unknown")}
                return self.versions
        self.home.mkdir(parents=True, exist_ok=True)
        log = self.home / "install.log"
        npm_dir = self.home / "npm"
        npm_dir.mkdir(exist_ok=True)
        package_json = npm_dir / "package.json"
        if not package_json.exists():
            package_json.write_text(json.dumps({"name": "durable-proxy-bench-restate", "private": True}) + "\n")
        # SCARF_ANALYTICS=false: the npm wrapper's analytics dependency must not phone home.
        env = {**os.environ, "SCARF_ANALYTICS": "false"}
        run_logged(
            ["npm", "install", "--no-audit", "--no-fund", f"{_NPM_PACKAGE}@{SERVER_VERSION}"],
            log,
            what="npm install restate-server",
            env=env,
            cwd=npm_dir,
        )
        candidates = sorted(
            (npm_dir / "node_modules" / "@restatedev").glob("restate-server-linux-x64*/**/restate-server")
        )
        binaries = [path for path in candidates if path.is_file()]
        if not binaries:
            raise PeerUnavailable(f"the restate-server binary was not found under {npm_dir}/node_modules")
        server_bin = binaries[0]
        server_bin.chmod(0o755)
        version = run_logged([str(server_bin), "--version"], log, what="restate-server --version").strip()
        if SERVER_VERSION not in version:
            raise PeerUnavailable(f"installed restate-server says {version!r}, not {SERVER_VERSION}")
        python = ensure_venv(self.home / "venv", _REQUIREMENTS, log)
        hypercorn = package_version(python, "hypercorn")
        write_marker(marker, {**wanted, "server_bin": str(server_bin), "hypercorn": hypercorn})
        self.server_bin, self.python = server_bin, python
        self.versions = {**wanted, "hypercorn": hypercorn}
        return self.versions

    # ------------------------------------------------------------------ run

    def start(self, workdir: Path) -> None:
        if self.server_bin is None or self.python is None:
            raise PeerUnavailable("restate is not installed")
        workdir.mkdir(parents=True, exist_ok=True)
        node_port, admin_port, ingress_port = free_port(), free_port(), free_port()
        config = workdir / "restate.toml"
        config.write_text(_CONFIG.format(node_port=node_port, admin_port=admin_port, ingress_port=ingress_port))
        self.admin = f"http://127.0.0.1:{admin_port}"
        self.ingress = f"http://127.0.0.1:{ingress_port}"
        self.server = Process(
            "restate-server",
            [str(self.server_bin), "--no-logo", "-c", str(config), "--base-dir", str(workdir / "data")],
            workdir / "restate-server.log",
            env={**os.environ, "RUST_BACKTRACE": "0"},
            cwd=workdir,
        ).spawn()
        try:
            self.server.wait_healthy(f"{self.admin}/health", timeout_s=90)
            self.server.wait_healthy(f"{self.ingress}/restate/health", timeout_s=90)
        except StartError as exc:
            raise PeerUnavailable(f"restate-server did not start: {exc}") from exc
        self._start_service(workdir, "bidi", use_http_11=False)

    def _start_service(self, workdir: Path, variant: str, *, use_http_11: bool) -> None:
        assert self.python is not None
        port = free_port()
        service = Process(
            f"restate-service-{variant}",
            [str(self.python), str(SERVICES / "restate_service.py"), "--port", str(port)],
            workdir / f"restate-service-{variant}.log",
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            cwd=workdir,
            stop_signal=signal.SIGINT,
        ).spawn()
        self.services[variant] = service
        try:
            service.wait_healthy(f"http://127.0.0.1:{port}/health", timeout_s=60)
        except StartError as exc:
            raise PeerUnavailable(f"the restate service did not start: {exc}") from exc
        # A newer deployment of the same service takes the new invocations.
        status, answer = http_post_json(
            f"{self.admin}/deployments", {"uri": f"http://127.0.0.1:{port}", "use_http_11": use_http_11}
        )
        if status >= 300:
            raise PeerUnavailable(f"registering the restate service failed: {status} {answer}")
        self.deployments[variant] = answer
        self.variant = variant
        self._wait_routable(port)

    def _wait_routable(self, port: int, timeout_s: float = 30.0) -> None:
        """Wait until the ingress routes new invocations to the deployment on ``port``."""
        deadline = time.monotonic() + timeout_s
        last: Any = None
        while time.monotonic() < deadline:
            before = _invocations_served(port)
            try:
                status, last = http_post_json(f"{self.ingress}/bench/noop", "ready", timeout_s=10)
            except OSError as exc:
                status, last = 0, str(exc)
            if status == 200 and _invocations_served(port) > before:
                return
            time.sleep(0.2)
        raise PeerUnavailable(f"the restate ingress did not route to the deployment on port {port}: {last}")

    def variants(self) -> list[str]:
        return ["bidi", "request-response"]

    def use_variant(self, variant: str) -> None:
        if variant == self.variant:
            return
        if variant != "request-response" or self.server is None:
            raise ValueError(f"unknown restate variant {variant!r}")
        workdir = self.server.cwd
        self._start_service(workdir, variant, use_http_11=True)

    def workloads(self) -> dict[str, Workload]:
        return {
            "noop": Workload(f"{self.ingress}/bench/noop", '"r{i}"'),
            "steps3": Workload(f"{self.ingress}/bench/steps3", '"r{i}"'),
        }

    def pids(self) -> dict[str, int]:
        assert self.server is not None
        return {"restate-server": self.server.pid, "service": self.services[self.variant].pid}

    def describe(self) -> dict[str, Any]:
        return {
            "versions": self.versions,
            "variant": self.variant,
            "row_label": self.variant,
            "variants": {
                "bidi": "default registration: HTTP/2 (h2c) bidirectional stream per invocation",
                "request-response": "registered with use_http_11: true; the service is re-invoked after each step",
            },
            "service": "restate-sdk on hypercorn (uvloop), one process",
            "durability": "restate-server defaults (single node, replicated loglet on the local log-server, "
            "RocksDB WAL fsynced per write batch)",
            "telemetry": "disabled",
        }

    def stop(self) -> None:
        for service in self.services.values():
            service.stop(grace_s=5)
        if self.server is not None:
            self.server.stop(grace_s=15)


def _invocations_served(port: int) -> int:
    """How many invocations the service on ``port`` has been sent (its ``/stats``)."""
    try:
        status, body = http_get(f"http://127.0.0.1:{port}/stats")
        return int(json.loads(body)["invocations"]) if status == 200 else -1
    except (OSError, ValueError, KeyError):
        return -1
