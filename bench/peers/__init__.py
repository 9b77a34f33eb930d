"""Peers: other durable-execution engines run through the same workloads and the same driver.

Each peer installs itself outside the repository, under ``$DURABLE_BENCH_HOME``
(``~/.cache/durable-proxy-bench`` by default), once: an install whose marker
names the wanted versions is reused. A peer that cannot be installed or
started is reported as unavailable, with the reason, and the run goes on.

The workloads are the ones durable-proxy runs: ``noop`` (no step) and
``steps3`` (three sequential steps, each returning a short string), both
reached with ``POST`` and a JSON body over HTTP.
"""

from __future__ import annotations

import abc
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The service scripts the peers run in their own virtualenvs (they import the peers' SDKs).
SERVICES = Path(__file__).resolve().parent / "services"


class PeerUnavailable(Exception):
    """The peer cannot be installed or started here; the message says why."""


@dataclass(frozen=True, slots=True)
class Workload:
    """One handler of a peer, as the driver calls it."""

    url: str
    body: str


def bench_home() -> Path:
    """Where peers are installed: ``$DURABLE_BENCH_HOME``, or ``~/.cache/durable-proxy-bench``."""
    configured = os.environ.get("DURABLE_BENCH_HOME")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "durable-proxy-bench"


def run_logged(
    args: list[str],
    log: Path,
    *,
    what: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout_s: float = 900.0,
) -> str:
    """Run an install step, appending its output to ``log``; raise ``PeerUnavailable`` if it fails."""
    log.parent.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(
            args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PeerUnavailable(f"{what} failed: {exc}") from exc
    with open(log, "a") as out:
        out.write(f"$ {' '.join(args)}\n{done.stdout}{done.stderr}\n")
    if done.returncode != 0:
        last = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise PeerUnavailable(f"{what} failed (exit {done.returncode}): {' | '.join(last)} (log: {log})")
    return done.stdout


def ensure_venv(venv: Path, requirements: list[str], log: Path) -> Path:
    """A virtualenv at ``venv`` with ``requirements`` installed; returns its python."""
    python = venv / "bin" / "python"
    if not python.exists():
        base = getattr(sys, "_base_executable", sys.executable)
        run_logged([base, "-m", "venv", str(venv)], log, what=f"creating the virtualenv {venv}")
    run_logged(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *requirements],
        log,
        what=f"pip install {' '.join(requirements)}",
    )
    return python


def package_version(python: Path, distribution: str) -> str:
    """The installed version of ``distribution`` in the environment of ``python``."""
    code = f"import importlib.metadata as m; print(m.version({distribution!r}))"
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=60)
    return done.stdout.strip() if done.returncode == 0 else "unknown"


def read_marker(path: Path) -> dict[str, Any]:
    try:
        found: dict[str, Any] = json.loads(path.read_text())
        return found
    except (OSError, ValueError):
        return {}


def write_marker(path: Path, content: dict[str, Any]) -> None:
    path.write_text(json.dumps(content, indent=2) + "\n")


class Peer(abc.ABC):
    """A durable-execution engine started for one benchmark run."""

    #: The name used in ``--peers`` and in the report.
    name: str

    @abc.abstractmethod
    def install(self) -> dict[str, str]:
        """Install (or find installed) the pinned versions; return them. Raises ``PeerUnavailable``."""

    @abc.abstractmethod
    def start(self, workdir: Path) -> None:
        """Start the engine and its service, with fresh state under ``workdir``. Raises ``PeerUnavailable``."""

    @abc.abstractmethod
    def variants(self) -> list[str]:
        """The ways this peer is measured (e.g. ``bidi`` and ``request-response``); the first is the main one."""

    @abc.abstractmethod
    def use_variant(self, variant: str) -> None:
        """Make ``variant`` the one the workloads go through."""

    @abc.abstractmethod
    def workloads(self) -> dict[str, Workload]:
        """``noop`` and ``steps3``, as reached now."""

    @abc.abstractmethod
    def pids(self) -> dict[str, int]:
        """The processes whose CPU is sampled, by name."""

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """Settings worth recording: durability, serving mode, journal mode..."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop everything started; safe to call twice or after a failed start."""


def make_peer(name: str) -> Peer:
    if name == "restate":
        from bench.peers.restate import Restate

        return Restate()
    if name == "dbos":
        from bench.peers.dbos import Dbos

        return Dbos()
    raise ValueError(f"unknown peer {name!r}: choose restate or dbos")


PEERS = ("restate", "dbos")
