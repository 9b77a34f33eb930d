"""The processes of a chaos run and the nemesis that kills, restarts, pauses and resumes them.

``ChaosCluster`` is one proxy and two instances of ``tests.chaos.app`` on
loopback, each a restartable ``Proc`` with a fixed port. ``Nemesis`` injects a
fault every 1-3 s (seeded): kill -9 of the proxy or of an instance, restarted
after 0.2-1 s, or SIGSTOP of an instance for 0.5-2 s, then SIGCONT. Before it
restarts a killed proxy it runs ``PRAGMA integrity_check`` on the proxy's
database over a read-only connection. Every fault is recorded.

On PostgreSQL (``dsn``) the cluster runs several proxy instances on the one
database (``proxy-0``, ``proxy-1``...; ``--instance-id`` and a short
``--lease-ms``); the nemesis also SIGSTOPs proxies (``proxy_pause``), for
longer than the lease (``proxy_pause_s``) so that the others take their
attempts over, and never faults the last proxy left running.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Literal

import httpx

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.chaos.app:app"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Proc:
    """A process that can be killed and started again with the same arguments (and port)."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log: Path, health_url: str) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.log = log
        self.health_url = health_url
        self.popen: subprocess.Popen[bytes] | None = None
        self.paused = False

    def spawn(self) -> None:
        with open(self.log, "ab") as out:
            self.popen = subprocess.Popen(
                self.args, env=self.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def healthy(self) -> bool:
        try:
            return httpx.get(self.health_url, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_healthy(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.healthy():
            assert self.popen is not None
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.popen.returncode}:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not become healthy in {timeout_s:g}s:\n{self.tail()}")
            time.sleep(0.02)

    def start(self) -> None:
        self.spawn()
        self.wait_healthy()

    def kill9(self) -> None:
        assert self.popen is not None
        os.kill(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=30)
        self.paused = False

    def pause(self) -> None:
        assert self.popen is not None
        os.kill(self.popen.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        assert self.popen is not None
        os.kill(self.popen.pid, signal.SIGCONT)
        self.paused = False

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

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""


class ChaosCluster:
    """One proxy (or, on PostgreSQL, ``proxies`` of them on one database) and ``instances`` instances of
    the interpreter service, registered as one deployment."""

    def __init__(
        self,
        workdir: Path,
        *,
        instances: int = 2,
        inactivity_timeout_ms: int = 1000,
        retry_max_attempts: int = 200,
        dsn: str | None = None,
        proxies: int = 1,
        lease_ms: int = 2000,
    ) -> None:
        """``retry_max_attempts`` is high: the run checks durability under constant faults, not the retry
        budget, which a few unlucky invocations would use up (each proxy kill ends an attempt of every
        running invocation, and attempts that ended suspended count too) and then wait, paused, for an
        operator. ``inactivity_timeout_ms`` is low, so attempts on a stopped instance are abandoned and
        fenced while it is stopped. With ``dsn`` (a PostgreSQL database) the proxies share it."""
        if dsn is None and proxies != 1:
            raise ValueError("several proxies need a shared (PostgreSQL) database")
        self.workdir = workdir
        self.db = workdir / "proxy.db"
        self.dsn = dsn
        self.ledger = workdir / "ledger.db"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        self.env = env
        self.proxies: list[Proc] = []
        self.ingresses: list[str] = []
        self.admins: list[str] = []
        for i in range(proxies):
            name = "proxy" if dsn is None else f"proxy-{i}"
            port, admin_port, callback_port = free_port(), free_port(), free_port()
            store = (
                ["--db", str(self.db)]
                if dsn is None
                else ["--db", dsn, "--instance-id", name, "--lease-ms", str(lease_ms), "--db-pool-size", "6"]
            )
            self.proxies.append(
                Proc(
                    name,
                    [sys.executable, "-m", "proxy", "serve", *store, "--port", str(port),
                     "--admin-port", str(admin_port), "--callback-port", str(callback_port),
                     "--inactivity-timeout-ms", str(inactivity_timeout_ms),
                     "--retry-initial-interval-ms", "50", "--retry-max-interval-ms", "2000",
                     "--retry-max-attempts", str(retry_max_attempts)],
                    env,
                    workdir / f"{name}.log",
                    f"http://127.0.0.1:{admin_port}/health",
                )
            )  # fmt: skip
            self.ingresses.append(f"http://127.0.0.1:{port}")
            self.admins.append(f"http://127.0.0.1:{admin_port}")
        self.proxy = self.proxies[0]
        handler_env = {**env, "CHAOS_LEDGER": str(self.ledger)}
        self.handlers: list[Proc] = []
        for i in range(instances):
            port = free_port()
            self.handlers.append(
                Proc(
                    f"handler-{i}",
                    [sys.executable, "-m", "uvicorn", APP, "--port", str(port), "--log-level", "warning"],
                    handler_env,
                    workdir / f"handler-{i}.log",
                    f"http://127.0.0.1:{port}/health",
                )
            )

    @property
    def shared(self) -> bool:
        """The proxies share a PostgreSQL database."""
        return self.dsn is not None

    @property
    def ingress(self) -> str:
        return self.ingresses[0]

    @property
    def admin(self) -> str:
        return self.admins[0]

    @property
    def processes(self) -> list[Proc]:
        return [*self.proxies, *self.handlers]

    def start(self) -> None:
        for process in self.processes:
            process.spawn()
        for process in self.processes:
            process.wait_healthy()
        uris = [handler.health_url.removesuffix("/health") for handler in self.handlers]
        for uri in uris:
            result = subprocess.run(
                [sys.executable, "-m", "proxy", "register", uri, "--admin-url", self.admin],
                cwd=ROOT,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            if result.returncode != 0 or "Chaos" not in result.stdout:
                raise RuntimeError(f"registering {uri} failed: {result.stdout}{result.stderr}")
        # The other proxies hear of the deployment through a broadcast and reload their registries.
        deadline = time.monotonic() + 30
        for admin in self.admins[1:]:
            while not _knows_endpoints(admin, uris):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{admin} did not learn of the deployment of {uris}")
                time.sleep(0.05)

    def stop(self) -> None:
        for process in [*self.handlers, *self.proxies]:
            process.stop()

    def proxy_log(self) -> str:
        """Every proxy's log (each survives its restarts), one after another."""
        return "\n".join(proxy.tail(chars=1 << 30) for proxy in self.proxies)


def _knows_endpoints(admin: str, uris: list[str]) -> bool:
    try:
        response = httpx.get(f"{admin}/deployments", timeout=5)
    except httpx.HTTPError:
        return False
    if response.status_code != 200:
        return False
    known = {uri for deployment in response.json()["deployments"] for uri in deployment["endpoints"]}
    return known.issuperset(uris)


def integrity_check(db: Path) -> str:
    """``PRAGMA integrity_check`` of the database at ``db``, over a read-only connection: "ok" or the problems."""
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
        try:
            rows = conn.execute("PRAGMA integrity_check").fetchall()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return f"error: {type(exc).__name__}: {exc}"
    return "; ".join(str(row[0]) for row in rows)


FaultKind = Literal["kill", "pause"]


@dataclasses.dataclass(slots=True)
class Fault:
    """One injected fault; times are seconds since the start of the run."""

    kind: FaultKind
    target: str
    at_s: float
    #: How long the target was down (killed) or stopped (paused), until its restart or SIGCONT.
    down_s: float = 0.0
    #: When the killed process was started again, and how long it took to become healthy.
    restarted_at_s: float | None = None
    start_s: float | None = None
    #: ``PRAGMA integrity_check`` of the proxy's database while the proxy was down.
    integrity: str | None = None
    #: Proxy kills: from the restart to the first successful ingress answer or journal progress.
    recovery_s: float | None = None
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True, slots=True)
class NemesisSettings:
    interval_s: tuple[float, float] = (1.0, 3.0)
    kill_down_s: tuple[float, float] = (0.2, 1.0)
    pause_s: tuple[float, float] = (0.5, 2.0)
    #: How long a proxy stays stopped (only with ``proxy_pause``): past its lease (2 s by default), so that
    #: the other proxies take its attempts over.
    proxy_pause_s: tuple[float, float] = (2.5, 4.0)
    #: Relative weights of: kill the proxy, kill an instance, pause an instance, pause the proxy.
    #: With several proxies, a proxy's share is divided among them.
    proxy_kill: float = 3.0
    handler_kill: float = 5.0
    handler_pause: float = 2.0
    proxy_pause: float = 0.0


class Nemesis:
    """Injects faults into a ``ChaosCluster`` until told to stop; seeded, so the schedule repeats."""

    def __init__(self, cluster: ChaosCluster, seed: int, t0: float, settings: NemesisSettings = NemesisSettings()):
        self.cluster = cluster
        self.rng = random.Random(f"nemesis/{seed}")
        self.t0 = t0
        self.settings = settings
        self.faults: list[Fault] = []
        self._busy: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    @property
    def kills(self) -> int:
        return sum(1 for f in self.faults if f.kind == "kill")

    async def run(self, stop: asyncio.Event) -> None:
        """Inject faults until ``stop`` is set, then let the ones in flight finish (restart, resume)."""
        try:
            while not stop.is_set():
                try:
                    await asyncio.wait_for(stop.wait(), self.rng.uniform(*self.settings.interval_s))
                    break
                except TimeoutError:
                    pass
                self._inject()
        finally:
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)

    def _inject(self) -> None:
        s = self.settings
        handlers = [h for h in self.cluster.handlers if h.name not in self._busy]
        choices: list[tuple[FaultKind, Proc]] = []
        weights: list[float] = []
        proxies = [p for p in self.cluster.proxies if p.name not in self._busy]
        if len(self.cluster.proxies) > 1 and len(proxies) < 2:
            proxies = []  # one proxy keeps running: the others are faulted while it serves
        for proxy in proxies:
            choices.append(("kill", proxy))
            weights.append(s.proxy_kill / len(proxies))
            if s.proxy_pause > 0:
                choices.append(("pause", proxy))
                weights.append(s.proxy_pause / len(proxies))
        for handler in handlers:
            choices += [("kill", handler), ("pause", handler)]
            weights += [s.handler_kill / len(handlers), s.handler_pause / len(handlers)]
        if not choices:
            return
        kind, target = self.rng.choices(choices, weights)[0]
        fault = Fault(kind=kind, target=target.name, at_s=self.elapsed())
        self.faults.append(fault)
        self._busy.add(target.name)
        is_proxy = target in self.cluster.proxies
        duration = self.rng.uniform(*(s.kill_down_s if kind == "kill" else s.proxy_pause_s if is_proxy else s.pause_s))
        task = asyncio.get_running_loop().create_task(self._fault(fault, target, duration))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _fault(self, fault: Fault, target: Proc, duration: float) -> None:
        try:
            if fault.kind == "pause":
                target.pause()
                await asyncio.sleep(duration)
                target.resume()
                fault.down_s = self.elapsed() - fault.at_s
                return
            await asyncio.to_thread(target.kill9)
            if target in self.cluster.proxies and not self.cluster.shared:
                fault.integrity = await asyncio.to_thread(integrity_check, self.cluster.db)
            await asyncio.sleep(max(0.0, fault.at_s + duration - self.elapsed()))
            fault.restarted_at_s = self.elapsed()
            fault.down_s = fault.restarted_at_s - fault.at_s
            await asyncio.to_thread(target.start)
            fault.start_s = self.elapsed() - fault.restarted_at_s
        except Exception as exc:  # a process that does not come back is a finding, not a crash of the run
            fault.error = f"{type(exc).__name__}: {exc}"
        finally:
            self._busy.discard(target.name)
