"""The benchmark harness runs end to end: quick mode, durable-proxy only, two scenarios, tiny counts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.processes

ROOT = Path(__file__).resolve().parents[2]


def test_quick_run_reports_positive_figures_and_no_errors(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--peers", "none", "--only", "latency,throughput",
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
