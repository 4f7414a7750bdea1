"""Subscriptions billed in arrears: proration, idempotent billing runs per month (SQLite
and PostgreSQL), automatic month-end billing, a failed charge cancels and deactivates."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select

from backend.domain import months as billing
from backend.errors import InvalidRequest
from backend.store.models import SubscriptionCharge, Ticket
from tests.backend.conftest import World, WorldFactory
from tests.backend.lifecycle_kit import DAY, active, deactivations, row, templates, travel

pytestmark = pytest.mark.timeout(60)
SUB = {"model": "subscription"}


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_proration_rule() -> None:
    """Days touched in the month, activation day included; half-up; full month = price."""
    assert billing.billable_days(ts("2026-11-18T11:06:40"), None, "2026-11") == 13
    assert billing.prorate(990, 13, 30) == 429  # 990 × 13 / 30 = 429.0
    assert billing.prorate(1000, 1, 30) == 33  # 33.33 → 33
    assert billing.prorate(1000, 2, 24) == 83  # 83.33 → 83
    assert billing.prorate(1000, 3, 24) == 125  # 125.0
    assert billing.prorate(1, 1, 2) == 1  # 0.5 → 1 (half up)
    assert billing.billable_days(ts("2026-11-18T11:06:40"), None, "2026-12") == 31
    assert (
        billing.billable_days(ts("2026-11-18T00:00:00"), ts("2026-12-01T00:00:00"), "2026-12") == 0
    )
    assert (
        billing.billable_days(ts("2026-10-01T00:00:00"), ts("2026-11-03T00:00:01"), "2026-11") == 3
    )
    assert billing.days_in_month("2028-02") == 29
    for bad in ("2026-13", "26-11", "2026-1", "", "1999-12"):
        with pytest.raises(InvalidRequest):
            billing.month_bounds(bad)


async def run(w: World, month: str) -> dict[str, Any]:
    r = await w.api.post("/v1/ops/billing/runs", json={"month": month}, headers=w.as_(w.ops_token))
    assert r.status_code == 200, r.text
    return dict(r.json())


async def test_subscription_active_at_once_without_upfront_capture(world: World) -> None:
    """Subscription: ACTIVE at once, the card-check hold released, nothing captured."""
    p = await active(world, duration=SUB)
    assert p["payment"]["state"] == "CANCELLED"
    assert p["payment"]["captured_cents"] == 0
    assert world.provider.calls["capture"] == 0
    await world.finish()


async def test_billing_run_twice_charges_once(make_world: WorldFactory, db_url: str) -> None:
    """Run November twice: one prorated charge (13/30 days), one capture at the provider."""
    async with make_world(db_url) as w:
        p = await active(w, duration=SUB)
        w.clock.advance(13 * DAY)  # 1 December (no drain: the API run comes first)
        first = await run(w, "2026-11")
        second = await run(w, "2026-11")
        assert first["charges_created"] == 1 and second["charges_created"] == 0
        charges = second["charges"]
        assert isinstance(charges, list) and len(charges) == 1
        assert charges[0]["amount_cents"] == 429 and charges[0]["state"] == "CHARGED"
        assert charges[0]["purchase_id"] == p["id"]
        await w.drain()  # the scheduler's own month-end job finds it billed too
        async with w.backend.sessions() as s:
            n = await s.scalar(select(func.count()).select_from(SubscriptionCharge))
        assert n == 1 == w.provider.calls["capture"]
        await w.finish()


async def test_month_end_billing_runs_by_itself_then_full_months(world: World) -> None:
    """The scheduler bills each completed month: November prorated, December full."""
    p = await active(world, duration=SUB)
    await travel(world, 13 * DAY)
    await travel(world, 31 * DAY)
    async with world.backend.sessions() as s:
        rows = (
            await s.scalars(select(SubscriptionCharge).order_by(SubscriptionCharge.month))
        ).all()
    assert [(c.month, c.amount_cents, c.state) for c in rows] == [
        ("2026-11", 429, "CHARGED"),
        ("2026-12", 990, "CHARGED"),
    ]
    file = (
        await world.api.get("/v1/customers/me/expediente", headers=world.as_(world.alice))
    ).json()
    assert [c["month"] for c in file["subscription_charges"]] == ["2026-11", "2026-12"]
    assert (await world.purchase(p["id"]))["state"] == "ACTIVE"
    await world.finish()


async def test_failed_charge_cancels_notifies_and_deactivates(world: World) -> None:
    """A declined monthly charge: subscription CANCELLED, notice, deactivate, ticket."""
    p = await active(world, duration=SUB)
    world.provider.config.decline_rate = 1.0
    world.clock.advance(13 * DAY)
    body = await run(world, "2026-11")
    assert [c["state"] for c in body["charges"]] == ["FAILED"]
    await world.drain()
    got = await world.purchase(p["id"])
    assert (got["state"], got["cancel_reason"]) == ("CANCELLED", "payment_failed")
    assert "subscription_payment_failed" in await templates(world, p["id"])
    assert len(deactivations(world)) == 1
    async with world.backend.sessions() as s:
        assert (await s.scalars(select(Ticket.kind))).all() == ["subscription_charge_failed"]
    world.provider.config.decline_rate = 0.0
    await travel(world, 31 * DAY)
    assert (await row(world, p["id"])).ends_at == billing.month_bounds("2026-11")[1]
    assert (await run(world, "2026-12"))["charges"] == []
    await world.finish()


async def test_billing_run_bad_input_is_4xx(world: World) -> None:
    """Unfinished month → 422 month_not_complete; malformed → 422; customer → 403."""
    ops = world.as_(world.ops_token)
    r = await world.api.post("/v1/ops/billing/runs", json={"month": "2026-11"}, headers=ops)
    assert (r.status_code, r.json()["error"]) == (422, "month_not_complete")
    for body in ({"month": "2026-13"}, {"month": 202611}, {}, {"month": "2026-11", "x": 1}):
        assert (
            await world.api.post("/v1/ops/billing/runs", json=body, headers=ops)
        ).status_code == 422
    r = await world.api.post(
        "/v1/ops/billing/runs", json={"month": "2026-10"}, headers=world.as_(world.alice)
    )
    assert r.status_code == 403
    await world.finish()
