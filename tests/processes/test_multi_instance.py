"""Several proxy instances on one PostgreSQL database, with real processes: a proxy killed (kill -9) or
stopped (SIGSTOP) past its lease while it runs attempts, timers across instances, and one writer per
virtual-object key. Skipped without ``DURABLE_TEST_POSTGRES_DSN`` (see ``tests.postgres``).

Each test starts three proxies (``proxy-0`` .. ``proxy-2``, ``--lease-ms 1500``) and two handler
instances on a fresh database of its own. The handlers are ``flows_app``'s ``Sleeper/nap`` (a step
``before``, a durable sleep, a step ``after`` whose result, the time it ran, is the output), whose
sleeps under a second wait in-process, so the attempt stays running (and leased) meanwhile, and
``guarded_app``'s ``Guarded/{key}/bump``.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from .cluster import ProxyInstance, SharedCluster, shared_cluster, wait_until
from .guarded_app import open_ledger as open_guarded_ledger

pytestmark = pytest.mark.processes

LEASE_MS = 1500


# ---------------------------------------------------------------------- clients


def send_nap(proxies: list[ProxyInstance], first: int, key: str, seconds: float, timeout_s: float = 60) -> str:
    """``Sleeper/nap/send`` with ``Idempotency-Key: key`` through ``proxies[first]``; when an instance
    does not answer, the same send (same key) through the next one. The invocation's id."""
    deadline = time.monotonic() + timeout_s
    i = first
    while True:
        proxy = proxies[i % len(proxies)]
        try:
            response = httpx.post(
                f"{proxy.ingress}/Sleeper/nap/send", json=seconds, headers={"idempotency-key": key}, timeout=5
            )
        except httpx.HTTPError:
            response = None
        if response is not None and response.status_code == 202:
            invocation_id: str = response.json()["invocationId"]
            return invocation_id
        if time.monotonic() > deadline:
            raise AssertionError(f"no instance acknowledged {key}: {response and response.text}")
        i += 1


def attach(proxy: ProxyInstance, invocation_id: str, timeout_s: float = 60) -> httpx.Response:
    return httpx.get(f"{proxy.ingress}/restate/attach/{invocation_id}", timeout=timeout_s)


def listed(proxy: ProxyInstance) -> dict[str, dict[str, Any]]:
    """Every invocation (up to 1000) as ``GET /invocations`` on ``proxy`` lists them, by id."""
    response = httpx.get(f"{proxy.admin}/invocations", params={"limit": 1000}, timeout=10)
    assert response.status_code == 200, response.text
    return {i["id"]: i for i in response.json()["invocations"]}


def all_completed(proxy: ProxyInstance, ids: set[str]) -> Callable[[], bool]:
    def check() -> bool:
        found = listed(proxy)
        return all(found.get(i, {}).get("status") == "completed" for i in ids)

    return check


def running_on(c: SharedCluster, instance_id: str) -> set[str]:
    """The invocations running now under a lease of ``instance_id``, as the database says."""
    rows = c.query("SELECT id FROM invocations WHERE status = 'running' AND lease_owner = $1", instance_id)
    return {str(r[0]) for r in rows}


def final_owner(c: SharedCluster) -> dict[str, str]:
    """The instance that claimed each invocation's last attempt (a lease is left in place when it ends)."""
    return {str(i): str(owner) for i, owner in c.query("SELECT id, lease_owner FROM invocations")}


# ---------------------------------------------------------------------- the ledger and the journals


class FlowsLedger:
    """``flows_app``'s ledger: every physical run of a step, and the step applied once per idempotency key."""

    def __init__(self, path: Path) -> None:
        db = sqlite3.connect(path, timeout=30)
        try:
            self.executions: Counter[str] = Counter(k for (k,) in db.execute("SELECT key FROM executions"))
            self.run_at: dict[str, set[int]] = {}
            for key, at_ms in db.execute("SELECT key, at_ms FROM executions"):
                self.run_at.setdefault(key, set()).add(at_ms)
            self.applied: dict[str, str] = dict(db.execute("SELECT key, step FROM applied").fetchall())
        finally:
            db.close()

    @property
    def re_executions(self) -> int:
        return sum(n - 1 for n in self.executions.values())


