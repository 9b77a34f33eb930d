"""Every named crash point, with real processes: the armed process kills itself there, the test restarts it.

One order goes through the cluster with one point armed (a proxy point in the
proxy, an SDK point in both instances, once across restarts). The process
dies at the point; the test restarts it and sends the same request again, with
the same Idempotency-Key, until it is answered. Then the result, the journal,
the attempts, the ledger and the proxy's database must show that the crash
lost nothing and applied nothing twice.
"""

from __future__ import annotations

import signal
import sqlite3
import threading
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from examples.shop import Shop
from handler_sdk import _crashpoints as sdk_points
from proxy import crashpoints as proxy_points

from .cluster import Cluster, Process, cluster, wait_until

pytestmark = pytest.mark.processes

ORDER = {
    "customer_email": "ada@example.com",
    "card": "tok_visa",
    "items": [{"sku": "book", "quantity": 2, "price_cents": 1250}, {"sku": "pen", "quantity": 1, "price_cents": 300}],
}
STEPS = ["charge-payment", "create-order", "send-confirmation-email", "update-inventory"]
KEY = {"idempotency-key": "order-crash-1"}
FENCED = "rejected an append from superseded attempt 1"


@dataclass(frozen=True)
class Expected:
    """What a crash at the point leaves behind, once the invocation completed."""

    #: The outcome of each attempt, in order.
    attempts: list[str]
    #: The attempt that journaled each step.
    written_by: list[int]
    #: How often the charge function really ran (the payment is applied once whatever this is).
    charges_run: int = 1
    #: The attempt that crashed keeps running and reports a step after the restart: it must be refused.
    zombie_fenced: bool = False


# The first step is where every step-level point fires: the charge.
EXPECTED: dict[str, Expected] = {
    # The submission's commit also claimed the first attempt (one commit, not two): restarting abandons it.
    "proxy.submit.after_commit": Expected(["abandoned", "completed"], [2, 2, 2, 2]),
    # The charge ran, its append was lost with the proxy: the next attempt charges again (same idempotency key).
    "proxy.append.before_commit": Expected(["abandoned", "completed"], [2, 2, 2, 2], charges_run=2, zombie_fenced=True),
    # The charge was committed by attempt 1 but never acknowledged: attempt 2 replays it.
    "proxy.append.after_commit": Expected(["abandoned", "completed"], [1, 2, 2, 2], zombie_fenced=True),
    "proxy.end.after_commit": Expected(["completed"], [1, 1, 1, 1]),
    "proxy.timer.before_fire": Expected(["completed"], [1, 1, 1, 1]),
    "proxy.claim.after_commit": Expected(["abandoned", "completed"], [2, 2, 2, 2]),
    "sdk.step.before_run": Expected(["retry", "completed"], [2, 2, 2, 2]),
    # The side effect happened, its result was lost: the step runs again.
    "sdk.step.after_run": Expected(["retry", "completed"], [2, 2, 2, 2], charges_run=2),
    "sdk.append.after_send": Expected(["retry", "completed"], [1, 2, 2, 2]),
    "sdk.response.before_send": Expected(["retry", "completed"], [1, 1, 1, 1]),
}


def test_the_matrix_covers_every_point() -> None:
    assert set(EXPECTED) == set(proxy_points.POINTS) | set(sdk_points.POINTS)


def _submit(c: Cluster, point: str, timeout: float) -> httpx.Response:
    """Send the order once: a call, or for the timer point a delayed send (its start is a timer) and an attach."""
    if point != "proxy.timer.before_fire":
        return httpx.post(f"{c.ingress}/OrderService/process_order", json=ORDER, headers=KEY, timeout=timeout)
    sent = httpx.post(
        f"{c.ingress}/OrderService/process_order/send?delay=50ms", json=ORDER, headers=KEY, timeout=timeout
    )
    if sent.status_code != 202:
        return sent
    return httpx.get(f"{c.ingress}/restate/attach/{sent.json()['invocationId']}", timeout=timeout)


