"""The benchmark harness runs end to end: quick mode, durable-proxy only, two scenarios, tiny counts.

The PostgreSQL case (one and two proxy instances on a database of its own) runs when
``DURABLE_TEST_POSTGRES_DSN`` names a server, and is skipped otherwise.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from tests.postgres import require_server

pytestmark = pytest.mark.processes

ROOT = Path(__file__).resolve().parents[2]


def test_quick_run_reports_positive_figures_and_no_errors(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--peers", "none", "--backend", "sqlite",
         "--only", "latency,throughput",
         "--seq", "10", "--conc", "4", "--duration", "1", "--quiet-wait", "0",
         "--out", str(out), "--workdir", str(tmp_path / "work")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=100,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    results = json.loads(out.read_text())
    ours = results["ours"]
    assert ours["failed"] == [] and ours["errors"] == 0
    latency = ours["scenarios"]["latency"]
    for handler in ("noop", "steps3", "steps10", "steps100", "steps_sync3"):
        assert latency[handler]["errors"] == 0, latency[handler]["first_errors"]
        assert latency[handler]["count"] > 0
        assert 0 < latency[handler]["p50_ms"] <= latency[handler]["p99_ms"]
    for handler in ("noop", "steps3"):
        figures = ours["scenarios"]["throughput"][handler]
        assert figures["errors"] == 0, figures["first_errors"]
        assert figures["invocations_per_s"] > 0
        assert figures["cores"]["proxy"] > 0
    assert results["peers"] == {}
    assert results["machine"]["fsync_4k"]["p50_ms"] > 0
    assert "| 3 steps | durable-proxy" in done.stdout


def test_quick_run_on_postgresql_with_one_and_two_instances(tmp_path: Path) -> None:
    server = require_server()
    out = tmp_path / "bench.json"
    database = f"durable_bench_smoke_{secrets.token_hex(6)}"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--peers", "none", "--backend", "postgresql",
         "--postgres-url", server, "--postgres-db", database, "--only", "steps3",
         "--seq", "10", "--conc", "4", "--duration", "1", "--quiet-wait", "0",
         "--out", str(out), "--workdir", str(tmp_path / "work")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=100,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    results = json.loads(out.read_text())
    postgres = results["postgresql"]
    assert postgres["status"] == "ok" and postgres["failed"] == [] and postgres["errors"] == 0
    assert results["machine"]["postgresql"]["synchronous_commit"] in (
        "on",
        "off",
        "local",
        "remote_write",
        "remote_apply",
    )
    assert results["machine"]["postgresql"]["fsync"] in ("on", "off")
    for key, proxies in (("x1", ["proxy"]), ("x2", ["proxy-1", "proxy-2"])):
        figures = postgres["runs"][key]["scenarios"]["steps3"]
        assert 0 < figures["seq"]["p50_ms"] <= figures["seq"]["p99_ms"]
        assert figures["conc"]["invocations_per_s"] > 0
        for proxy in proxies:  # the driver's clients reached every instance's ingress
            assert figures["conc"]["cores"][proxy] > 0
    assert "| 3 steps | durable-proxy PostgreSQL ×2" in done.stdout
    assert results["ours"]["status"] == "not run"
