"""Migration 0006 on a database that already holds finished purchases: their outcome and
finish time come from the timeline (attempts unknown), the metrics lease row exists,
and the downgrade returns to 0004 without losing the rows."""

from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import text

from backend.store.db import make_engine
from tests.backend.test_migrations import CUSTOMER, alembic

pytestmark = pytest.mark.timeout(60)

ROWS = [
    "INSERT INTO vehicles (id, customer_id, vin, model, created_at)"
    " VALUES ('v1', 'c1', 'WVWZZZ1JZ3W386752', 'Aurora', 1)",
    "INSERT INTO services (id, name, description, base_platform, maintenance_linked,"
    " exclude_after_cancel, models) VALUES ('climate_plus', 'C', 'd', false, false, false, '{}')",
    *(
        "INSERT INTO purchases (id, customer_id, vehicle_id, service_id, duration_model,"
        " price_cents, state, activation_id, failure_category, start_at, deadline_at,"
        f" created_at, updated_at) VALUES ('{p}', 'c1', 'v1', 'climate_plus', 'permanent',"
        f" 100, '{state}', 'a-{p}', {category}, 10, 100, 10, 90)"
        for p, state, category in (
            ("ok", "ACTIVE", "NULL"),
            ("bad", "MANUALLY_ACTIVATED", "'timeout'"),
            ("open", "ACTIVATING", "NULL"),
        )
    ),
    "INSERT INTO timeline (customer_id, purchase_id, at, kind, detail) VALUES"
    " ('c1', 'ok', 20, 'activation.succeeded', '{}'),"
    " ('c1', 'bad', 30, 'activation.failed', '{}'),"
    " ('c1', 'bad', 60, 'support.activation.succeeded', '{}'),"
    " ('c1', 'open', 15, 'activation.accepted', '{}')",
]
OUTCOMES = (
    "SELECT id, activation_outcome, activation_attempts, activation_finished_at"
    " FROM purchases ORDER BY id"
)


async def test_0006_backfills_outcomes_and_downgrades(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        await alembic(engine, db_url, command.upgrade, "0004")
        async with engine.begin() as conn:
            for statement in (CUSTOMER, *ROWS):
                await conn.execute(text(statement))
        await alembic(engine, db_url, command.upgrade, "0006")
        async with engine.begin() as conn:
            assert (await conn.execute(text(OUTCOMES))).all() == [
                ("bad", "failed", None, 30.0),  # the first answer, not the manual one
                ("ok", "succeeded", None, 20.0),
                ("open", None, None, None),
            ]
            lease = (await conn.execute(text("SELECT name, holder FROM leases"))).all()
            assert lease == [("metrics", None)]
        await alembic(engine, db_url, command.downgrade, "0004")
        async with engine.begin() as conn:
            assert await conn.scalar(text("SELECT count(*) FROM purchases")) == 3
        await alembic(engine, db_url, command.upgrade, "head")
    finally:
        await engine.dispose()
