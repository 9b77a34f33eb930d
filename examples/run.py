"""``make run``: the proxy on its embedded SQLite database, the order service beside it,
registered, with a curl line to try. Ctrl-C stops both.

Ports can be moved with PROXY_PORT, ADMIN_PORT, CALLBACK_PORT and SERVICE_PORT.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

RUN_DIR = Path(".run")


def _wait_healthy(url: str, process: subprocess.Popen[bytes], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{what} exited with status {process.returncode}; see the log above")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{what} did not become healthy at {url} within {timeout_s:.0f} s")


def main() -> int:
    proxy_port = int(os.environ.get("PROXY_PORT", "8080"))
    admin_port = int(os.environ.get("ADMIN_PORT", "9070"))
    service_port = int(os.environ.get("SERVICE_PORT", "9080"))
    RUN_DIR.mkdir(exist_ok=True)
    env = {**os.environ, "ORDER_LEDGER": str(RUN_DIR / "shop.db")}
    proxy = subprocess.Popen(
        [sys.executable, "-m", "proxy", "serve", "--db", str(RUN_DIR / "durable-proxy.db"),
         "--port", str(proxy_port), "--admin-port", str(admin_port),
         "--callback-port", os.environ.get("CALLBACK_PORT", "9071")],
        env=env,
    )  # fmt: skip
    service = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "examples.order_service:app", "--port", str(service_port),
         "--log-level", "warning"],
        env=env,
    )  # fmt: skip
    try:
        _wait_healthy(f"http://127.0.0.1:{admin_port}/health", proxy, "the proxy")
        _wait_healthy(f"http://127.0.0.1:{service_port}/durable/health", service, "the order service")
        response = httpx.post(
            f"http://127.0.0.1:{admin_port}/deployments", json={"uri": f"http://127.0.0.1:{service_port}/durable"}
        )
        if response.status_code >= 300:
            raise SystemExit(f"registering the order service failed: {response.text}")
        order = '{"customer_email": "ada@example.com", "card": "tok_visa", "items": [{"sku": "book", "quantity": 1, "price_cents": 2500}]}'  # noqa: E501
        print(
            f"""
durable-proxy is running: ingress http://127.0.0.1:{proxy_port}, admin http://127.0.0.1:{admin_port}
The order service is registered. Try:

  curl -s localhost:{proxy_port}/OrderService/process_order -H 'content-type: application/json' \\
       -H 'idempotency-key: order-1' -d '{order}'

then look at the invocation and its journal:

  curl -s localhost:{admin_port}/invocations

Ctrl-C stops both processes. State lives in {RUN_DIR}/.
""",
            flush=True,
        )
        while proxy.poll() is None and service.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for process in (service, proxy):
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        for process in (service, proxy):
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.exit(main())