def check_nap(found: dict[str, Any], ledger: FlowsLedger, answer: Any = None) -> None:
    """A ``Sleeper/nap`` that completed exactly once: its journal, its output and its side effects."""
    invocation_id = found["id"]
    assert found["status"] == "completed", found
    journal = found["journal"]
    assert [(e["index"], e["kind"], e["name"]) for e in journal] == [
        (0, "run", "before"),
        (1, "sleep", ""),
        (2, "run", "after"),
    ], f"{invocation_id}: each entry recorded once, in order"
    sleep = journal[1]
    assert sleep["completed"] is True and sleep["completed_at_ms"] >= sleep["entry"]["wake_at_ms"]
    output = found["output"]
    assert output == journal[2]["entry"]["result"], "the output is the journaled result of the last step"
    assert output >= sleep["entry"]["wake_at_ms"], "the last step ran after the sleep ended"
    if answer is not None:
        assert answer == output
    before, after = f"{invocation_id}:0", f"{invocation_id}:2"
    # Each side effect was applied once (by its step's idempotency key), whatever ran again.
    assert ledger.applied.get(before) == "before" and ledger.applied.get(after) == "after", invocation_id
    assert journal[0]["entry"]["result"] in ledger.run_at[before]
    assert output in ledger.run_at[after], "the output came from a run of the step"
    attempts = found["attempts"]
    assert attempts[-1]["outcome"] == "completed"
    assert [a["outcome"] for a in attempts].count("completed") == 1, "it completed exactly once"
    # A step runs at most once per attempt; an invocation that ran in one attempt ran each step once.
    for key in (before, after):
        assert ledger.executions[key] <= len(attempts), f"{key} ran {ledger.executions[key]} times"


def settled(read: Callable[[], int], quiet_s: float = 1.0, timeout_s: float = 30.0) -> int:
    """``read()`` once it has not changed for ``quiet_s``."""
    deadline = time.monotonic() + timeout_s
    value, since = read(), time.monotonic()
    while time.monotonic() - since < quiet_s:
        if time.monotonic() > deadline:
            raise AssertionError(f"still changing after {timeout_s}s: {value}")
        time.sleep(0.1)
        now = read()
        if now != value:
            value, since = now, time.monotonic()
    return value


def outcomes_of(c: SharedCluster, invocation_id: str) -> list[str]:
    return [a["outcome"] for a in c.invocation(invocation_id)["attempts"]]


def stats(proxies: list[ProxyInstance]) -> dict[str, dict[str, Any]]:
    return {p.instance_id: p.stats() for p in proxies}


# ---------------------------------------------------------------------- the tests


