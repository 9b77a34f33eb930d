"""Real processes on loopback: a proxy and handler instances, started, killed and restarted by tests.

``Cluster`` is one proxy (on SQLite); ``SharedCluster`` (``shared_cluster``) is several proxy instances
on one PostgreSQL database, on a fresh database of its own (skipped without
``DURABLE_TEST_POSTGRES_DSN``)."""

from __future__ import annotations

import asyncio
import functools
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx

from tests import postgres

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


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
        #: Stopped by ``pause`` (SIGSTOP) and not resumed yet.
        self.paused = False

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
        self.paused = False

    def pause(self) -> None:
        """SIGSTOP: the process keeps its sockets and database connections, and does nothing."""
        self.signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        self.signal(signal.SIGCONT)
        self.paused = False

    def alive(self) -> bool:
        """Started, not exited and not paused."""
        return self.popen is not None and self.popen.poll() is None and not self.paused

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


# ---------------------------------------------------------------------- several proxies on PostgreSQL


class ProxyInstance:
    """One proxy instance of a ``SharedCluster``: its process and its ports."""

    def __init__(self, instance_id: str, process: Process, port: int, admin_port: int) -> None:
        self.instance_id = instance_id
        self.process = process
        self.port = port
        self.admin_port = admin_port

    @property
    def ingress(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def stats(self, timeout_s: float = 10.0) -> dict[str, Any]:
        """``GET /instance``: its id, lease, and how many writes it fenced and invocations it took over."""
        response = httpx.get(f"{self.admin}/instance", timeout=timeout_s)
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()
        return found


class SharedCluster:
    """``proxies`` proxy instances on one PostgreSQL database (distinct ``--instance-id``, a short
    ``--lease-ms``) and ``instances`` handler instances, registered once (through the first proxy)."""

    def __init__(
        self,
        workdir: Path,
        dsn: str,
        *,
        proxies: int = 3,
        instances: int = 2,
        lease_ms: int = 1500,
        proxy_args: list[str] | None = None,
        app: str = "tests.processes.flows_app:app",
        expect_service: str = "Sleeper",
        service_env: dict[str, str] | None = None,
        prefix: str = "",
        pool_size: int = 6,
    ) -> None:
        self.workdir = workdir
        self.dsn = dsn
        self.lease_ms = lease_ms
        self.pool_size = pool_size
        self.proxy_args = proxy_args or []
        self.app = app
        self.prefix = prefix
        self.expect_service = expect_service
        self.gate_dir = workdir / "gate"
        self.gate_dir.mkdir(exist_ok=True)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        self.env = env
        self.service_env = {
            **env,
            "ORDER_LEDGER": str(workdir / "shop.db"),
            "FLOWS_LEDGER": str(workdir / "flows.db"),
            "GATE_DIR": str(self.gate_dir),
            **(service_env or {}),
        }
        self.proxies = [self._proxy(i) for i in range(proxies)]
        self.services = [self._service(i) for i in range(instances)]

    def _proxy(self, i: int) -> ProxyInstance:
        """Proxy instance ``i``, on ports free now."""
        instance_id = f"proxy-{i}"
        port, admin_port, callback_port = free_port(), free_port(), free_port()
        process = Process(
            instance_id,
            [sys.executable, "-m", "proxy", "serve", "--db", self.dsn, "--instance-id", instance_id,
             "--lease-ms", str(self.lease_ms), "--db-pool-size", str(self.pool_size), "--port", str(port),
             "--admin-port", str(admin_port), "--callback-port", str(callback_port),
             "--retry-initial-interval-ms", "50", "--retry-max-interval-ms", "1000", *self.proxy_args],
            self.env,
            self.workdir / f"{instance_id}.log",
            f"http://127.0.0.1:{admin_port}/health",
        )  # fmt: skip
        return ProxyInstance(instance_id, process, port, admin_port)

    def _service(self, i: int) -> Process:
        """Handler instance ``i``, on a port free now."""
        port = free_port()
        return Process(
            f"service-{i}",
            [sys.executable, "-m", "uvicorn", self.app, "--port", str(port), "--log-level", "warning"],
            self.service_env,
            self.workdir / f"service-{i}.log",
            f"http://127.0.0.1:{port}{self.prefix}/health",
        )

    def service_uri(self, i: int) -> str:
        return self.services[i].health_url.removesuffix("/health")

    def start(self) -> None:
        processes = [*(p.process for p in self.proxies), *self.services]
        for process in processes:
            process.spawn()
        for i, proxy in enumerate(self.proxies):
            self.proxies[i] = _ready(proxy, _process_of, functools.partial(self._proxy, i))
        for i, service in enumerate(self.services):
            self.services[i] = _ready(service, _itself, functools.partial(self._service, i))
        first = self.proxies[0]
        for i in range(len(self.services)):
            response = httpx.post(f"{first.admin}/deployments", json={"uri": self.service_uri(i)}, timeout=30)
            assert response.status_code == 201, response.text
            assert self.expect_service in response.json()["services"], response.text
        # The others hear of the deployment through a broadcast and reload their registries.
        for proxy in self.proxies:
            knows = functools.partial(_knows, proxy, self.expect_service, len(self.services))
            wait_until(knows, f"{proxy.instance_id} to know the deployment")

    def stop(self) -> None:
        for process in [*self.services, *(p.process for p in self.proxies)]:
            process.stop()

    def live(self) -> list[ProxyInstance]:
        """The proxy instances running now (not killed, not paused)."""
        return [p for p in self.proxies if p.process.alive()]

    def invocation(self, invocation_id: str, via: ProxyInstance | None = None) -> dict[str, Any]:
        """``GET /invocations/{id}`` on ``via``, or on the first live instance."""
        proxy = via or self.live()[0]
        response = httpx.get(f"{proxy.admin}/invocations/{invocation_id}", timeout=10)
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()
        return found

    def query(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        """Rows of one query on the shared database, read directly (as an operator would)."""
        return query(self.dsn, sql, *args)

    def log(self) -> str:
        """Every proxy's log, one after another."""
        return "\n".join(p.process.output() for p in self.proxies)


def _ready(item: T, process_of: Callable[[T], Process], rebuild: Callable[[], T], tries: int = 3) -> T:
    """``item`` once its (spawned) process is healthy. When the process could not bind a port (taken by
    someone else since ``free_port`` found it free), ``rebuild()`` makes one on other ports, started here."""
    for _ in range(tries):
        process = process_of(item)
        try:
            process.wait_ready()
            return item
        except AssertionError:
            if not process.exited() or "address already in use" not in process.output().lower():
                raise
        item = rebuild()
        process_of(item).spawn()
    process_of(item).wait_ready()
    return item


def _process_of(proxy: ProxyInstance) -> Process:
    return proxy.process


def _itself(process: Process) -> Process:
    return process


def _knows(proxy: ProxyInstance, service: str, endpoints: int) -> bool:
    try:
        response = httpx.get(f"{proxy.admin}/deployments", timeout=5)
    except httpx.HTTPError:
        return False
    deployments = response.json()["deployments"] if response.status_code == 200 else []
    found = [d for d in deployments if service in d["services"]]
    return sum(len(d["endpoints"]) for d in found) >= endpoints


def query(dsn: str, sql: str, *args: object) -> list[tuple[Any, ...]]:
    """Rows of one query on the database at ``dsn``."""

    async def run() -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(dsn)
        try:
            return [tuple(row) for row in await conn.fetch(sql, *args)]
        finally:
            await conn.close()

    return asyncio.run(run())


@contextmanager
def shared_cluster(workdir: Path, **kwargs: Any) -> Iterator[SharedCluster]:
    """A ``SharedCluster`` on a fresh database of its own (skipped without ``DURABLE_TEST_POSTGRES_DSN``),
    dropped at the end with the processes stopped."""
    postgres.require_server()
    database = f"dp_test_multi_{secrets.token_hex(8)}"
    dsn = postgres.create_database_sync(database)
    try:
        c = SharedCluster(workdir, dsn, **kwargs)
        try:
            c.start()
            yield c
        finally:
            c.stop()
    finally:
        postgres.drop_database_sync(database)
