"""Load held: 32 concurrent clients against the order example, for a minute, with no error and no memory growth.

``LOAD_SECONDS`` (default 60) and ``LOAD_WARMUP_SECONDS`` (default 10) set the
durations. The figures are printed and written to ``$LOAD_REPORT`` when set.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from .cluster import Cluster, cluster

pytestmark = pytest.mark.processes

CLIENTS = 32
ORDER = {
    "customer_email": "load@example.com",
    "card": "tok_visa",
    "items": [{"sku": "pen", "quantity": 1, "price_cents": 300}],
}


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def _drive(c: Cluster, seconds: float, counter: dict[str, Any]) -> None:
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=c.ingress, limits=limits, timeout=30) as client:

        async def worker(n: int) -> None:
            i = 0
            while time.monotonic() < deadline:
                i += 1
                try:
                    response = await client.post(
                        "/OrderService/process_order", json=ORDER, headers={"idempotency-key": f"load-{n}-{i}"}
                    )
                except httpx.HTTPError as exc:
                    counter["errors"].append(f"{type(exc).__name__}: {exc}")
                    continue
                if response.status_code != 200:
                    counter["errors"].append(f"{response.status_code}: {response.text[:200]}")
                else:
                    counter["ok"] += 1
                    counter["latencies"].append(response.elapsed.total_seconds() * 1000)

        await asyncio.gather(*(worker(n) for n in range(CLIENTS)))


def test_32_clients_for_a_minute_without_errors_or_memory_growth(tmp_path: Path) -> None:
    seconds = float(os.environ.get("LOAD_SECONDS", "60"))
    warmup = float(os.environ.get("LOAD_WARMUP_SECONDS", "10"))
    with cluster(tmp_path, service_env={"GATE_OPERATION": "none"}) as c:  # no step is held at a gate
        counter: dict[str, Any] = {"ok": 0, "errors": [], "latencies": []}
        asyncio.run(_drive(c, warmup, counter))
        warm_rss = _rss_kib(c.proxy.pid)
        measured: dict[str, Any] = {"ok": 0, "errors": [], "latencies": []}
        started = time.monotonic()
        asyncio.run(_drive(c, seconds, measured))
        elapsed = time.monotonic() - started
        end_rss = _rss_kib(c.proxy.pid)
        latencies = sorted(measured["latencies"])
        report = {
            "clients": CLIENTS,
            "seconds": round(elapsed, 1),
            "invocations": measured["ok"],
            "errors": len(measured["errors"]) + len(counter["errors"]),
            "throughput_per_s": round(measured["ok"] / elapsed, 1),
            "p50_ms": round(latencies[len(latencies) // 2], 1) if latencies else None,
            "p99_ms": round(latencies[int(len(latencies) * 0.99)], 1) if latencies else None,
            "proxy_rss_after_warmup_kib": warm_rss,
            "proxy_rss_at_end_kib": end_rss,
        }
        print(json.dumps(report))
        if path := os.environ.get("LOAD_REPORT"):
            Path(path).write_text(json.dumps(report, indent=2))
        assert counter["errors"] == [] and measured["errors"] == [], (counter["errors"] + measured["errors"])[:5]
        assert measured["ok"] > 0
        assert end_rss <= warm_rss * 1.2, f"the proxy grew from {warm_rss} KiB to {end_rss} KiB"