def test_a_killed_proxy_s_invocations_are_taken_over_and_complete_once(tmp_path: Path) -> None:
    """kill -9 of one of three proxies in the middle of 90 naps sent through all three ingresses."""
    n = 90
    with shared_cluster(tmp_path, lease_ms=LEASE_MS) as c:
        victim, survivors = c.proxies[0], c.proxies[1:]
        ids: dict[int, str] = {}

        def send(i: int) -> None:
            # Sleeps of 0.6-0.9 s: waited out in-process, the attempts stay running meanwhile.
            ids[i] = send_nap(c.proxies, i, f"nap-{i}", 0.6 + (i % 4) / 10)

        with ThreadPoolExecutor(max_workers=15) as pool:
            sends = [pool.submit(send, i) for i in range(n)]
            # Kill one instance early in the workload, while a good part of what runs is on it.
            wait_until(lambda: len(running_on(c, victim.instance_id)) >= 5, "attempts running on the victim", 30)
            victim.process.kill9()
            unsent = sum(1 for f in sends if not f.done())
            killed_at = time.monotonic()
            orphans = running_on(c, victim.instance_id)  # frozen now: nobody renews these leases
            assert orphans
            # Clients wait on both survivors for what the dead instance was running.
            waiting = {(i, s.instance_id): pool.submit(attach, s, i) for i in orphans for s in survivors}
            # The sends go on: one to the dead instance goes to the next one, with the same key.
            wait_until(lambda: not running_on(c, victim.instance_id), "the victim's leases to be taken over", 30)
            takeover_s = time.monotonic() - killed_at
            for future in sends:
                future.result(timeout=60)
            answers = {waiter: f.result(timeout=60) for waiter, f in waiting.items()}

        assert unsent > 0, "the kill came in the middle of the workload"
        assert len(set(ids.values())) == n, "one invocation per idempotency key"
        wait_until(all_completed(survivors[0], set(ids.values())), "every invocation to complete", 60)
        ledger = FlowsLedger(tmp_path / "flows.db")
        owners = final_owner(c)
        taken: set[str] = set()  # the invocations another instance took over (no instance restarted)
        for invocation_id in ids.values():
            found = c.invocation(invocation_id, via=survivors[0])
            check_nap(found, ledger)
            for survivor in survivors:
                answer = answers.get((invocation_id, survivor.instance_id))
                if answer is not None:
                    assert (answer.status_code, answer.json()) == (200, found["output"]), answer.text
            outcomes = [a["outcome"] for a in found["attempts"]]
            if "abandoned" in outcomes:
                taken.add(invocation_id)
                assert outcomes[0] == "abandoned" and outcomes.count("abandoned") == 1, outcomes
                assert owners[invocation_id] != victim.instance_id, "a survivor ran its last attempt"
            else:
                # Untouched by the kill: one attempt (or one suspension and a resumption), each step run once.
                assert outcomes in (["completed"], ["suspended", "completed"]), outcomes
                assert ledger.executions[f"{invocation_id}:0"] == ledger.executions[f"{invocation_id}:2"] == 1
        assert len(ledger.applied) == 2 * n, "nothing else was applied"
        assert c.query("SELECT count(*) FROM invocations") == [(n,)]
        figures = stats(survivors)
        taken_over = sum(s["taken_over"] for s in figures.values())
        assert taken_over == len(taken) > 0, (figures, taken)
        # What the victim was running when it died was taken over (unless its end had reached the
        # database already, and committed as the process died).
        assert orphans & taken
        assert all(outcomes_of(c, i) == ["completed"] for i in orphans - taken)
        # Of the two clients waiting for each, one waited on the survivor that did not end it: the end
        # reached it through a broadcast.
        heard = [(i, s) for i, s in answers if owners[i] != s]
        assert len(heard) >= len(orphans & taken)
        print(
            f"\nkill -9: {len(taken)} orphaned attempts taken over in {takeover_s:.2f}s "
            f"(lease {LEASE_MS} ms), {len(heard)} answers heard through a broadcast, "
            f"{ledger.re_executions} steps re-run, {unsent} sends still to go at the kill; {figures}"
        )


