"""Processes the harness starts: spawned with a log file, waited on for health, always stopped.

Every process is started in its own session, and every one started is kept
in a registry so that ``stop_all`` can end them on the way out, whatever
happened: a scenario failing, Ctrl-C, or SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: The repository root: the harness runs its Python processes from here.
ROOT = Path(__file__).resolve().parents[1]

_RUNNING: list[Process] = []


class StartError(RuntimeError):
    """A process exited or did not become healthy in time."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def python_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of the harness's Python processes: the repository importable, output unbuffered."""
    path = os.environ.get("PYTHONPATH")
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT) if not path else f"{ROOT}{os.pathsep}{path}",
        "PYTHONUNBUFFERED": "1",
        **(extra or {}),
    }


def http_get(url: str, timeout_s: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            status: int = response.status
            return status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def http_post_json(url: str, payload: Any, timeout_s: float = 30.0) -> tuple[int, Any]:
    """POST a JSON body; the answer's status and its JSON (or its text when it is not JSON)."""
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"content-type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode("utf-8", "replace")


def healthy(url: str) -> bool:
    try:
        return http_get(url, timeout_s=1.0)[0] == 200
    except OSError:
        return False


class Process:
    """One process of the benchmark, with its log in ``log``."""

    def __init__(
        self,
        name: str,
        args: Sequence[str],
        log: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        stop_signal: signal.Signals = signal.SIGTERM,
    ) -> None:
        self.name = name
        self.args = list(args)
        self.log = log
        self.env = dict(env) if env is not None else python_env()
        self.cwd = cwd or ROOT
        self.stop_signal = stop_signal
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self.popen is None:
            raise RuntimeError(f"{self.name} was not started")
        return self.popen.pid

    def spawn(self) -> Process:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.popen = subprocess.Popen(
                self.args,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _RUNNING.append(self)
        return self

    def tail(self, chars: int = 2000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def wait_healthy(self, url: str, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if self.popen is not None and self.popen.poll() is not None:
                tail = self.tail()
                last = next((line for line in reversed(tail.splitlines()) if line.strip()), "")
                raise StartError(f"{self.name} exited with status {self.popen.returncode}: {last}\n{tail}")
            if healthy(url):
                return
            if time.monotonic() > deadline:
                raise StartError(f"{self.name} did not answer {url} within {timeout_s:.0f} s:\n{self.tail()}")
            time.sleep(0.05)

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, grace_s: float = 10.0) -> None:
        """Its stop signal, then SIGKILL after ``grace_s``."""
        popen = self.popen
        if popen is None:
            return
        if popen.poll() is None:
            try:
                popen.send_signal(self.stop_signal)
                popen.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait(timeout=10)
            except ProcessLookupError:
                pass
        if self in _RUNNING:
            _RUNNING.remove(self)


def stop_all() -> None:
    """Stop every process still running, the most recently started first."""
    for process in reversed(list(_RUNNING)):
        try:
            process.stop(grace_s=5.0)
        except Exception as exc:  # keep stopping the others
            print(f"could not stop {process.name}: {exc}", file=sys.stderr)


def rss_kib(pid: int) -> int:
    """The resident set size of ``pid`` in KiB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/status has no VmRSS")


#: Seconds the phases may still spend, all together, waiting for an idle machine or repeating a phase.
_quiet_budget = [0.0]
#: A phase during which the rest of the machine used more cores than this was disturbed.
DISTURBED_CORES = 0.25
#: How often a disturbed phase is repeated at most.
_MAX_REPEATS = 2


def set_quiet_budget(seconds: float) -> None:
    """Let phases spend ``seconds`` in all waiting for other processes to leave the CPU, and
    repeating a phase that other processes disturbed."""
    _quiet_budget[0] = max(0.0, seconds)


def run_driver(
    url: str | Sequence[str],
    mode: str,
    *,
    body: str = "{i}",
    pids: Mapping[str, int] | None = None,
    count: int = 500,
    warmup: int = 20,
    clients: int = 32,
    duration_s: float = 15.0,
    total: int | None = None,
    first: int = 0,
    timeout_s: float = 30.0,
    headers: Mapping[str, str] | None = None,
    pg_server: tuple[int, str] | None = None,
) -> dict[str, Any]:
    """Run one phase in a driver process of its own and return its result.

    Several URLs spread the requests over them (see ``bench.driver``). ``pg_server``, a local
    PostgreSQL server's postmaster PID and the database measured, has its CPU sampled too.

    While the quiet budget lasts, the driver first waits for an idle machine, and a phase
    during which other processes used the CPU is run again (not one with ``total``, whose
    requests change the state). ``repeats`` in the result says how often.
    """
    args = [sys.executable, "-m", "bench.driver", "--mode", mode, "--body", body]
    for one in [url] if isinstance(url, str) else url:
        args += ["--url", one]
    args += ["--count", str(count), "--warmup", str(warmup), "--clients", str(clients)]
    args += ["--duration", str(duration_s), "--timeout", str(timeout_s)]
    if total is not None:
        args += ["--total", str(total)]
    for name, pid in (pids or {}).items():
        args += ["--pid", f"{name}={pid}"]
    for name, value in (headers or {}).items():
        args += ["--header", f"{name}: {value}"]
    if pg_server is not None:
        args += ["--pg-server", f"{pg_server[0]}:{pg_server[1]}"]
    repeats = 0
    while True:
        started = time.monotonic()
        result = _drive(
            [*args, "--first", str(first + repeats * 1_000_000)], mode, timeout_s, duration_s, count + warmup
        )
        other = float(result.get("cores", {}).get("other", 0.0))
        measured_s = float(result.get("elapsed_s", result.get("duration_s", 0.0)))
        disturbed = other > DISTURBED_CORES and measured_s >= 1.0
        if not disturbed or total is not None or repeats >= _MAX_REPEATS or _quiet_budget[0] <= 0:
            break
        _quiet_budget[0] = max(0.0, _quiet_budget[0] - (time.monotonic() - started))
        repeats += 1
        print(f"other processes used {other:.2f} cores during the phase: running it again", file=sys.stderr)
    result["repeats"] = repeats
    return result


def _drive(args: list[str], mode: str, timeout_s: float, duration_s: float, requests: int) -> dict[str, Any]:
    if _quiet_budget[0] > 0:
        args = [*args, "--quiet-wait", str(min(_quiet_budget[0], 60.0))]
    limit = timeout_s + (duration_s if mode == "conc" else timeout_s * requests) + 120
    done = subprocess.run(args, cwd=ROOT, env=python_env(), capture_output=True, text=True, timeout=limit)
    if done.returncode != 0:
        raise RuntimeError(f"the driver failed ({done.returncode}): {done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    quiet = result.get("quiet_before")
    if quiet is not None:
        _quiet_budget[0] = max(0.0, _quiet_budget[0] - quiet["waited_s"])
        if quiet["waited_s"] > 1:
            print(f"waited {quiet['waited_s']:.0f} s for other processes to leave the CPU", file=sys.stderr)
    return result
