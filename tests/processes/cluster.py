"""Real processes on loopback: a proxy and handler instances, started, killed and restarted by tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(check: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


class Process:
    def __init__(self, name: str, args: list[str], env: dict[str, str], log: Path, health_url: str) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.log = log
        self.health_url = health_url
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.spawn()
        self.wait_ready()

    def spawn(self) -> None:
        """Start the process without waiting for it (``wait_ready`` does), so several can boot at once."""
        with open(self.log, "ab") as out:
            self.popen = subprocess.Popen(
                self.args, env=self.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait_ready(self) -> None:
        wait_until(self._ready, f"{self.name} to become healthy (log: {self.log})")

    def _ready(self) -> bool:
        assert self.popen is not None
        if self.popen.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.popen.returncode}:\n{self.log.read_text()[-3000:]}")
        return _healthy(self.health_url)

    def exited(self) -> bool:
        """The process has ended (it was started, and is not running now)."""
        return self.popen is not None and self.popen.poll() is not None

    def restart(self) -> None:
        """Start the process again after it died (or was killed), with the same arguments and environment."""
        assert self.popen is not None
        self.popen.wait(timeout=10)
        self.start()

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def kill9(self) -> None:
        assert self.popen is not None
        os.kill(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)

    def signal(self, sig: signal.Signals) -> None:
        assert self.popen is not None
        os.kill(self.popen.pid, sig)

    def stop(self) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        try:
            os.kill(self.popen.pid, signal.SIGCONT)
            self.popen.terminate()
            self.popen.wait(timeout=10)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            self.popen.kill()
            self.popen.wait(timeout=10)

    def output(self) -> str:
        return self.log.read_text()


class Cluster:
    """One proxy and N instances of the instrumented order service."""

    def __init__(
        self,
        workdir: Path,
        instances: int = 2,
        proxy_args: list[str] | None = None,
        app: str = "tests.processes.order_app:app",
        expect_service: str = "OrderService",
        service_env: dict[str, str] | None = None,
        prefix: str = "/durable",
        proxy_env: dict[str, str] | None = None,
    ) -> None:
        self.expect_service = expect_service
        self.workdir = workdir
        self.gate_dir = workdir / "gate"
        self.gate_dir.mkdir()
        self.ledger = workdir / "shop.db"
        self.db = workdir / "proxy.db"
        self.port = free_port()
        self.admin_port = free_port()
        self.callback_port = free_port()
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        #: The environment of the CLI commands the cluster runs (``register``).
        self.env = env
        self.proxy = Process(
            "proxy",
            [sys.executable, "-m", "proxy", "serve", "--db", str(self.db), "--port", str(self.port),
             "--admin-port", str(self.admin_port), "--callback-port", str(self.callback_port),
             "--retry-initial-interval-ms", "50", *(proxy_args or [])],
            {**env, **(proxy_env or {})},
            workdir / "proxy.log",
            f"http://127.0.0.1:{self.admin_port}/health",
        )  # fmt: skip
        service_env = {
            **env,
            "ORDER_LEDGER": str(self.ledger),
            "FLOWS_LEDGER": str(workdir / "flows.db"),
            "GATE_DIR": str(self.gate_dir),
            **(service_env or {}),
        }
        self.services: list[Process] = []
        for i in range(instances):
            port = free_port()
            self.services.append(
                Process(
                    f"service-{i}",
                    [
                        sys.executable,
                        "-m",
                        "uvicorn",
                        app,
                        "--port",
                        str(port),
                        "--log-level",
                        "warning",
                    ],
                    service_env,
                    workdir / f"service-{i}.log",
                    f"http://127.0.0.1:{port}{prefix}/health",
                )
            )

    @property
    def ingress(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def service_uri(self, i: int) -> str:
        return self.services[i].health_url.removesuffix("/health")

    def start(self) -> None:
        processes = [self.proxy, *self.services]
        for process in processes:
            process.spawn()
        for process in processes:
            process.wait_ready()
        for i in range(len(self.services)):
            result = subprocess.run(
                [sys.executable, "-m", "proxy", "register", self.service_uri(i), "--admin-url", self.admin],
                cwd=ROOT,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert result.returncode == 0, result.stderr
            assert self.expect_service in result.stdout, result.stdout

    def stop(self) -> None:
        for process in [*self.services, self.proxy]:
            process.stop()

    def holder_pid(self, timeout_s: float = 30.0) -> int:
        holder = self.gate_dir / "holder"
        wait_until(holder.exists, "an instance to reach the gated step", timeout_s)
        return int(holder.read_text())

    def release_gate(self) -> None:
        (self.gate_dir / "release").touch()

    def service_by_pid(self, pid: int) -> Process:
        return next(s for s in self.services if s.pid == pid)

    def invocation(self, invocation_id: str) -> dict[str, Any]:
        response = httpx.get(f"{self.admin}/invocations/{invocation_id}", timeout=10)
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()
        return found


@contextmanager
def cluster(
    workdir: Path,
    instances: int = 2,
    proxy_args: list[str] | None = None,
    app: str = "tests.processes.order_app:app",
    expect_service: str = "OrderService",
    service_env: dict[str, str] | None = None,
    prefix: str = "/durable",
    proxy_env: dict[str, str] | None = None,
) -> Iterator[Cluster]:
    c = Cluster(workdir, instances, proxy_args, app, expect_service, service_env, prefix, proxy_env)
    try:
        c.start()
        yield c
    finally:
        c.stop()