def test_a_stopped_proxy_is_fenced_after_its_attempts_were_taken_over(tmp_path: Path) -> None:
    """SIGSTOP of a proxy past its lease while it runs attempts; SIGCONT once the others finished them."""
    with shared_cluster(tmp_path, lease_ms=LEASE_MS) as c:
        paused, others = c.proxies[0], c.proxies[1:]
        ids: list[str] = []
        with ThreadPoolExecutor(max_workers=20) as pool:
            # Batches of 20 naps through proxy-0, all acknowledged, until enough of them run there.
            while len(running_on(c, paused.instance_id)) < 12:
                assert len(ids) < 100, "the naps never ran on proxy-0 at once"
                keys = [f"nap-{i}" for i in range(len(ids), len(ids) + 20)]
                ids += pool.map(lambda key: send_nap([paused], 0, key, 0.9), keys)
        n = len(ids)
        paused.process.pause()
        stopped_at = time.monotonic()
        stranded = running_on(c, paused.instance_id)
        try:
            with ThreadPoolExecutor(max_workers=n) as pool:
                waiting = [pool.submit(attach, others[k % 2], i) for k, i in enumerate(ids)]
                wait_until(lambda: not running_on(c, paused.instance_id), "the stopped instance's leases to go", 30)
                takeover_s = time.monotonic() - stopped_at
                answers = {i: f.result(timeout=60) for i, f in zip(ids, waiting, strict=True)}
            completed_s = time.monotonic() - stopped_at
            # Everything ended while proxy-0 was stopped.
            before = {i: c.invocation(i, via=others[0]) for i in ids}
        finally:
            paused.process.resume()

        def refused() -> int:
            figures = paused.stats()
            return int(figures["fenced_appends"]) + int(figures["superseded_ends"])

        wait_until(lambda: refused() > 0, "the stopped instance's late writes to be refused", 30)
        # Its stale attempts (aborted once it hears they ended elsewhere) and their handlers' late
        # appends and waits settle within moments; every one of those writes is refused.
        fenced = settled(refused)
        assert fenced > 0
        figures = stats(c.proxies)

        ledger = FlowsLedger(tmp_path / "flows.db")
        taken: set[str] = set()
        for invocation_id in ids:
            answer = answers[invocation_id]
            assert answer.status_code == 200, answer.text
            after = c.invocation(invocation_id, via=paused)
            assert after == before[invocation_id], "the stopped instance changed nothing once it woke"
            check_nap(after, ledger, answer.json())
            outcomes = [a["outcome"] for a in after["attempts"]]
            if "abandoned" in outcomes:
                taken.add(invocation_id)
                assert outcomes == ["abandoned", "completed"], outcomes
            else:
                assert outcomes == ["completed"], outcomes
        assert len(ledger.applied) == 2 * n, "nothing else was applied"
        assert sum(f["taken_over"] for f in figures.values()) == len(taken) > 0
        assert figures[paused.instance_id]["taken_over"] == 0
        # What it was running when it stopped was taken over (but for an end already on its way to the
        # database, which completed it in one attempt, as checked above).
        assert stranded & taken
        print(
            f"\nSIGSTOP: {len(taken)} attempts taken over {takeover_s:.2f}s after the stop, all {n} done after "
            f"{completed_s:.2f}s; {ledger.re_executions} steps re-run; {fenced} late writes refused after SIGCONT; "
            f"{figures}"
        )


def test_timers_fire_once_across_instances(tmp_path: Path) -> None:
    """Sleeps long enough to suspend, started through all three proxies; clients wait on another one."""
    n = 30
    with shared_cluster(tmp_path, lease_ms=LEASE_MS) as c:
        proxies = c.proxies
        ids = [send_nap(proxies, i, f"nap-{i}", 1.5) for i in range(n)]
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=2 * n) as pool:
            # For each, a client waits on each of the two proxies it was not started on.
            others = [(i, p) for k, i in enumerate(ids) for p in ((k + 1) % 3, (k + 2) % 3)]
            waiting = {(i, p): pool.submit(attach, proxies[p], i) for i, p in others}
            answers = {waiter: f.result(timeout=60) for waiter, f in waiting.items()}
        elapsed_s = time.monotonic() - started

        ledger = FlowsLedger(tmp_path / "flows.db")
        owners = final_owner(c)
        for k, invocation_id in enumerate(ids):
            found = c.invocation(invocation_id, via=proxies[k % 3])
            check_nap(found, ledger)
            for p in ((k + 1) % 3, (k + 2) % 3):
                answer = answers[(invocation_id, p)]
                assert (answer.status_code, answer.json()) == (200, found["output"]), answer.text
            # The sleep suspended the first attempt; its timer, fired once, resumed it once.
            assert [a["outcome"] for a in found["attempts"]] == ["suspended", "completed"], found["attempts"]
            for key in (f"{invocation_id}:0", f"{invocation_id}:2"):
                assert ledger.executions[key] == 1, f"{key} ran {ledger.executions[key]} times"
        assert c.query("SELECT count(*) FROM timers") == [(0,)], "every timer fired (and was deleted)"
        assert c.query("SELECT count(*) FROM completions") == [(n,)], "one completion per sleep"
        # At least one of the two clients of each waited on an instance that did not end it (nor start it):
        # the answer came through a broadcast.
        heard = [(i, p) for i, p in answers if owners[i] != f"proxy-{p}"]
        assert {i for i, _ in heard} == set(ids)
        started_elsewhere = [i for k, i in enumerate(ids) if owners[i] != f"proxy-{k % 3}"]
        print(
            f"\ntimers: {n} sleeps of 1.5 s done in {elapsed_s:.2f}s; {len(heard)} answers heard through a "
            f"broadcast; {len(started_elsewhere)} resumed on another instance than the one that started them; "
            f"resumed by {dict(Counter(owners.values()))}"
        )


