"""The purchases benchmark's baseline: a purchase's database work to CHARGED, replayed by
a bare asyncpg client (no SQLAlchemy, no HTTP, no provider, no gateway, no Redis).

The same number of transactions and statements per purchase as the backend's budget
(tests/backend/test_statement_budget.py: 13 transactions, 48 statements besides
``BEGIN``), of the same kinds (selects by key, inserts, guarded updates with
``RETURNING``, a ``FOR UPDATE SKIP LOCKED`` claim), on tables of their own in a
``replay`` schema of the benchmark's database. Each purchase runs its phases one after
the other, ``concurrency`` purchases at a time; nothing is batched across purchases (the
backend batches claims and consumer reads, so this is a fair upper bound on what the
database and the driver alone can do per purchase, on the same cores).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg

SCHEMA = """
DROP SCHEMA IF EXISTS replay CASCADE;
CREATE SCHEMA replay;
CREATE TABLE replay.token (token text PRIMARY KEY, customer_id int NOT NULL);
CREATE TABLE replay.vehicle (id int PRIMARY KEY, customer_id int NOT NULL, vin text NOT NULL);
CREATE TABLE replay.purchase (
    id uuid PRIMARY KEY, customer_id int NOT NULL, vehicle_id int NOT NULL,
    service_id text NOT NULL, state text NOT NULL, price_cents int NOT NULL,
    activation_id uuid NOT NULL UNIQUE, created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL);
CREATE INDEX ON replay.purchase (vehicle_id, state);
CREATE TABLE replay.payment (
    id uuid PRIMARY KEY, purchase_id uuid NOT NULL REFERENCES replay.purchase,
    state text NOT NULL, amount_cents int NOT NULL, provider_ref text,
    updated_at timestamptz NOT NULL);
CREATE TABLE replay.idempotency (key text PRIMARY KEY, customer_id int NOT NULL,
    purchase_id uuid NOT NULL);
CREATE TABLE replay.money_op (
    id uuid PRIMARY KEY, payment_id uuid NOT NULL REFERENCES replay.payment,
    kind text NOT NULL, state text NOT NULL, next_attempt_at timestamptz NOT NULL);
CREATE INDEX ON replay.money_op (payment_id);
CREATE TABLE replay.outbox (
    id bigserial PRIMARY KEY, purchase_id uuid NOT NULL, payload jsonb NOT NULL,
    available_at timestamptz NOT NULL, delivered_at timestamptz);
CREATE INDEX ON replay.outbox (purchase_id) WHERE delivered_at IS NULL;
CREATE TABLE replay.inbox (key text PRIMARY KEY, at timestamptz NOT NULL);
CREATE TABLE replay.timeline (id bigserial PRIMARY KEY, purchase_id uuid NOT NULL,
    state text NOT NULL, at timestamptz NOT NULL);
CREATE TABLE replay.notification (id bigserial PRIMARY KEY, purchase_id uuid NOT NULL,
    kind text NOT NULL, status text NOT NULL, next_attempt_at timestamptz NOT NULL);
