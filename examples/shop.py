"""A small stand-in for the outside world of the order example: a card processor,
an order database, a mail server and a warehouse, all kept in one SQLite file.

It behaves like the real services it replaces where it matters for durability:
the card processor honours idempotency keys the way Stripe does (the same key
charges once and returns the same charge), and every physical call is logged,
so a test can count how often each side effect really ran.

The file is ``$ORDER_LEDGER``, or ``.run/shop.db`` in the working directory.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import uuid
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    operation TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    pid INTEGER NOT NULL,
    at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS charges (
    idempotency_key TEXT PRIMARY KEY,
    charge_id TEXT NOT NULL,
    amount_cents INTEGER NOT NULL,
    card TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS orders (
    idempotency_key TEXT PRIMARY KEY,
    order_id TEXT NOT NULL,
    charge_id TEXT NOT NULL,
    customer_email TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS emails (
    idempotency_key TEXT PRIMARY KEY,
    recipient TEXT NOT NULL,
    subject TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS inventory (
    sku TEXT PRIMARY KEY,
    reserved INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS reservations (
    idempotency_key TEXT NOT NULL,
    sku TEXT NOT NULL,
    quantity INTEGER NOT NULL,
    PRIMARY KEY (idempotency_key, sku)
);
"""


class CardDeclined(Exception):
    pass


class Shop:
    """The downstream services. Each method is one call to one of them."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._db() as db:
            db.executescript(_SCHEMA)

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            self._local.db = db
        return db

    def _log(self, db: sqlite3.Connection, operation: str, key: str) -> None:
        db.execute(
            "INSERT INTO calls (operation, idempotency_key, pid, at_ms) VALUES (?, ?, ?, ?)",
            (operation, key, os.getpid(), time.time_ns() // 1_000_000),
        )

    def charge(self, idempotency_key: str, card: str, amount_cents: int) -> str:
        """Charge a card once per idempotency key; a repeat returns the first charge."""
        if card.startswith("declined"):
            raise CardDeclined(f"card {card} was declined")
        db = self._db()
        with db:
            db.execute("BEGIN IMMEDIATE")
            self._log(db, "charge", idempotency_key)
            db.execute(
                "INSERT OR IGNORE INTO charges VALUES (?, ?, ?, ?)",
                (idempotency_key, f"ch_{uuid.uuid4().hex[:16]}", amount_cents, card),
            )
            row = db.execute("SELECT charge_id FROM charges WHERE idempotency_key = ?", (idempotency_key,)).fetchone()
        return str(row[0])

    def create_order(self, idempotency_key: str, charge_id: str, customer_email: str) -> str:
        db = self._db()
        with db:
            db.execute("BEGIN IMMEDIATE")
            self._log(db, "create_order", idempotency_key)
            db.execute(
                "INSERT OR IGNORE INTO orders VALUES (?, ?, ?, ?)",
                (idempotency_key, f"ord_{uuid.uuid4().hex[:12]}", charge_id, customer_email),
            )
            row = db.execute("SELECT order_id FROM orders WHERE idempotency_key = ?", (idempotency_key,)).fetchone()
        return str(row[0])

    def send_email(self, idempotency_key: str, recipient: str, subject: str) -> None:
        db = self._db()
        with db:
            db.execute("BEGIN IMMEDIATE")
            self._log(db, "send_email", idempotency_key)
            db.execute("INSERT OR IGNORE INTO emails VALUES (?, ?, ?)", (idempotency_key, recipient, subject))

    def reserve(self, idempotency_key: str, items: dict[str, int]) -> None:
        db = self._db()
        with db:
            db.execute("BEGIN IMMEDIATE")
            self._log(db, "reserve", idempotency_key)
            for sku, quantity in sorted(items.items()):
                inserted = db.execute(
                    "INSERT OR IGNORE INTO reservations VALUES (?, ?, ?)", (idempotency_key, sku, quantity)
                ).rowcount
                if inserted:
                    db.execute(
                        "INSERT INTO inventory (sku, reserved) VALUES (?, ?) "
                        "ON CONFLICT (sku) DO UPDATE SET reserved = reserved + excluded.reserved",
                        (sku, quantity),
                    )

    # ------------------------------------------------------------------ for tests and curious users

    def count_calls(self, operation: str) -> int:
        return int(self._db().execute("SELECT count(*) FROM calls WHERE operation = ?", (operation,)).fetchone()[0])

    def count(self, table: str) -> int:
        if table not in ("charges", "orders", "emails", "reservations"):
            raise ValueError(table)
        return int(self._db().execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def default_shop() -> Shop:
    return Shop(os.environ.get("ORDER_LEDGER", ".run/shop.db"))