def test_one_writer_per_object_key_across_instances(tmp_path: Path) -> None:
    """60 exclusive calls on one key at once, through three proxies: one at a time, none lost."""
    n = 60
    ledger_path = tmp_path / "guarded.db"
    open_guarded_ledger(ledger_path).close()
    with shared_cluster(
        tmp_path,
        lease_ms=LEASE_MS,
        app="tests.processes.guarded_app:app",
        expect_service="Guarded",
        service_env={"GUARDED_LEDGER": str(ledger_path)},
    ) as c:
        proxies = c.proxies
        gate = threading.Barrier(n)

        def bump(i: int) -> tuple[str, int]:
            gate.wait(timeout=30)
            response = httpx.post(f"{proxies[i % 3].ingress}/Guarded/hot/bump", timeout=120)
            assert response.status_code == 200, response.text
            return response.headers["x-restate-id"], response.json()

        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=n) as pool:
            results = list(pool.map(bump, range(n)))
        elapsed_s = time.monotonic() - started

        assert sorted(value for _, value in results) == list(range(1, n + 1)), "each call saw its own value"
        for proxy in proxies:
            view = httpx.get(f"{proxy.admin}/objects/Guarded/hot", timeout=10).json()
            assert (view["state"], view["lock_holder"], view["queue"]) == ({"n": n}, None, [])
            assert httpx.post(f"{proxy.ingress}/Guarded/hot/value", timeout=30).json() == n

        db = open_guarded_ledger(ledger_path)
        try:
            overlaps = db.execute("SELECT * FROM overlaps").fetchall()
            visits = db.execute(
                "SELECT invocation_id, event, at_ns, value FROM visits WHERE object_key = 'hot' ORDER BY at_ns"
            ).fetchall()
        finally:
            db.close()
        assert overlaps == [], "an invocation entered the key while another was inside"
        ids = {invocation_id for invocation_id, _ in results}
        assert len(ids) == n
        # enter, leave, enter, leave...: each call alone inside, from its entry to its exit.
        assert [event for _, event, _, _ in visits] == ["enter", "leave"] * n
        for k in range(n):
            (entered, _, _, _), (left, _, _, value) = visits[2 * k], visits[2 * k + 1]
            assert entered == left and entered in ids
            assert value == k + 1, "the calls ran one after another, each on its predecessor's state"
        # The calls came in through all three; each queued behind the key's lock, held in the database.
        # (The instance that ends a holder starts the next in the queue: the chain tends to stay there.)
        owners = final_owner(c)
        ran_on = Counter(owners[i] for i in ids)
        print(f"\nobject key: {n} exclusive calls through 3 proxies in {elapsed_s:.2f}s, run by {dict(ran_on)}")
