"""Virtual objects with real processes: concurrent increments of one key across a kill -9 of the proxy,
key locks and queues between keys, and ``durable-proxy objects show``."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from .cluster import ROOT, Cluster, cluster, wait_until
from .objects_app import open_ledger

pytestmark = pytest.mark.processes

OBJECTS = "tests.processes.objects_app:app"
N = 100
#: How far the submissions may run ahead of the completed increments before the proxy is killed.
AHEAD = 30


def objects_cluster(workdir: Path) -> Any:
    return cluster(
        workdir,
        app=OBJECTS,
        expect_service="Counter",
        service_env={"OBJECTS_LEDGER": str(workdir / "objects.db")},
        prefix="",
    )


def cli(c: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxy", *args, "--admin-url", c.admin],
        cwd=ROOT,
        env=c.proxy.env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def object_view(c: Cluster, service: str, key: str) -> dict[str, Any]:
    response = httpx.get(f"{c.admin}/objects/{service}/{key}", timeout=10)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def invocations(c: Cluster, status: str | None = None) -> list[dict[str, Any]]:
    params: dict[str, Any] = {"limit": 1000}
    if status is not None:
        params["status"] = status
    response = httpx.get(f"{c.admin}/invocations", params=params, timeout=10)
    assert response.status_code == 200, response.text
    listed: list[dict[str, Any]] = response.json()["invocations"]
    return listed


@dataclass
class Submission:
    n: int
    invocation_id: str = ""
    status: str = ""  # Accepted | PreviouslyAccepted, as the last answer said
    lost: int = 0  # tries whose answer never came


class Pacer:
    """Lets submission ``n`` go once ``n - AHEAD`` increments completed, or at once after the proxy was killed."""

    def __init__(self) -> None:
        self.changed = threading.Condition()
        self.completed = 0
        self.killed = False
        self.first_tries = 0
        self.restarted = threading.Event()

    def update(self, completed: int) -> None:
        with self.changed:
            self.completed = completed
            self.changed.notify_all()

    def kill(self) -> None:
        with self.changed:
            self.killed = True
            self.changed.notify_all()

    def wait_turn(self, n: int) -> None:
        with self.changed:
            if not self.changed.wait_for(lambda: self.killed or self.completed >= n - AHEAD, timeout=60):
                raise AssertionError(f"submission {n} never got its turn")

    def tried(self) -> None:
        with self.changed:
            self.first_tries += 1


def submit(c: Cluster, pacer: Pacer, n: int) -> Submission:
    """Send increment ``n`` with its own idempotency key; resend it, with the same key, until it is acknowledged."""
    pacer.wait_turn(n)
    submission = Submission(n)
    url = f"{c.ingress}/Counter/hot/increment/send"
    headers = {"idempotency-key": f"increment-{n}"}
    deadline = time.monotonic() + 90
    first = True
    while True:
        try:
            response = httpx.post(url, headers=headers, timeout=10)
        except httpx.HTTPError:
            submission.lost += 1
            if first:
                pacer.tried()
                first = False
            if time.monotonic() > deadline:
                raise
            pacer.restarted.wait(timeout=60)
            continue
        if first:
            pacer.tried()
        assert response.status_code == 202, response.text
        submission.invocation_id = response.json()["invocationId"]
        submission.status = response.json()["status"]
        return submission


def test_100_concurrent_increments_of_one_key_survive_a_proxy_kill(tmp_path: Path) -> None:
    with objects_cluster(tmp_path) as c:
        pacer = Pacer()
        with ThreadPoolExecutor(max_workers=N) as pool:
            futures = [pool.submit(submit, c, pacer, n) for n in range(N)]
            try:
                # Kill -9 the proxy once about a third of the increments completed, with sends in flight.
                while True:
                    completed = len([i for i in invocations(c, "completed") if i["handler"] == "increment"])
                    pacer.update(completed)
                    if completed >= N // 3:
                        break
                    assert not any(f.done() and f.exception() for f in futures), [f.exception() for f in futures]
                    time.sleep(0.02)
                c.proxy.kill9()
                pacer.kill()
                # Every submission has tried once: the ones let go now hit the dead proxy.
                wait_until(lambda: pacer.first_tries == N, "every submission to try once", 60)
                c.proxy.start()
            finally:
                pacer.kill()  # on a failure, let every submission finish at once
                pacer.restarted.set()
            submissions = [f.result(timeout=120) for f in futures]

        # The ones not let go before the kill went to the dead proxy: their answers were lost, and they were resent.
        assert all(s.lost for s in submissions if s.n > completed + AHEAD)
        assert all(s.status in ("Accepted", "PreviouslyAccepted") for s in submissions)
        ids = {s.invocation_id for s in submissions}
        assert len(ids) == N, "one invocation per idempotency key"

        results = []
        for invocation_id in sorted(ids):
            attached = httpx.get(f"{c.ingress}/restate/attach/{invocation_id}", timeout=60)
            assert attached.status_code == 200, attached.text
            results.append(attached.json())
        assert sorted(results) == list(range(1, N + 1)), "each increment saw its own value"

        listed = [i for i in invocations(c) if i["handler"] == "increment"]
        assert len(listed) == N, "no resend created a second invocation"
        assert {i["id"] for i in listed} == ids
        assert {i["status"] for i in listed} == {"completed"}

        view = object_view(c, "Counter", "hot")
        assert view["state"] == {"n": N}, "no lost and no doubled update"
        assert (view["lock_holder"], view["queue"]) == (None, [])

        # One at a time: each invocation read the value the one before it wrote.
        values_read = []
        for invocation_id in ids:
            journal = c.invocation(invocation_id)["journal"]
            assert [e["kind"] for e in journal] == ["get_state", "run", "set_state"]
            read = journal[0]["entry"]["value"] if journal[0]["entry"].get("found") else 0
            assert journal[2]["entry"]["value"] == read + 1
            values_read.append(read)
        assert sorted(values_read) == list(range(N))

        ledger = open_ledger(tmp_path / "objects.db")
        applied = ledger.execute("SELECT step_key, value_read FROM applied WHERE object_key = 'hot'").fetchall()
        assert len(applied) == N, "each increment's step applied exactly once"
        assert sorted(v for _, v in applied) == list(range(N))
        assert {k.rsplit(":", 1)[0] for k, _ in applied} == ids
        executions = ledger.execute("SELECT count(*) FROM executions WHERE object_key = 'hot'").fetchone()[0]
        assert executions >= N

        shown = cli(c, "objects", "show", "Counter", "hot")
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.splitlines() == [
            "object Counter/hot",
            "  lock holder: -",
            "  queued:      -",
            "  state:",
            f"    n = {N}",
        ]


def test_a_held_key_queues_its_calls_while_another_key_goes_on(tmp_path: Path) -> None:
    with objects_cluster(tmp_path) as c:
        sent = httpx.post(f"{c.ingress}/Counter/A/hold/send", timeout=10)
        holder = sent.json()["invocationId"]
        ledger = open_ledger(tmp_path / "objects.db")

        def handed_out() -> list[str]:
            return [r[0] for r in ledger.execute("SELECT awakeable_id FROM awakeables WHERE object_key = 'A'")]

        wait_until(lambda: len(handed_out()) == 1, "hold to hand out its awakeable")
        wait_until(lambda: c.invocation(holder)["status"] == "suspended", "hold to suspend")
        queued = [
            httpx.post(f"{c.ingress}/Counter/A/increment/send", timeout=10).json()["invocationId"] for _ in range(3)
        ]
        view = object_view(c, "Counter", "A")
        assert (view["lock_holder"], view["queue"]) == (holder, queued)
        assert {c.invocation(i)["status"] for i in queued} == {"queued"}

        # Key B runs while key A is held, and a shared handler of A answers too.
        for expected in (1, 2, 3):
            response = httpx.post(f"{c.ingress}/Counter/B/increment", timeout=30)
            assert (response.status_code, response.json()) == (200, expected)
        assert httpx.post(f"{c.ingress}/Counter/A/value", timeout=30).json() == 0

        shown = cli(c, "objects", "show", "Counter", "A")
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.splitlines() == [
            "object Counter/A",
            f"  lock holder: {holder}",
            f"  queued:      {', '.join(queued)}",
            "  state:",
            "    -",
        ]
        as_json = cli(c, "objects", "show", "Counter", "A", "--json")
        assert as_json.returncode == 0, as_json.stderr
        assert json.loads(as_json.stdout) == object_view(c, "Counter", "A")

        refused = cli(c, "objects", "show", "Plain", "x")
        assert refused.returncode == 1
        assert "Plain is a service" in refused.stderr
        unknown = cli(c, "objects", "show", "Nope", "x")
        assert unknown.returncode == 4, "not found (see docs/cli.md)"
        assert "'Nope' is not registered" in unknown.stderr

        resolved = httpx.post(f"{c.ingress}/restate/awakeables/{handed_out()[0]}/resolve", json="go", timeout=10)
        assert resolved.status_code == 202
        assert httpx.get(f"{c.ingress}/restate/attach/{holder}", timeout=30).json() == "go"
        results = [httpx.get(f"{c.ingress}/restate/attach/{i}", timeout=30).json() for i in queued]
        assert results == [1, 2, 3], "the queue ran in arrival order"
        view = object_view(c, "Counter", "A")
        assert (view["state"], view["lock_holder"], view["queue"]) == ({"n": 3}, None, [])
        assert object_view(c, "Counter", "B")["state"] == {"n": 3}
