"""The example order service, instrumented for crash tests.

It is ``examples.order_service`` with its shop swapped for one whose chosen
operation (``$GATE_OPERATION``) stops, the first time any instance reaches it,
until the test creates ``$GATE_DIR/release``. The instance that stopped writes
its pid to ``$GATE_DIR/holder``, so the test knows which process to kill.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from examples import order_service
from examples.shop import Shop


class GatedShop(Shop):
    def __init__(self, path: str, gate_dir: Path, operation: str) -> None:
        super().__init__(path)
        self.gate_dir = gate_dir
        self.operation = operation

    def _gate(self, operation: str) -> None:
        if operation != self.operation:
            return
        try:
            fd = os.open(self.gate_dir / "taken", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return  # someone already stopped here once: go straight through
        os.close(fd)
        (self.gate_dir / "holder.tmp").write_text(str(os.getpid()))
        (self.gate_dir / "holder.tmp").rename(self.gate_dir / "holder")
        deadline = time.monotonic() + 120
        while not (self.gate_dir / "release").exists():
            if time.monotonic() > deadline:
                raise TimeoutError("the test never released the gate")
            time.sleep(0.02)

    def charge(self, idempotency_key: str, card: str, amount_cents: int) -> str:
        self._gate("charge")
        return super().charge(idempotency_key, card, amount_cents)

    def create_order(self, idempotency_key: str, charge_id: str, customer_email: str) -> str:
        self._gate("create_order")
        return super().create_order(idempotency_key, charge_id, customer_email)


order_service.shop = GatedShop(
    os.environ["ORDER_LEDGER"], Path(os.environ["GATE_DIR"]), os.environ.get("GATE_OPERATION", "create_order")
)
app = order_service.app
