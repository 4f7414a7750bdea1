"""POST /v1/purchases/{id}/cancel: withdrawal (desistimiento) rules, each answer with its
decision, rule and refund; the service is deactivated on request either way."""

from __future__ import annotations

from typing import Any

import pytest

from tests.backend.conftest import World
from tests.backend.lifecycle_kit import DAY, active, cancel, deactivations, off_event, travel
from tests.backend.test_purchase_saga import bought, event

pytestmark = pytest.mark.timeout(30)


def answer(r: Any) -> tuple[str, str, int]:
    assert r.status_code == 200, r.text
    body = r.json()
    return body["decision"], body["rule"], body["refund_cents"]


async def test_short_service_refunded_in_full_any_time(world: World) -> None:
    """A 7-day service (< 14 days) cancelled on day 6: full refund, deactivated."""
    p = await active(world, "power_boost_50", duration={"model": "temporary", "days": 7})
    await travel(world, 6 * DAY)
    r = await cancel(world, p["id"])
    assert answer(r) == ("refund_full", "withdrawal_short_service_any_time", 4900)
    await world.drain()
    got = await world.purchase(p["id"])
    assert (got["state"], got["payment"]["state"]) == ("CANCELLED", "REFUNDED")
    assert got["payment"]["refunded_cents"] == got["payment"]["captured_cents"] == 4900
    assert len(deactivations(world)) == 1
    await world.finish()


async def test_long_service_refunded_within_14_days(world: World) -> None:
    """A 30-day service cancelled exactly 14 days after activation: full refund."""
    p = await active(world, duration={"model": "temporary", "days": 30})
    await travel(world, 14 * DAY)
    r = await cancel(world, p["id"])
    assert answer(r) == ("refund_full", "withdrawal_within_14_days", 1900)
    await world.drain()
    assert (await world.purchase(p["id"]))["payment"]["state"] == "REFUNDED"
    await world.finish()


async def test_permanent_after_14_days_no_refund_but_deactivated(world: World) -> None:
    """A permanent service cancelled on day 15: no refund, still deactivated on request."""
    p = await active(world)
    await travel(world, 15 * DAY)
    r = await cancel(world, p["id"])
    assert answer(r) == ("no_refund", "withdrawal_after_14_days", 0)
    await world.drain()
    got = await world.purchase(p["id"])
    assert (got["state"], got["payment"]["state"]) == ("CANCELLED", "CHARGED")
    assert len(deactivations(world)) == 1
    assert world.provider.calls["refund"] == 0
    await world.finish()


async def test_permanent_stays_active_for_the_vehicle_life(world: World) -> None:
    """A permanent service has no expiry: years later it is still ACTIVE, never switched off."""
    p = await active(world)
    await travel(world, 3 * 365 * DAY)
    got = await world.purchase(p["id"])
    assert (got["state"], got["expires_at"]) == ("ACTIVE", None)
    assert deactivations(world) == []
    await world.finish()


async def test_repeated_cancel_answers_the_same_and_refunds_once(world: World) -> None:
    """Cancel is idempotent per purchase: same answer, one refund."""
    p = await active(world, "power_boost_50", duration={"model": "temporary", "days": 7})
    first = (await cancel(world, p["id"])).json()
    await world.drain()
    again = await cancel(world, p["id"])
    assert again.status_code == 200
    assert {k: again.json()[k] for k in ("decision", "rule", "refund_cents")} == {
        k: first[k] for k in ("decision", "rule", "refund_cents")
    }
    await world.drain()
    assert world.provider.calls["refund"] == 1
    assert len(deactivations(world)) == 1
    await world.finish()


async def test_scheduled_purchase_cancelled_releases_the_hold(world: World) -> None:
    """A SCHEDULED purchase: hold released (CANCELLED), never sent to the gateway."""
    start = world.clock.now() + 5 * DAY
    from protocol.timeutil import format_ts

    p = await bought(world, start_at=format_ts(start))
    assert p["state"] == "SCHEDULED"
    r = await cancel(world, p["id"])
    assert answer(r) == ("hold_released", "scheduled_not_started", 0)
    await travel(world, 6 * DAY)
    got = await world.purchase(p["id"])
    assert (got["state"], got["payment"]["state"]) == ("CANCELLED", "CANCELLED")
    assert world.gateway.requests == []
    await world.finish()


async def test_activation_in_progress_and_failed_are_409(world: World) -> None:
    """Cancel while activating → 409 activation_in_progress; a failed OTA → 409, never charged."""
    p = await bought(world)
    r = await cancel(world, p["id"])
    assert (r.status_code, r.json()["error"]) == (409, "activation_in_progress")
    await event(world, "activation.failed", p)
    await world.drain()
    r = await cancel(world, p["id"])
    assert (r.status_code, r.json()["error"]) == (409, "not_cancellable")
    assert world.provider.calls["capture"] == 0
    await world.finish()


async def test_cancel_scoping_and_bad_input(world: World) -> None:
    """Another customer's purchase is 404, a malformed id 422, an unknown one 404."""
    p = await active(world)
    assert (await cancel(world, p["id"], world.bob)).status_code == 404
    assert (await cancel(world, "not_an_id!")).status_code in (404, 422)
    assert (await cancel(world, "0000")).status_code == 404
    r = await world.api.post(f"/v1/purchases/{p['id']}/cancel")
    assert r.status_code == 401
    assert (await world.purchase(p["id"]))["state"] == "ACTIVE"
    await world.finish()


async def test_subscription_cancel_ends_at_month_end_and_that_month_is_billed(
    world: World,
) -> None:
    """Subscription cancel: still ACTIVE until 1 Dec, November billed, then switched off."""
    p = await active(world, duration={"model": "subscription"})
    r = await cancel(world, p["id"])
    body = r.json()
    assert answer(r) == ("ends_at_month_end", "subscription_end_of_month", 0)
    assert body["effective_at"] == "2026-12-01T00:00:00.000Z"
    await world.drain()
    assert (await world.purchase(p["id"]))["state"] == "ACTIVE"
    assert deactivations(world) == []
    await travel(world, 13 * DAY)  # past 1 December
    got = await world.purchase(p["id"])
    assert (got["state"], got["cancel_reason"]) == ("CANCELLED", "customer_cancel")
    assert len(deactivations(world)) == 1
    await off_event(world, p["id"])
    await travel(world, 40 * DAY)  # December's billing run finds nothing to bill
    ops = world.as_(world.ops_token)
    nov = await world.api.post("/v1/ops/billing/runs", json={"month": "2026-11"}, headers=ops)
    dec = await world.api.post("/v1/ops/billing/runs", json={"month": "2026-12"}, headers=ops)
    assert [c["days_billed"] for c in nov.json()["charges"]] == [13]
    assert dec.json()["charges"] == []
    await world.finish()
