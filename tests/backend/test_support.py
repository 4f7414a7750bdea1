"""Theft reports, the post-cancellation policy, maintenance/warranty notices, and
support's manual activation / permanent failure from a ticket."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from backend.store.models import OutboxMessage, Purchase
from backend.workers.consumer import consume
from protocol.timeutil import format_ts
from tests.backend.conftest import VINS, World
from tests.backend.lifecycle_kit import (
    DAY,
    active,
    cancel,
    deactivations,
    off_event,
    templates,
    travel,
)
from tests.backend.test_purchase_saga import bought, event

pytestmark = pytest.mark.timeout(30)


async def theft(w: World, vin: str = VINS[0][0]) -> Any:
    vid = w.alice.vehicles[vin]
    return await w.api.post(f"/v1/vehicles/{vid}/theft-report", headers=w.as_(w.alice))


async def test_theft_no_refund_scheduled_and_subscriptions_cancellable(world: World) -> None:
    """Theft: nothing refunded by itself; scheduled released, subscription ends now,
    a delivered service follows the withdrawal rules."""
    perm = await active(world)
    sub = await active(world, "entertainment_pack", duration={"model": "subscription"})
    sched = await bought(
        world, service="power_boost_50", duration={"model": "permanent"},
        start_at=format_ts(world.clock.now() + 10 * DAY),
    )  # fmt: skip
    r = await theft(world)
    assert r.status_code == 200
    body = r.json()
    assert (body["refund"], body["rule"]) == ("none", "theft_no_automatic_refund")
    assert set(body["cancellable_purchase_ids"]) == {sub["id"], sched["id"]}
    await world.drain()
    assert world.provider.calls["refund"] == 0 and world.provider.calls["cancel"] == 1  # sub check
    assert "theft_report_received" in await templates(world)
    assert (await theft(world)).json()["reported_at"] == body["reported_at"]  # idempotent
    r = await cancel(world, sub["id"])
    assert (r.json()["decision"], r.json()["rule"]) == ("ends_now", "theft_subscription_immediate")
    r = await cancel(world, sched["id"])
    assert r.json()["decision"] == "hold_released"
    r = await cancel(world, perm["id"])
    assert (r.json()["decision"], r.json()["rule"]) == ("refund_full", "withdrawal_within_14_days")
    await world.drain()
    states = {p: (await world.purchase(p))["state"] for p in (perm["id"], sub["id"], sched["id"])}
    assert set(states.values()) == {"CANCELLED"}
    assert (await theft(world, VINS[1][0])).status_code == 200
    assert (await world.api.post(f"/v1/vehicles/{world.alice.vehicles[VINS[0][0]]}/theft-report",
                                 headers=world.as_(world.bob))).status_code == 404  # fmt: skip
    await world.finish()


async def catalog_ids(w: World) -> set[str]:
    vid = w.alice.vehicles[VINS[0][0]]
    r = await w.api.get("/v1/catalog", params={"vehicle_id": vid}, headers=w.as_(w.alice))
    return {s["id"] for s in r.json()["services"]}


async def test_post_cancellation_policy_removes_and_refuses(world: World) -> None:
    """autonomous_driving (policy on): gone from the catalog, repurchase 409; climate_plus
    (policy off) can be bought again."""
    ad = await active(world, "autonomous_driving", duration={"model": "temporary", "days": 7})
    cp = await active(world, duration={"model": "temporary", "days": 30})
    await cancel(world, ad["id"])
    await cancel(world, cp["id"])
    await off_event(world, ad["id"])
    await off_event(world, cp["id"])
    ids = await catalog_ids(world)
    assert "autonomous_driving" not in ids and "climate_plus" in ids
    r = await world.buy("autonomous_driving", duration={"model": "temporary", "days": 7})
    assert (r.status_code, r.json()["error"]) == (409, "excluded_after_cancellation")
    assert (await world.buy(duration={"model": "temporary", "days": 30})).status_code == 202
    await world.finish()


async def test_post_cancellation_policy_configurable(make_world: Any) -> None:
    """CAAS_BACKEND_EXCLUDE_AFTER_CANCEL turns the policy on for another service type."""
    async with make_world(backend_exclude_after_cancel="climate_plus") as w:
        cp = await active(w, duration={"model": "temporary", "days": 30})
        await cancel(w, cp["id"])
        await off_event(w, cp["id"])
        assert "climate_plus" not in await catalog_ids(w)
        r = await w.buy(duration={"model": "temporary", "days": 30})
        assert r.status_code == 409
        await w.finish()


async def test_maintenance_overdue_warns_blocks_never_deactivates(world: World) -> None:
    """VSS overdue: warranty-loss notice once, maintenance-linked purchase blocked,
    active services untouched."""
    p = await active(world, "power_boost_50", duration={"model": "permanent"})
    world.maintenance.overdue.add(VINS[0][0])
    ops = world.as_(world.ops_token)
    vid = world.alice.vehicles[VINS[0][0]]
    url = f"/v1/ops/vehicles/{vid}/maintenance-check"
    first, again = (
        (await world.api.post(url, headers=ops)).json(),
        (await world.api.post(url, headers=ops)).json(),
    )
    assert (first["overdue"], first["notified"], again["notified"]) == (True, True, False)
    r = await world.buy("winter_traction", duration={"model": "permanent"})
    assert (r.status_code, r.json()["error"]) == (409, "maintenance_overdue")
    assert (
        await world.buy("entertainment_pack", duration={"model": "subscription"})
    ).status_code == 202
    await travel(world, 30 * DAY)
    assert (await world.purchase(p["id"]))["state"] == "ACTIVE"
    assert deactivations(world) == []
    assert (await templates(world)).count("warranty_loss") == 1
    assert (
        await world.api.post("/v1/ops/vehicles/0000/maintenance-check", headers=ops)
    ).status_code == 404
    await world.finish()


async def failed_ticket(w: World, **kw: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    p = await bought(w, **kw)
    await event(w, "activation.failed", p)
    await w.drain()
    tickets = (await w.api.get("/v1/ops/tickets", headers=w.as_(w.ops_token))).json()
    return p, next(t for t in tickets if t["purchase_id"] == p["id"])


async def test_manual_activation_free_notified_ticket_resolved(world: World) -> None:
    """Manual activation through the gateway: MANUALLY_ACTIVATED, no charge, notice,
    ticket resolved with its resolution time."""
    p, t = await failed_ticket(world)
    ops = world.as_(world.ops_token)
    world.clock.advance(7200)
    r = await world.api.post(f"/v1/ops/tickets/{t['id']}/manual-activation", headers=ops)
    assert r.status_code == 202
    sent = [
        x for x in world.gateway.requests if x["activation_id"] == r.json()["support_activation_id"]
    ]
    assert len(sent) == 1 and sent[0]["action"] == "activate"
    body = {**sent[0], "action": "activate"}
    assert await consume(world.backend.units, "ev-m", "activation.succeeded", body) == "applied"
    await world.drain()
    got = await world.purchase(p["id"])
    assert (got["state"], got["payment"]["state"]) == ("MANUALLY_ACTIVATED", "CANCELLED")
    assert world.provider.calls["capture"] == 0
    assert "manual_resolution_success" in await templates(world, p["id"])
    ticket = (await world.api.get("/v1/ops/tickets", headers=ops)).json()[0]
    assert (ticket["status"], ticket["resolution_s"]) == ("RESOLVED", 7200)
    again = await world.api.post(f"/v1/ops/tickets/{t['id']}/manual-activation", headers=ops)
    assert (again.status_code, again.json()["error"]) == (409, "ticket_resolved")
    summary = (await world.api.get("/v1/ops/metrics/summary", headers=ops)).json()
    assert summary["ticket_mean_resolution_s"] == 7200
    await world.finish()


async def test_escalated_purchase_resolved_by_support(world: World) -> None:
    """The known gap: an ESCALATED purchase (deadline) is activated by hand, free."""
    p = await bought(world)
    await world.backend.relay.run_once()
    world.clock.advance(3700)
    await world.drain()
    assert (await world.purchase(p["id"]))["state"] == "ESCALATED"
    t = (await world.api.get("/v1/ops/tickets", headers=world.as_(world.ops_token))).json()[0]
    r = await world.api.post(
        f"/v1/ops/tickets/{t['id']}/manual-activation", headers=world.as_(world.ops_token)
    )
    body = {"activation_id": r.json()["support_activation_id"], "vin": VINS[0][0],
            "feature": "climate_plus", "action": "activate"}  # fmt: skip
    await consume(world.backend.units, "ev-e", "activation.succeeded", body)
    await world.drain()
    assert (await world.purchase(p["id"]))["state"] == "MANUALLY_ACTIVATED"
    await world.finish()


async def test_permanent_failure_refund_ensured_offer_sent(world: World) -> None:
    """Permanent failure: ticket resolved, nothing kept, apology with an offer."""
    p, t = await failed_ticket(
        world, service="entertainment_pack", duration={"model": "subscription"}
    )
    ops = world.as_(world.ops_token)
    r = await world.api.post(f"/v1/ops/tickets/{t['id']}/permanent-failure", headers=ops)
    assert r.status_code == 200 and r.json()["status"] == "RESOLVED"
    assert "SORRY20" in r.json()["offer"]
    await world.drain()
    got = await world.purchase(p["id"])
    assert (got["state"], got["payment"]["state"]) == ("FAILED_NO_CHARGE", "CANCELLED")
    assert "permanent_failure" in await templates(world, p["id"])
    assert (
        await world.api.post("/v1/ops/tickets/nope/permanent-failure", headers=ops)
    ).status_code == 404
    assert (await world.api.post(f"/v1/ops/tickets/{t['id']}/permanent-failure",
                                 headers=world.as_(world.alice))).status_code == 403  # fmt: skip
    async with world.backend.sessions() as s:
        assert (await s.scalars(select(OutboxMessage.kind))).all() == ["activation.request"]
        assert (await s.get(Purchase, p["id"])) is not None
    await world.finish()


async def test_lifecycle_routes_hostile_input_is_4xx(world: World) -> None:
    """Odd ids, bodies and roles on the issue 5 routes answer 4xx, never 5xx."""
    ops, alice = world.as_(world.ops_token), world.as_(world.alice)
    calls = [
        ("/v1/purchases/%00/cancel", alice, None),
        ("/v1/purchases/" + "a" * 65 + "/cancel", alice, None),
        ("/v1/vehicles/x'--/theft-report", alice, None),
        ("/v1/vehicles/abc/theft-report", ops, None),
        ("/v1/ops/tickets/abc/manual-activation", alice, None),
        ("/v1/ops/tickets/abc/manual-activation", ops, None),
        ("/v1/ops/billing/runs", ops, {"month": "0000-01"}),
        ("/v1/ops/billing/runs", ops, {"month": "2999-12"}),
        ("/v1/ops/billing/runs", ops, {"month": ["2026-11"]}),
    ]
    for url, headers, body in calls:
        r = await world.api.post(url, headers=headers, json=body)
        assert 400 <= r.status_code < 500, (url, r.status_code, r.text)
    r = await world.api.post("/v1/ops/billing/runs", headers=ops, json={"month": "2000-01"})
    assert r.json() == {"month": "2000-01", "charges_created": 0, "charges": []}
    await world.finish()