def _until_answered(c: Cluster, point: str, timeout_s: float = 30.0) -> httpx.Response:
    """Re-send until the proxy answers; connection errors while it is down or restarting are expected."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return _submit(c, point, timeout=max(deadline - time.monotonic(), 0.1))
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _died(candidates: list[Process]) -> Process:
    wait_until(lambda: any(p.exited() for p in candidates), "the armed process to kill itself", 20)
    dead = [p for p in candidates if p.exited()]
    assert len(dead) == 1, [p.name for p in dead]
    assert dead[0].popen is not None and dead[0].popen.returncode == -signal.SIGKILL
    return dead[0]


@pytest.mark.parametrize("point", list(EXPECTED))
def test_a_crash_at_the_point_loses_nothing_and_applies_nothing_twice(tmp_path: Path, point: str) -> None:
    expected = EXPECTED[point]
    once_dir = tmp_path / "fired"
    armed = {"DURABLE_CRASH_POINTS": point, "DURABLE_CRASH_ONCE_DIR": str(once_dir)}
    in_proxy = point.startswith("proxy.")
    service_env = {"GATE_OPERATION": "none", **({} if in_proxy else armed)}  # no gate: nothing stops
    with cluster(tmp_path, service_env=service_env, proxy_env=armed if in_proxy else None) as c:
        first: dict[str, Any] = {}

        def client() -> None:
            try:
                first["response"] = _submit(c, point, timeout=60)
            except httpx.TransportError as exc:
                first["error"] = exc

        thread = threading.Thread(target=client)
        thread.start()
        victim = _died([c.proxy] if in_proxy else c.services)
        assert (once_dir / point).read_text() == str(victim.pid), "the marker names the process that fired"
        assert f"crash point {point}: killing pid {victim.pid}" in victim.output()
        victim.restart()

        answers = [_until_answered(c, point) for _ in range(2)]
        thread.join(timeout=60)
        assert not thread.is_alive()
        for answer in answers:
            assert answer.status_code == 200, answer.text
        if "response" in first:
            answers.append(first["response"])
        else:
            assert in_proxy, f"only a dying proxy cuts the client off: {first.get('error')!r}"
        assert len({a.content for a in answers}) == 1, "every answer carries the same result"
        assert len({a.headers["x-restate-id"] for a in answers}) == 1, "every answer is about the same invocation"
        invocation_id = answers[0].headers["x-restate-id"]

        found = c.invocation(invocation_id)
        assert found["status"] == "completed"
        journal = found["journal"]
        assert [e["index"] for e in journal] == list(range(len(journal))), "the journal is contiguous"
        assert [e["name"] for e in journal] == STEPS, "each step recorded exactly once, in order"
        assert [e["attempt"] for e in journal] == expected.written_by
        assert [a["outcome"] for a in found["attempts"]] == expected.attempts

        if expected.zombie_fenced:
            # The crashed attempt's handler retried its append against the restarted proxy: refused.
            wait_until(lambda: FENCED in c.proxy.output(), "the zombie's append to be fenced", 10)
            assert c.invocation(invocation_id)["journal"] == journal, "the zombie changed nothing"

        shop = Shop(c.ledger)
        result = answers[0].json()
        assert shop.count("charges") == 1, "the payment was applied once"
        assert shop.count("orders") == 1
        assert shop.count("emails") == 1
        assert shop.count("reservations") == 2
        charge_id = shop._db().execute("SELECT charge_id FROM charges").fetchone()[0]
        order_id = shop._db().execute("SELECT order_id FROM orders").fetchone()[0]
        assert result == {"order_id": order_id, "payment_id": charge_id, "amount_cents": 2800}
        assert shop.count_calls("charge") >= shop.count("charges"), "executions >= applied"
        assert shop.count_calls("charge") == expected.charges_run, "executions of the interrupted step"
        for operation in ("create_order", "send_email", "reserve"):
            assert shop.count_calls(operation) == 1, operation

        with closing(sqlite3.connect(c.db)) as db:
            assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