CREATE INDEX ON replay.notification (purchase_id);
"""

Args = Callable[[dict[str, Any]], tuple[Any, ...]]
# one transaction: its statements, each with the arguments it takes from the purchase
Transaction = list[tuple[str, Args]]


def _p(*keys: str) -> Args:
    return lambda ctx: tuple(ctx[k] for k in keys)


LEASE = "now() + interval '30 seconds'"
CLAIM_OP = (
    "UPDATE replay.money_op SET next_attempt_at = " + LEASE + " WHERE id IN (SELECT id FROM"
    " replay.money_op WHERE payment_id = $1 AND kind = $2 AND state = 'REQUESTED'"
    " FOR UPDATE SKIP LOCKED) RETURNING id, payment_id"
)
RECORD_OP = "UPDATE replay.money_op SET state = 'DONE' WHERE id = $1 AND state = 'REQUESTED'"
TIMELINE = "INSERT INTO replay.timeline (purchase_id, state, at) VALUES ($1, $2, now())"
SET_PAYMENT = (
    "UPDATE replay.payment SET state = $2, updated_at = now() WHERE id = $1 RETURNING id, state"
)
SET_PURCHASE = "UPDATE replay.purchase SET state = $2, updated_at = now() WHERE id = $1"
PAYMENT_AND_PURCHASE = (
    "SELECT p.state, u.state, u.activation_id FROM replay.payment p JOIN replay.purchase u"
    " ON u.id = p.purchase_id WHERE p.id = $1"
)
WEBHOOK_READ = (
    "SELECT p.state, u.id, EXISTS (SELECT 1 FROM replay.inbox WHERE key = $2)"
    " FROM replay.payment p JOIN replay.purchase u ON u.id = p.purchase_id WHERE p.id = $1"
)
INBOX = "INSERT INTO replay.inbox (key, at) VALUES ($1, now())"

PHASES: list[list[Transaction]] = [
    # GET /v1/catalog: token, vehicle, cancelled services
    [
        [
            ("SELECT customer_id FROM replay.token WHERE token = $1", _p("token")),
            ("SELECT id, vin FROM replay.vehicle WHERE id = $1 AND customer_id = $2",
             _p("vehicle", "customer")),
            ("SELECT service_id FROM replay.purchase WHERE vehicle_id = $1 AND state = 'CANCELLED'",
             _p("vehicle")),
        ]
    ],
    # POST /v1/purchases: checks and inserts; then the hold recorded
    [
        [
            ("SELECT customer_id FROM replay.token WHERE token = $1", _p("token")),
            ("SELECT purchase_id FROM replay.idempotency WHERE key = $1", _p("key")),
            ("SELECT id, vin FROM replay.vehicle WHERE id = $1 AND customer_id = $2",
             _p("vehicle", "customer")),
            ("SELECT service_id, state FROM replay.purchase WHERE vehicle_id = $1"
             " AND state IN ('ACTIVE', 'PAYMENT_PENDING', 'CANCELLED', 'DEACTIVATING')",
             _p("vehicle")),
            ("INSERT INTO replay.purchase VALUES ($1, $2, $3, 'climate_plus',"
             " 'PAYMENT_PENDING', 4900, $4, now(), now())",
             _p("purchase", "customer", "vehicle", "activation")),
            ("INSERT INTO replay.payment VALUES ($1, $2, 'INITIATED', 4900, NULL, now())",
             _p("payment", "purchase")),
            ("INSERT INTO replay.idempotency VALUES ($1, $2, $3)",
             _p("key", "customer", "purchase")),
            ("INSERT INTO replay.money_op VALUES ($1, $2, 'authorize', 'REQUESTED', " + LEASE + ")",
             _p("authorize", "payment")),
            (TIMELINE, lambda c: (c["purchase"], "PAYMENT_PENDING")),
        ],
        [
            (RECORD_OP + " RETURNING id", _p("authorize")),
            (PAYMENT_AND_PURCHASE, _p("payment")),
            (SET_PAYMENT, lambda c: (c["payment"], "HELD_FOR_ACTIVATION")),
            (SET_PURCHASE, lambda c: (c["purchase"], "ACTIVATION_QUEUED")),
            ("INSERT INTO replay.outbox (purchase_id, payload, available_at)"
             " VALUES ($1, $2, now())", lambda c: (c["purchase"], c["payload"])),
            (TIMELINE, lambda c: (c["purchase"], "ACTIVATION_QUEUED")),
        ],
    ],
    # the relay: claim the outbox row (with the VIN), then mark it delivered
    [
        [
            ("UPDATE replay.outbox SET available_at = " + LEASE + " WHERE id IN (SELECT id FROM"
             " replay.outbox WHERE purchase_id = $1 AND delivered_at IS NULL"
             " FOR UPDATE SKIP LOCKED) RETURNING id, payload", _p("purchase")),
            ("SELECT v.vin FROM replay.vehicle v WHERE v.id = $1", _p("vehicle")),
        ],
        [
            ("UPDATE replay.outbox SET delivered_at = now() WHERE purchase_id = $1"
             " AND delivered_at IS NULL", _p("purchase")),
            (SET_PURCHASE, lambda c: (c["purchase"], "ACTIVATING")),
        ],
    ],
    # the events consumer: accepted + succeeded in one batch
    [
        [
            ("SELECT key FROM replay.inbox WHERE key = ANY($1::text[])",
             lambda c: ([c["activation_key"] + ":a", c["activation_key"] + ":s"],)),
            ("SELECT u.id, u.state, p.id, p.state FROM replay.purchase u JOIN replay.payment p"
             " ON p.purchase_id = u.id WHERE u.activation_id = $1", _p("activation")),
            ("SELECT id, kind, state FROM replay.money_op WHERE payment_id = $1", _p("payment")),
            (SET_PURCHASE, lambda c: (c["purchase"], "ACTIVE")),
            (TIMELINE, lambda c: (c["purchase"], "ACTIVE")),
            ("INSERT INTO replay.money_op VALUES ($1, $2, 'capture', 'REQUESTED', now())",
             _p("capture", "payment")),
            (SET_PAYMENT, lambda c: (c["payment"], "CAPTURE_REQUESTED")),
            ("INSERT INTO replay.inbox (key, at) VALUES ($1, now()), ($2, now())",
             lambda c: (c["activation_key"] + ":a", c["activation_key"] + ":s")),
        ]
    ],
    # the capture: claim, then the result with the success notice
    [
        [
            (CLAIM_OP, lambda c: (c["payment"], "capture")),
            (PAYMENT_AND_PURCHASE, _p("payment")),
        ],
        [
            (RECORD_OP, _p("capture")),
            (SET_PAYMENT, lambda c: (c["payment"], "CAPTURE_PENDING")),
            (PAYMENT_AND_PURCHASE, _p("payment")),
            ("INSERT INTO replay.notification (purchase_id, kind, status, next_attempt_at)"
             " VALUES ($1, 'activated', 'QUEUED', now())", _p("purchase")),
            (TIMELINE, lambda c: (c["purchase"], "CAPTURE_PENDING")),
        ],
    ],
    # two settlement webhooks (pending, settled)
    [
        [
            (WEBHOOK_READ, lambda c: (c["payment"], c["activation_key"] + ":p")),
            (INBOX, lambda c: (c["activation_key"] + ":p",)),
            (SET_PAYMENT, lambda c: (c["payment"], "CAPTURE_PENDING")),
            (TIMELINE, lambda c: (c["purchase"], "CAPTURE_PENDING")),
        ],
        [
            (WEBHOOK_READ, lambda c: (c["payment"], c["activation_key"] + ":c")),
            (INBOX, lambda c: (c["activation_key"] + ":c",)),
            (SET_PAYMENT, lambda c: (c["payment"], "CHARGED")),
            (TIMELINE, lambda c: (c["purchase"], "CHARGED")),
        ],
    ],
    # the notice: claimed, then sent and recorded
    [
        [("UPDATE replay.notification SET next_attempt_at = " + LEASE + " WHERE purchase_id = $1"
          " AND status = 'QUEUED' RETURNING id", _p("purchase"))],
        [("SELECT vin FROM replay.vehicle WHERE id = $1", _p("vehicle"))],
        [("UPDATE replay.notification SET status = 'SENT' WHERE purchase_id = $1"
          " AND status = 'QUEUED'", _p("purchase"))],
    ],
]  # fmt: skip


def shape() -> tuple[int, int]:
    """(transactions, statements besides BEGIN/COMMIT) per purchase."""
    transactions = [t for phase in PHASES for t in phase]
    return len(transactions), sum(len(t) for t in transactions)


async def _seed(conn: asyncpg.Connection, customers: int) -> None:
    await conn.execute(SCHEMA)
    await conn.executemany(
        "INSERT INTO replay.token VALUES ($1, $2)", [(f"t{n}", n) for n in range(customers)]
    )
    await conn.executemany(
        "INSERT INTO replay.vehicle VALUES ($1, $2, $3)",
        [(n, n, f"VIN{n:014d}") for n in range(customers)],
    )


async def _purchase(pool: asyncpg.Pool, n: int) -> None:
    ids = {k: uuid.uuid4() for k in ("purchase", "payment", "authorize", "capture", "activation")}
    ctx: dict[str, Any] = {**ids, "token": f"t{n}", "customer": n, "vehicle": n}
    ctx.update(key=str(uuid.uuid4()), payload='{"vin": "x"}', activation_key=str(ids["activation"]))
    for phase in PHASES:
        for transaction in phase:
            async with pool.acquire() as conn, conn.transaction():
                for sql, args in transaction:
                    await conn.fetch(sql, *args(ctx))


async def _no_reset(_conn: asyncpg.Connection) -> None:
    """Every transaction ends committed: nothing to reset when a connection goes back to
    the pool (asyncpg's default reset is four more statements per checkout)."""


async def replay(dsn: str, purchases: int, concurrency: int, pool_size: int) -> dict[str, Any]:
    """``purchases`` purchases' database work, ``concurrency`` at a time over
    ``pool_size`` connections; the rate, and the shape replayed."""
    conn = await asyncpg.connect(dsn)
    try:
        await _seed(conn, purchases)
    finally:
        await conn.close()
    pool = await asyncpg.create_pool(dsn, min_size=pool_size, max_size=pool_size, reset=_no_reset)
    gate = asyncio.Semaphore(concurrency)

    async def one(n: int) -> None:
        async with gate:
            await _purchase(pool, n)

    try:
        started = time.perf_counter()
        await asyncio.gather(*(one(n) for n in range(purchases)))
        seconds = time.perf_counter() - started
    finally:
        await pool.close()
    transactions, statements = shape()
    return {
        "purchases": purchases,
        "seconds": round(seconds, 2),
        "purchases_per_s": round(purchases / seconds, 1),
        "replayed_transactions_per_purchase": transactions,
        "replayed_statements_per_purchase": statements,
    }


async def drop(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DROP SCHEMA IF EXISTS replay CASCADE")
    finally:
        await conn.close()
