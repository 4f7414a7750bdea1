"""Migration 0003 on a database that already holds data: queued notifications become
due at once, the settlement seq is 64 bits wide on PostgreSQL, and the downgrade
returns to 0002 without losing the rows."""

from __future__ import annotations

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
