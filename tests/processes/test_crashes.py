"""Crash recovery with real processes: kill -9 handler instances and the proxy, then check the ledger."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from examples.shop import Shop

from .cluster import cluster, wait_until

pytestmark = pytest.mark.processes

ORDER = {
    "customer_email": "ada@example.com",
    "card": "tok_visa",
    "items": [{"sku": "book", "quantity": 2, "price_cents": 1250}, {"sku": "pen", "quantity": 1, "price_cents": 300}],
}
STEPS = ["charge-payment", "create-order", "send-confirmation-email", "update-inventory"]


def _check_journal(found: dict[str, Any]) -> None:
    journal = found["journal"]
    assert [e["index"] for e in journal] == list(range(len(journal))), "journal is not contiguous"
    assert [e["name"] for e in journal] == STEPS, "each step recorded exactly once, in order"


def _check_ledger(shop: Shop, result: dict[str, Any]) -> None:
    assert shop.count_calls("charge") == 1, "the payment function ran exactly once"
    assert shop.count("charges") == 1
    assert shop.count("orders") == 1
    assert shop.count("emails") == 1
    assert shop.count("reservations") == 2
    charge_id = shop._db().execute("SELECT charge_id FROM charges").fetchone()[0]
    order_id = shop._db().execute("SELECT order_id FROM orders").fetchone()[0]
    assert result == {"order_id": order_id, "payment_id": charge_id, "amount_cents": 2800}


def test_killing_the_instance_mid_invocation_finishes_on_the_other(tmp_path: Path) -> None:
    with cluster(tmp_path) as c:
        sent = httpx.post(f"{c.ingress}/OrderService/process_order/send", json=ORDER, timeout=10)
        assert sent.status_code == 202
        invocation_id = sent.json()["invocationId"]
        # The instance is now inside create-order: charge-payment was journaled and acknowledged.
        victim = c.service_by_pid(c.holder_pid())
        assert [e["name"] for e in c.invocation(invocation_id)["journal"]] == ["charge-payment"]
        victim.kill9()

        attached = httpx.get(f"{c.ingress}/restate/attach/{invocation_id}", timeout=60)
        assert attached.status_code == 200, attached.text
        found = c.invocation(invocation_id)
        assert found["status"] == "completed"
        _check_journal(found)
        victim_uri = victim.health_url.removesuffix("/health")
        attempts = found["attempts"]
        assert attempts[0]["endpoint"] == victim_uri and attempts[0]["outcome"] == "retry"
        assert attempts[-1]["endpoint"] != victim_uri and attempts[-1]["outcome"] == "completed"
        assert all(e["attempt"] == 1 for e in found["journal"][:1])
        shop = Shop(c.ledger)
        _check_ledger(shop, attached.json())
        assert shop.count_calls("create_order") == 1, "the victim died before its call; the other instance made it"


def test_killing_the_proxy_mid_invocation_resumes_after_restart(tmp_path: Path) -> None:
    headers = {"idempotency-key": "order-42"}
    with cluster(tmp_path) as c:
        first_try: dict[str, Any] = {}

        def client() -> None:
            try:
                first_try["response"] = httpx.post(
                    f"{c.ingress}/OrderService/process_order", json=ORDER, headers=headers, timeout=60
                )
            except httpx.HTTPError as exc:
                first_try["error"] = exc

        thread = threading.Thread(target=client)
        thread.start()
        c.holder_pid()  # an instance is inside create-order
        c.proxy.kill9()
        thread.join(timeout=30)
        assert "error" in first_try, "the client lost its connection with the proxy"

        c.proxy.start()
        # The interrupted attempt wakes up now and reports create-order: it must be refused.
        c.release_gate()
        retried = httpx.post(f"{c.ingress}/OrderService/process_order", json=ORDER, headers=headers, timeout=60)
        assert retried.status_code == 200, retried.text
        again = httpx.post(f"{c.ingress}/OrderService/process_order", json=ORDER, headers=headers, timeout=60)
        assert again.content == retried.content
        assert again.headers["x-restate-id"] == retried.headers["x-restate-id"]

        found = c.invocation(retried.headers["x-restate-id"])
        _check_journal(found)
        assert found["attempts"][0]["outcome"] == "abandoned"
        _check_ledger(Shop(c.ledger), retried.json())
        wait_until(lambda: "rejected an append from superseded attempt 1" in c.proxy.output(), "the fenced append")


def test_a_paused_instance_cannot_write_after_it_was_superseded(tmp_path: Path) -> None:
    with cluster(tmp_path, proxy_args=["--inactivity-timeout-ms", "1500"]) as c:
        sent = httpx.post(f"{c.ingress}/OrderService/process_order/send", json=ORDER, timeout=10)
        invocation_id = sent.json()["invocationId"]
        paused = c.service_by_pid(c.holder_pid())
        paused.signal(signal.SIGSTOP)
        c.release_gate()  # it will see the release only when it runs again

        attached = httpx.get(f"{c.ingress}/restate/attach/{invocation_id}", timeout=60)
        assert attached.status_code == 200, attached.text
        found = c.invocation(invocation_id)
        assert "made no progress" in found["attempts"][0]["failure"]["message"]
        create_order = found["journal"][1]
        assert create_order["name"] == "create-order" and create_order["attempt"] == 2

        paused.signal(signal.SIGCONT)
        wait_until(lambda: "rejected an append from superseded attempt 1" in c.proxy.output(), "the fenced append")
        shop = Shop(c.ledger)
        wait_until(lambda: shop.count_calls("create_order") == 2, "the paused instance to finish its step")
        assert c.invocation(invocation_id)["journal"] == found["journal"], "the zombie changed nothing"
        _check_ledger(shop, attached.json())
        assert shop.count_calls("send_email") == 1, "the zombie stopped at its refused append"
