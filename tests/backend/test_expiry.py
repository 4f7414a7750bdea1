"""Temporary services: pre-expiry notice, expiry → deactivate through the gateway,
DEACTIVATED on the gateway's confirmation, repurchase after, failures escalated."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from backend.store.models import MoneyOp, Notification, ServicePrice, Ticket
from tests.backend.conftest import World
from tests.backend.lifecycle_kit import (
    DAY,
    active,
    deactivations,
    off_event,
    row,
    templates,
    travel,
)

pytestmark = pytest.mark.timeout(30)
THIRTY = {"model": "temporary", "days": 30}


async def test_notice_before_expiry_then_deactivate_at_expiry(world: World) -> None:
    """Lead-time notice (3 days default), then at expiry EXPIRED + deactivate + notice."""
    p = await active(world, duration=THIRTY)
    assert (await row(world, p["id"])).expires_at == pytest.approx(world.clock.now() + 30 * DAY)
    await travel(world, 26.9 * DAY)
    assert "expiry_notice" not in await templates(world, p["id"])
    await travel(world, 0.2 * DAY)
    assert (await templates(world, p["id"])).count("expiry_notice") == 1
    assert deactivations(world) == []
    await travel(world, 3 * DAY)
    got = await world.purchase(p["id"])
    assert (got["state"], got["deactivation_state"]) == ("EXPIRED", "SENT")
    off = deactivations(world)
    assert len(off) == 1 and off[0]["feature"] == "climate_plus"
    assert off[0]["activation_id"] != p["activation_id"]
    assert "service_deactivated" in await templates(world, p["id"])
    assert await off_event(world, p["id"]) == "applied"
    got = await world.purchase(p["id"])
    assert (got["state"], got["deactivation_state"]) == ("DEACTIVATED", "SUCCEEDED")
    await world.finish()


async def test_repurchase_after_deactivation_but_not_during(world: World) -> None:
    """While the deactivation is on its way a repurchase is 409; once off it is allowed."""
    p = await active(world, duration=THIRTY)
    await travel(world, 31 * DAY)
    r = await world.buy(duration=THIRTY)
    assert (r.status_code, r.json()["error"]) == (409, "deactivation_in_progress")
    await off_event(world, p["id"])
    r = await world.buy(duration=THIRTY)
    assert r.status_code == 202, r.text
    await world.finish()


async def test_never_billed_past_expiry(world: World) -> None:
    """One capture at activation, nothing after expiry (the invariant checks it too)."""
    p = await active(world, duration=THIRTY)
    await travel(world, 40 * DAY)
    await off_event(world, p["id"])
    await travel(world, 40 * DAY)
    async with world.backend.sessions() as s:
        captures = await s.scalar(
            select(func.count()).select_from(MoneyOp).where(MoneyOp.kind == "capture")
        )
    assert captures == 1 == sum(world.provider.real_captures.values())
    got = await world.purchase(p["id"])
    assert got["payment"]["captured_cents"] == 1900
    await world.finish()


async def test_failed_deactivation_opens_a_ticket(world: World) -> None:
    """The gateway's final failure of a deactivation escalates to support."""
    p = await active(world, duration=THIRTY)
    await travel(world, 31 * DAY)
    assert await off_event(world, p["id"], "activation.failed") == "applied"
    assert (await world.purchase(p["id"]))["deactivation_state"] == "FAILED"
    async with world.backend.sessions() as s:
        kinds = (await s.scalars(select(Ticket.kind))).all()
    assert kinds == ["deactivation_failed"]
    await world.finish()


async def test_deactivation_retried_while_gateway_down(world: World) -> None:
    """Gateway down at expiry: the outbox retries the deactivate until it goes through."""
    p = await active(world, duration=THIRTY)
    world.gateway.down = True
    await travel(world, 31 * DAY)
    assert deactivations(world) == []
    assert (await world.purchase(p["id"]))["deactivation_state"] == "QUEUED"
    world.gateway.down = False
    await travel(world, 120)
    assert len(deactivations(world)) == 1
    await world.finish()


async def test_deactivation_rejected_escalates(world: World) -> None:
    """A gateway 4xx on the deactivate is escalated like an activation: a ticket."""
    p = await active(world, duration=THIRTY)
    world.gateway.reject = 400
    await travel(world, 31 * DAY)
    assert (await world.purchase(p["id"]))["deactivation_state"] == "FAILED"
    async with world.backend.sessions() as s:
        assert (await s.scalars(select(Ticket.kind))).all() == ["deactivation_failed"]
    await world.finish()


async def test_notice_lead_time_is_configurable(make_world: object) -> None:
    """CAAS_BACKEND_EXPIRY_NOTICE_LEAD_S moves the notice (here one day before)."""
    async with make_world(backend_expiry_notice_lead_s=DAY) as w:  # type: ignore[operator]
        p = await active(w, duration=THIRTY)
        await travel(w, 28.5 * DAY)
        assert "expiry_notice" not in await templates(w, p["id"])
        await travel(w, 0.6 * DAY)
        assert "expiry_notice" in await templates(w, p["id"])
        await w.finish()


@pytest.mark.parametrize(("days", "notice_after_days"), [(1, 0.5), (2, 1.0), (30, 27.0)])
async def test_every_temporary_service_is_told_before_it_ends(
    world: World, days: int, notice_after_days: float
) -> None:
    """The notice comes 3 days before the end, or halfway through a service shorter
    than 6 days: exactly one per service, sent before it expires."""
    async with world.backend.sessions.begin() as s:  # a 2-day price, for this test only
        s.add(
            ServicePrice(service_id="power_boost_50", model="temporary", days=2, price_cents=2500)
        )
    async with world.backend.sessions() as s:
        await world.backend.catalog.reload(s)
    p = await active(world, service="power_boost_50", duration={"model": "temporary", "days": days})
    expires_at = (await row(world, p["id"])).expires_at
    assert expires_at is not None
    assert expires_at == pytest.approx(world.clock.now() + days * DAY)
    await travel(world, notice_after_days * DAY - 60)
    assert "expiry_notice" not in await templates(world, p["id"])
    await travel(world, 120)
    assert (await templates(world, p["id"])).count("expiry_notice") == 1
    await travel(world, (days - notice_after_days) * DAY)
    assert (await world.purchase(p["id"]))["state"] == "EXPIRED"
    async with world.backend.sessions() as s:
        notices = (
            await s.scalars(
                select(Notification).where(
                    Notification.purchase_id == p["id"], Notification.template == "expiry_notice"
                )
            )
        ).all()
    assert sorted(n.channel for n in notices) == ["email", "push"]
    sent_at = [n.sent_at for n in notices if n.status == "SENT"]
    assert len(sent_at) == 2 and all(t is not None and t < expires_at for t in sent_at)
    await world.finish()
