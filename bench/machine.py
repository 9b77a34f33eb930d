"""What the figures were measured on: the machine, its disk's fsync cost, and the code's version."""

from __future__ import annotations

import os
import platform
import sqlite3
import statistics
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.processes import ROOT
from bench.stats import percentile


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def fsync_probe(directory: Path, rounds: int = 200) -> dict[str, float]:
    """p50/p99 in ms of writing 4 KiB and ``fdatasync``-ing it, in ``directory`` (the data's disk)."""
    path = directory / "fsync-probe"
    block = os.urandom(4096)
    samples: list[float] = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for _ in range(rounds):
            started = time.perf_counter()
            os.write(fd, block)
            os.fdatasync(fd)
            samples.append((time.perf_counter() - started) * 1000)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    samples.sort()
    return {"p50_ms": round(percentile(samples, 50), 4), "p99_ms": round(percentile(samples, 99), 4)}


def cpu_probe_ms(rounds: int = 5) -> float:
    """The median of ``rounds`` timings of a fixed pure-Python loop, in ms: how fast a core is now.

    On a virtual machine the speed of a core moves with the load of the host, which nothing
    inside the guest shows (not even ``other``). Taken before each system is measured, it tells
    whether the machine was as fast for each of them."""
    timings = []
    for _ in range(rounds):
        started = time.perf_counter()
        total = 0
        for i in range(1_000_000):
            total += i
        timings.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(timings), 1)


def machine(data_dir: Path) -> dict[str, Any]:
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "ram_gib": ram_gib(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "data_dir": str(data_dir),
        "fsync_4k": fsync_probe(data_dir),
    }


def git_commit() -> str:
    """The commit of the checkout, with ``-dirty`` when it has uncommitted changes."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def package_versions() -> dict[str, str]:
    """The versions of what the proxy and the benchmark app run on."""
    found: dict[str, str] = {}
    for name in ("durable-proxy", "uvicorn", "starlette", "uvloop", "httptools", "msgspec", "httpx"):
        try:
            found[f"{name} package" if name == "durable-proxy" else name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found
