"""The issue 5 invariants fire on a broken database: billed past the end, refunds above
captures, a service on past its end, an ended service never switched off."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import update

from backend.store.models import Payment, Purchase, SubscriptionCharge
from tests.backend.conftest import World
from tests.backend.lifecycle_kit import DAY, active, travel
from tests.backend.test_invariants import rules

pytestmark = pytest.mark.timeout(30)


async def test_clean_lifecycle_has_no_violation(world: World) -> None:
    """Expiry, a subscription and its billing leave the checker silent."""
    await active(world, duration={"model": "temporary", "days": 30})
    await active(world, "entertainment_pack", duration={"model": "subscription"})
    await travel(world, 45 * DAY)
    assert await rules(world) == set()


async def test_charge_past_the_end_is_a_violation(world: World) -> None:
    """A charge for a month after the subscription ended is 'billed_past_end'."""
    p = await active(world, duration={"model": "subscription"})
    async with world.backend.sessions.begin() as s:
        await s.execute(update(Purchase).values(ends_at=world.clock.now() + DAY))
        s.add(
            SubscriptionCharge(
                id=str(uuid.uuid4()), purchase_id=p["id"], month="2027-01", days_billed=31,
                days_in_month=31, amount_cents=990, state="CHARGED", attempts=0,
                next_attempt_at=0.0, created_at=world.clock.now(),
            )
        )  # fmt: skip
    assert "billed_past_end" in await rules(world)


async def test_refund_above_capture_is_a_violation(world: World) -> None:
    """refunded_cents > captured_cents is flagged."""
    await active(world)
    async with world.backend.sessions.begin() as s:
        await s.execute(update(Payment).values(refunded_cents=999_999))
    assert "refund_le_capture" in await rules(world)


async def test_service_on_past_expiry_and_ended_not_deactivated(world: World) -> None:
    """ACTIVE long past expires_at, and EXPIRED without a deactivation, are flagged."""
    p = await active(world, duration={"model": "temporary", "days": 30})
    async with world.backend.sessions.begin() as s:
        await s.execute(update(Purchase).values(expires_at=world.clock.now() - 2 * DAY))
    assert "on_past_its_end" in await rules(world)
    async with world.backend.sessions.begin() as s:
        await s.execute(update(Purchase).where(Purchase.id == p["id"]).values(state="EXPIRED"))
    assert "ended_not_deactivated" in await rules(world)


async def test_capture_after_expiry_is_a_violation(world: World) -> None:
    """A capture requested after the service expired is 'billed_past_expiry'."""
    await active(world, duration={"model": "temporary", "days": 30})
    async with world.backend.sessions.begin() as s:
        await s.execute(update(Purchase).values(expires_at=world.clock.now() - 10))
    assert "billed_past_expiry" in await rules(world)
