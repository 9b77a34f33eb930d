"""Durable sleeps and call chains with real processes: kill -9 the proxy during a sleep, and a handler
instance in the middle of a call chain."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import httpx
import pytest

from .cluster import cluster, wait_until

pytestmark = pytest.mark.processes

FLOWS = "tests.processes.flows_app:app"


def _ledger(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, timeout=30)


def test_a_sleep_survives_a_proxy_kill_and_never_ends_early(tmp_path: Path) -> None:
    with cluster(tmp_path, app=FLOWS, expect_service="Sleeper", prefix="") as c:
        short = httpx.post(f"{c.ingress}/Sleeper/nap/send", json=2.0, timeout=10).json()["invocationId"]
        long = httpx.post(f"{c.ingress}/Sleeper/nap/send", json=6.0, timeout=10).json()["invocationId"]
        # Sleeps longer than the SDK's brief wait suspend: the handler holds nothing while they run.
        wait_until(lambda: all(c.invocation(i)["status"] == "suspended" for i in (short, long)), "both to suspend")
        wake_at = {i: c.invocation(i)["journal"][1]["entry"]["wake_at_ms"] for i in (short, long)}

        c.proxy.kill9()
        # Stay down past the short sleep's due time, not past the long one's.
        wait_until(lambda: time.time() * 1000 > wake_at[short] + 500, "the short sleep to fall due", 10)
        restarted_ms = time.time() * 1000
        c.proxy.start()

        results = {i: httpx.get(f"{c.ingress}/restate/attach/{i}", timeout=30) for i in (short, long)}
        db = _ledger(c.workdir / "flows.db")
        for invocation_id, response in results.items():
            assert response.status_code == 200, response.text
            after_ms = response.json()
            assert after_ms >= wake_at[invocation_id], "a sleep never ends before its wake-up time"
            journal = c.invocation(invocation_id)["journal"]
            assert [e["kind"] for e in journal] == ["run", "sleep", "run"]
            assert journal[1]["completed"] is True
            rows = db.execute(
                "SELECT step, count(*) FROM executions WHERE key LIKE ? GROUP BY step", (f"{invocation_id}:%",)
            )
            assert dict(rows.fetchall()) == {"before": 1, "after": 1}
        # The short sleep fell due while the proxy was down: it fired right after the start.
        assert results[short].json() - restarted_ms < 5_000


def test_killing_an_instance_mid_call_chain_completes_it_once(tmp_path: Path) -> None:
    with cluster(tmp_path, app=FLOWS, expect_service="Chain", service_env={"GATE_STEP": "c-gated"}, prefix="") as c:
        sent = httpx.post(f"{c.ingress}/Chain/a/send", json=1, timeout=10)
        root = sent.json()["invocationId"]
        victim = c.service_by_pid(c.holder_pid())  # the instance running C's gated step
        victim.kill9()
        c.release_gate()

        result = httpx.get(f"{c.ingress}/restate/attach/{root}", timeout=60)
        assert result.status_code == 200, result.text
        assert result.json() == 3 + 2

        listed = httpx.get(f"{c.admin}/invocations", params={"limit": 100}, timeout=10).json()["invocations"]
        by_handler: dict[str, list[str]] = {}
        for invocation in listed:
            by_handler.setdefault(invocation["handler"], []).append(invocation["id"])
        assert {h: len(ids) for h, ids in by_handler.items()} == {"a": 1, "b": 1, "c": 1}, "no callee started twice"
        b_id, c_id = by_handler["b"][0], by_handler["c"][0]
        assert c.invocation(b_id)["parent_id"] == root
        assert c.invocation(c_id)["parent_id"] == b_id
        for invocation_id in (root, b_id, c_id):
            found = c.invocation(invocation_id)
            assert found["status"] == "completed"
            names = [e["name"] for e in found["journal"] if e["kind"] == "run"]
            assert len(names) == len(set(names)), "every step recorded exactly once"
        db = _ledger(c.workdir / "flows.db")
        applied = dict(db.execute("SELECT step, count(*) FROM applied GROUP BY step").fetchall())
        assert applied == {"a-step": 1, "b-step": 1, "c-step": 1, "c-gated": 1}
