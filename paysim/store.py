"""The provider's durable state: one SQLite file (stdlib ``sqlite3``, WAL).

Every API call is ONE transaction (``transaction()``): the idempotency lookup, the act
(payment rows, movements), the stored answer and the queued webhooks commit together,
so a kill at any point leaves either nothing or everything. ``synchronous=NORMAL`` in
WAL mode survives the process being killed (what this simulator is tested against);
only a power cut could lose the last commits, as the SQLite docs say.

All access comes from the event loop's thread and never awaits inside a transaction,
so one connection serves the whole process and calls never interleave.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocol.private_files import create_private

SCHEMA = """
CREATE TABLE IF NOT EXISTS payments (
    id TEXT PRIMARY KEY,                  -- auth_… (a hold) or ch_… (an immediate charge)
    kind TEXT NOT NULL,                   -- authorization | charge
    reference TEXT NOT NULL,              -- the merchant's own id for it
    currency TEXT NOT NULL,
    amount_cents INTEGER NOT NULL,
    captured_cents INTEGER NOT NULL DEFAULT 0,
    refunded_cents INTEGER NOT NULL DEFAULT 0,
    cancelled INTEGER NOT NULL DEFAULT 0,
    settle_at REAL,                       -- when the money moved + the settle delay
    settle_outcome TEXT,                  -- SETTLED | FAILED, drawn when the money moved
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS movements (    -- every act on a payment, one row each
    id TEXT PRIMARY KEY,                  -- cap_…, can_…, re_…, or the ch_… itself
    payment_id TEXT NOT NULL REFERENCES payments (id),
    kind TEXT NOT NULL,                   -- capture | charge | cancel | refund
    amount_cents INTEGER NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS movements_by_payment ON movements (payment_id, kind);
CREATE TABLE IF NOT EXISTS idempotency (  -- the first answer of every key, replayed as is
    key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,            -- sha256 of the request: another body → 409
    status INTEGER NOT NULL,
    body TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS webhooks (     -- outgoing, until a 2xx; never dropped
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,               -- a duplicate copy shares it
    type TEXT NOT NULL,
    body BLOB NOT NULL,
    due_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    delivered_at REAL,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS webhooks_due ON webhooks (due_at) WHERE delivered_at IS NULL;
CREATE TABLE IF NOT EXISTS calls (op TEXT PRIMARY KEY, n INTEGER NOT NULL);
"""

MONEY_MOVED = ("capture", "charge")  # the movements that take the customer's money


@dataclass
class Payment:
    id: str
    kind: str
    reference: str
    currency: str
    amount_cents: int
    created_at: float
    captured_cents: int = 0
    refunded_cents: int = 0
    cancelled: bool = False
    settle_at: float | None = None
    settle_outcome: str | None = None


@dataclass(frozen=True)
class StoredAnswer:
    fingerprint: str
    status: int
    body: dict[str, Any]


@dataclass(frozen=True)
class Webhook:
    id: int
    event_id: str
    type: str
    body: bytes
    due_at: float
    attempts: int


_PAYMENT_COLUMNS = ", ".join(Payment.__dataclass_fields__)


class Store:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        create_private(path)  # payments: 0600 from the start (its -wal/-shm copy the mode)
        # autocommit mode: transactions are the explicit BEGIN IMMEDIATE of transaction()
        self.conn = sqlite3.connect(path, isolation_level=None, timeout=10.0)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("PRAGMA foreign_keys=ON")
        self.conn.executescript(SCHEMA)

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[Store]:
        """One atomic unit: committed when the block ends, rolled back if it raises."""
        self.conn.execute("BEGIN IMMEDIATE")  # the write lock now, not at the first write
        try:
            yield self
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # ------------------------------------------------------------ calls and answers
    def count_call(self, op: str) -> None:
        self.conn.execute(
            "INSERT INTO calls (op, n) VALUES (?, 1) ON CONFLICT (op) DO UPDATE SET n = n + 1",
            (op,),
        )

    def answer(self, key: str) -> StoredAnswer | None:
        row = self.conn.execute(
            "SELECT fingerprint, status, body FROM idempotency WHERE key = ?", (key,)
        ).fetchone()
        return None if row is None else StoredAnswer(row[0], row[1], json.loads(row[2]))

    def save_answer(
        self, key: str, fingerprint: str, status: int, body: dict[str, Any], now: float
    ) -> None:
        self.conn.execute(
            "INSERT INTO idempotency (key, fingerprint, status, body, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (key, fingerprint, status, json.dumps(body), now),
        )

    # ------------------------------------------------------------ payments
    def add_payment(self, payment: Payment) -> None:
        values = tuple(getattr(payment, name) for name in Payment.__dataclass_fields__)
        marks = ", ".join("?" * len(values))
        self.conn.execute(f"INSERT INTO payments ({_PAYMENT_COLUMNS}) VALUES ({marks})", values)

    def payment(self, payment_id: str) -> Payment | None:
        row = self.conn.execute(
            f"SELECT {_PAYMENT_COLUMNS} FROM payments WHERE id = ?", (payment_id,)
        ).fetchone()
        return None if row is None else _payment(row)

    def payments(self, kind: str) -> list[Payment]:
        rows = self.conn.execute(
            f"SELECT {_PAYMENT_COLUMNS} FROM payments WHERE kind = ? ORDER BY created_at, id",
            (kind,),
        )
        return [_payment(row) for row in rows]

    def save_payment(self, payment: Payment) -> None:
        """Write back what an act may change."""
        self.conn.execute(
            "UPDATE payments SET captured_cents = ?, refunded_cents = ?, cancelled = ?, "
            "settle_at = ?, settle_outcome = ? WHERE id = ?",
            (
                payment.captured_cents,
                payment.refunded_cents,
                int(payment.cancelled),
                payment.settle_at,
                payment.settle_outcome,
                payment.id,
            ),
        )

    def add_movement(
        self, movement_id: str, payment_id: str, kind: str, amount_cents: int, now: float
    ) -> None:
        self.conn.execute(
            "INSERT INTO movements (id, payment_id, kind, amount_cents, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (movement_id, payment_id, kind, amount_cents, now),
        )

    # ------------------------------------------------------------ webhooks
    def queue_webhook(self, event_id: str, type_: str, body: bytes, due_at: float) -> None:
        self.conn.execute(
            "INSERT INTO webhooks (event_id, type, body, due_at) VALUES (?, ?, ?, ?)",
            (event_id, type_, body, due_at),
        )

    def due_webhooks(self, now: float, limit: int) -> list[Webhook]:
        rows = self.conn.execute(
            "SELECT id, event_id, type, body, due_at, attempts FROM webhooks "
            "WHERE delivered_at IS NULL AND due_at <= ? ORDER BY due_at, id LIMIT ?",
            (now, limit),
        )
        return [Webhook(*row) for row in rows]

    def pending_webhooks(self) -> list[Webhook]:
        rows = self.conn.execute(
            "SELECT id, event_id, type, body, due_at, attempts FROM webhooks "
            "WHERE delivered_at IS NULL ORDER BY due_at, id"
        )
        return [Webhook(*row) for row in rows]

    def delivered(self, webhook_id: int, now: float) -> None:
        with self.transaction():
            self.conn.execute(
                "UPDATE webhooks SET delivered_at = ?, attempts = attempts + 1 WHERE id = ?",
                (now, webhook_id),
            )

    def retry_later(self, webhook_id: int, attempts: int, due_at: float, error: str) -> None:
        with self.transaction():
            self.conn.execute(
                "UPDATE webhooks SET attempts = ?, due_at = ?, last_error = ? WHERE id = ?",
                (attempts, due_at, error[:200], webhook_id),
            )

    # ------------------------------------------------------------ statistics
    def calls(self) -> Counter[str]:
        return Counter(dict(self.conn.execute("SELECT op, n FROM calls").fetchall()))

    def real_captures(self) -> Counter[str]:
        """Payment id → how many times its money was actually taken (1 at most, ever)."""
        marks = ", ".join("?" * len(MONEY_MOVED))
        rows = self.conn.execute(
            f"SELECT payment_id, count(*) FROM movements WHERE kind IN ({marks}) "
            "GROUP BY payment_id",
            MONEY_MOVED,
        )
        return Counter(dict(rows.fetchall()))

    def open_authorizations(self) -> int:
        """Holds neither captured nor cancelled: money the customer cannot use."""
        row = self.conn.execute(
            "SELECT count(*) FROM payments WHERE kind = 'authorization' "
            "AND cancelled = 0 AND captured_cents = 0"
        ).fetchone()
        return int(row[0])

    def webhook_counts(self) -> dict[str, int]:
        pending, delivered = self.conn.execute(
            "SELECT count(*) FILTER (WHERE delivered_at IS NULL), "
            "count(*) FILTER (WHERE delivered_at IS NOT NULL) FROM webhooks"
        ).fetchone()
        return {"pending": pending, "delivered": delivered}


def _payment(row: tuple[Any, ...]) -> Payment:
    payment = Payment(*row)
    payment.cancelled = bool(payment.cancelled)
    return payment
