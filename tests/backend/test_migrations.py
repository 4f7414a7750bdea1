"""Migrations on a database that already holds data. 0003: queued notifications become
due at once, the settlement seq is 64 bits wide on PostgreSQL, and the downgrade
returns to 0002 without losing the rows. 0005: operators get names, tickets their
resolution, the catalog's rules their model-and-firmware shape."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.store.db import alembic_config, make_engine

pytestmark = pytest.mark.timeout(60)

CUSTOMER = (
    "INSERT INTO customers (id, name, email, has_app, created_at)"
    " VALUES ('c1', 'A', 'a@example.com', false, 1)"
)
NOTICE = (
    "INSERT INTO notifications (id, customer_id, template, channel, address, subject, body,"
    " critical, status, created_at) VALUES ('n1', 'c1', 't', 'email', 'a@example.com', 's',"
    " 'b', false, 'QUEUED', 1)"
)
SEQ_TYPE = (
    "SELECT data_type FROM information_schema.columns"
    " WHERE table_name = 'payments' AND column_name = 'settlement_seq'"
)


async def alembic(
    engine: AsyncEngine, url: str, step: Callable[[Config, str], None], to: str
) -> None:
    def run(conn: Connection) -> None:
        cfg = alembic_config(url)
        cfg.attributes["connection"] = conn
        step(cfg, to)

    async with engine.begin() as conn:
        await conn.run_sync(run)


async def test_0003_upgrades_a_populated_0002_database_and_downgrades(db_url: str) -> None:
    engine = make_engine(db_url)
    postgres = engine.dialect.name == "postgresql"
    try:
        await alembic(engine, db_url, command.upgrade, "0002")
        async with engine.begin() as conn:
            await conn.execute(text(CUSTOMER))
            await conn.execute(text(NOTICE))
        await alembic(engine, db_url, command.upgrade, "head")
        async with engine.begin() as conn:
            assert await conn.scalar(text("SELECT next_attempt_at FROM notifications")) == 0
            if postgres:
                assert await conn.scalar(text(SEQ_TYPE)) == "bigint"
        await alembic(engine, db_url, command.downgrade, "0002")
        async with engine.begin() as conn:
            assert await conn.scalar(text("SELECT status FROM notifications")) == "QUEUED"
            if postgres:
                assert await conn.scalar(text(SEQ_TYPE)) == "integer"
        await alembic(engine, db_url, command.upgrade, "head")
    finally:
        await engine.dispose()


SEEDED_0004 = [
    "INSERT INTO customers (id, name, email, has_app, payment_method, created_at)"
    " VALUES ('c1', 'A', 'a@example.com', false, 'card', 1)",
    "INSERT INTO vehicles (id, customer_id, vin, model, created_at)"
    " VALUES ('v1', 'c1', 'WVWZZZ1JZ3W386752', 'Tourer', 1)",
    "INSERT INTO vehicles (id, customer_id, vin, model, created_at)"
    " VALUES ('v2', 'c1', 'WVWZZZ1JZ3W386753', 'Cargo', 1)",
    "INSERT INTO api_tokens (id, token_hash, prefix, role, customer_id, created_at)"
    " VALUES ('k1', 'h1', 'caas_ops_abc', 'ops', NULL, 1)",
    "INSERT INTO api_tokens (id, token_hash, prefix, role, customer_id, created_at)"
    " VALUES ('k2', 'h2', 'caas_cus_abc', 'customer', 'c1', 1)",
    "INSERT INTO services (id, name, description, base_platform, maintenance_linked,"
    " exclude_after_cancel, models) VALUES ('everywhere', 'E', '', false, false, false,"
    " '{\"applies_to\": []}')",
    "INSERT INTO services (id, name, description, base_platform, maintenance_linked,"
    " exclude_after_cancel, models) VALUES ('tourers', 'T', '', false, false, false,"
    ' \'{"applies_to": ["Tourer"]}\')',
    "INSERT INTO tickets (id, number, customer_id, kind, status, details, created_at,"
    " resolved_at) VALUES ('t1', 'T-1', 'c1', 'activation_failed', 'RESOLVED',"
    ' \'{"resolution": "permanent_failure"}\', 1, 2)',
    "INSERT INTO tickets (id, number, customer_id, kind, status, details, created_at)"
    " VALUES ('t2', 'T-2', 'c1', 'activation_failed', 'OPEN', '{}', 1)",
]


async def test_0005_upgrades_a_populated_0004_database_and_downgrades(db_url: str) -> None:
    """Old ops tokens get a name (their prefix), resolved tickets their resolution, the
    catalog's rules the new shape (an empty list, once "every model", becomes every
    model on record) and a version; down to 0004 and up again."""
    engine = make_engine(db_url)
    try:
        await alembic(engine, db_url, command.upgrade, "0004")
        async with engine.begin() as conn:
            for statement in SEEDED_0004:
                await conn.execute(text(statement))
        await alembic(engine, db_url, command.upgrade, "0005")
        async with engine.begin() as conn:
            names = dict((await conn.execute(text("SELECT id, name FROM api_tokens"))).all())
            assert names == {"k1": "unnamed caas_ops_abc", "k2": None}
            tickets = await conn.execute(text("SELECT id, resolution, resolved_by FROM tickets"))
            assert sorted(tickets.all()) == [("t1", "permanent_failure", None), ("t2", None, None)]
            rules = dict((await conn.execute(text("SELECT id, models FROM services"))).all())
            every = [{"model": "Cargo", "firmware": None}, {"model": "Tourer", "firmware": None}]
            tourer = [{"model": "Tourer", "firmware": None}]
            assert {k: json.loads(v) if isinstance(v, str) else v for k, v in rules.items()} == {
                "everywhere": {"applies_to": every, "seeded": every},
                "tourers": {"applies_to": tourer, "seeded": tourer},
            }
            assert await conn.scalar(text("SELECT version FROM catalog_state")) == 1
            assert await conn.scalar(text("SELECT count(*) FROM ops_actions")) == 0
            assert await conn.scalar(text("SELECT firmware FROM vehicles WHERE id = 'v1'")) is None
        await alembic(engine, db_url, command.downgrade, "0004")
        async with engine.begin() as conn:
            rules = dict((await conn.execute(text("SELECT id, models FROM services"))).all())
            assert {k: json.loads(v) if isinstance(v, str) else v for k, v in rules.items()} == {
                "everywhere": {"applies_to": ["Cargo", "Tourer"]},
                "tourers": {"applies_to": ["Tourer"]},
            }
            assert await conn.scalar(text("SELECT count(*) FROM tickets")) == 2
        await alembic(engine, db_url, command.upgrade, "head")
    finally:
        await engine.dispose()
