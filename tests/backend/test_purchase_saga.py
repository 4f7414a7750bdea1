"""Unit tests of the purchase saga on SQLite with fakes and a manual clock."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from backend.store.models import MoneyOp, Notification, OutboxMessage, Ticket
from backend.workers.consumer import consume
from tests.backend.conftest import VINS, World

pytestmark = pytest.mark.timeout(30)


async def event(
    w: World, type_: str, purchase: dict[str, Any], event_id: str | None = None, **data: object
) -> str:
    eid = event_id or f"ev-{type_}-{purchase['id']}"
    body = {
        "activation_id": purchase["activation_id"],
        "vin": VINS[0][0],
        "feature": purchase["service_id"],
        "action": "activate",
        **data,
    }
    return await consume(w.backend.units, eid, type_, body)


async def bought(w: World, **kw: Any) -> dict[str, Any]:
    response = await w.buy(**kw)
    assert response.status_code == 202, response.text
    return dict(response.json())


async def test_purchase_holds_then_outbox_reaches_gateway(world: World) -> None:
    """A purchase places a hold, queues an outbox row, and the relay sends the VIN."""
    p = await bought(world)
    assert p["state"] == "ACTIVATION_QUEUED"
    assert p["payment"]["state"] == "HELD_FOR_ACTIVATION"
    await world.backend.relay.run_once()
    assert world.gateway.requests == [
        {
            "activation_id": p["activation_id"],
            "vin": VINS[0][0],
            "feature": "climate_plus",
            "action": "activate",
        }
    ]
    assert (await world.purchase(p["id"]))["state"] == "ACTIVATING"
    await world.finish()


async def test_success_captures_once_and_notifies(world: World) -> None:
    """activation.succeeded → ACTIVE, exactly one capture → CHARGED, success e-mail + push."""
    p = await bought(world)
    await world.backend.relay.run_once()
    assert await event(world, "activation.succeeded", p) == "applied"
    await world.drain()
    got = await world.purchase(p["id"])
    assert got["state"] == "ACTIVE"
    assert got["activation_state"] == "SUCCEEDED"  # docs/spec.md §3 Activation state names
    assert got["payment"]["state"] == "CHARGED"
    assert got["payment"]["captured_cents"] == p["price_cents"] == 39000
    assert sum(world.provider.real_captures.values()) == 1
    assert [s for _, s, _ in world.channels["email"].sent] == ["climate_plus is active"]
    assert len(world.channels["push"].sent) == 1  # Alice has the app
    assert world.channels["sms"].sent == []  # not critical
    await world.finish()


def bodies(w: World) -> list[str]:
    return [body for channel in w.channels.values() for _, _, body in channel.sent]


async def logged(w: World, purchase_id: str) -> list[tuple[str, str]]:
    """(template, body) of the e-mail rows of this purchase, queued or sent."""
    async with w.backend.sessions() as s:
        rows = await s.scalars(
            select(Notification)
            .where(Notification.purchase_id == purchase_id, Notification.channel == "email")
            .order_by(Notification.created_at)
        )
        return [(n.template, n.body) for n in rows]


async def test_charged_notice_only_once_the_capture_is_confirmed(world: World) -> None:
    """Activation succeeded, capture only requested (the backend could die here): no
    "You are charged" queued or sent. Once the capture is recorded: exactly one."""
    p = await bought(world)
    await world.backend.relay.run_once()
    assert await event(world, "activation.succeeded", p) == "applied"
    await world.backend.dispatcher.dispatch_pending()
    assert await logged(world, p["id"]) == []
    assert not any("charged" in b for b in bodies(world))
    assert await world.backend.executor.run_pending() == 1  # the capture, approved
    await world.backend.dispatcher.dispatch_pending()
    charged = (
        "climate_plus is now active on your vehicle WVWZZZ1JZ3W386752. You are charged 390.00 EUR."
    )
    assert await logged(world, p["id"]) == [("activation_success", charged)]
    assert [b for _, _, b in world.channels["email"].sent] == [charged]
    assert [b for _, _, b in world.channels["push"].sent] == [charged]
    await world.finish()
    assert sum("You are charged" in b for b in bodies(world)) == 2  # e-mail + push, once


async def test_refused_capture_tells_the_customer_they_are_not_charged(world: World) -> None:
    """The provider lost the hold, so the capture is refused: the feature stays on at
    CaaS's cost (ticket), and the customer is told just that, never "You are charged"."""
    p = await bought(world)
    await world.backend.relay.run_once()
    hold = next(iter(world.provider.auths))
    await world.provider.client.cancel(idempotency_key="lost", authorization_ref=hold)  # gone
    await event(world, "activation.succeeded", p)
    await world.drain()
    got = await world.purchase(p["id"])
    assert (got["state"], got["payment"]["state"]) == ("ACTIVE", "FAILED_NO_CHARGE")
    assert sum(world.provider.real_captures.values()) == 0
    assert [t for t, _ in await logged(world, p["id"])] == ["activation_success_not_charged"]
    sent = world.channels["email"].sent
    assert [s for _, s, _ in sent] == ["climate_plus is active"]
    assert "you will not be charged for it" in sent[0][2]
    assert not any("You are charged" in b for b in bodies(world))
    async with world.backend.sessions() as s:
        assert (await s.scalars(select(Ticket.kind))).all() == ["capture_failed"]
    await world.finish()


async def test_subscription_is_told_at_activation(world: World) -> None:
    """Billed in arrears: nothing is captured at activation, the notice goes at once."""
    p = await bought(world, service="climate_plus", duration={"model": "subscription"})
    await world.backend.relay.run_once()
    await event(world, "activation.succeeded", p)
    assert [t for t, _ in await logged(world, p["id"])] == ["activation_success"]
    (_, body), *_ = await logged(world, p["id"])
    assert "Billed monthly in arrears: 9.90 EUR a month." in body
    await world.finish()
    assert world.provider.calls["capture"] == 0
    assert not any("You are charged" in b for b in bodies(world))


async def test_failure_cancels_hold_opens_ticket_and_never_charges(world: World) -> None:
    """activation.failed → FAILED_NO_CHARGE, hold cancelled, ticket with diagnostics, SMS."""
    p = await bought(world)
    diag = {"dtcs": ["P0A80"], "firmware": "4.2.1"}
    await event(world, "activation.failed", p, failure_category="timeout", diagnostics=diag)
    await world.drain()
    got = await world.purchase(p["id"])
    assert (got["state"], got["payment"]["state"]) == ("FAILED_NO_CHARGE", "CANCELLED")
    assert got["activation_state"] == "FAILED"
    assert got["payment"]["captured_cents"] == 0
    auth = next(iter(world.provider.auths.values()))
    assert auth.cancelled and auth.captured_cents == 0
    async with world.backend.sessions() as s:
        ticket = (await s.scalars(select(Ticket))).one()
    assert ticket.details["diagnostics"] == diag
    assert ticket.details["customer"]["email"] == "alice@example.com"
    bodies = [b for _, _, b in world.channels["email"].sent]
    assert any("You will NOT be charged" in b for b in bodies)
    assert any(ticket.number in b for b in bodies)
    assert len(world.channels["sms"].sent) == 1  # the failure is critical
    await world.finish()


async def test_duplicate_and_reordered_events_are_no_ops(world: World) -> None:
    """The same event twice captures once; a late 'accepted' or 'failed' changes nothing."""
    p = await bought(world)
    assert await event(world, "activation.succeeded", p, "e1") == "applied"
    assert await event(world, "activation.succeeded", p, "e1") == "duplicate"
    assert await event(world, "activation.accepted", p, "e0") == "applied"
    assert await event(world, "activation.failed", p, "e2") == "stale"
    await world.drain()
    got = await world.purchase(p["id"])
    assert (got["state"], got["payment"]["state"]) == ("ACTIVE", "CHARGED")
    assert sum(world.provider.real_captures.values()) == 1
    await world.finish()


async def test_event_for_unknown_activation_is_ignored(world: World) -> None:
    """Events of activations the backend did not request are recorded and ignored."""
    stranger = {"id": "x", "activation_id": "not-ours", "service_id": "climate_plus"}
    assert await event(world, "activation.succeeded", stranger) == "ignored"
    await world.finish()


async def test_gateway_down_nothing_lost_delivered_later(world: World) -> None:
    """Gateway down: the outbox backs off and delivers once it is back."""
    world.gateway.down = True
    p = await bought(world)
    assert await world.backend.relay.run_once() == 0
    assert await world.backend.relay.run_once() == 0  # backing off: not even tried
    world.clock.advance(1.5)
    await world.backend.relay.run_once()
    async with world.backend.sessions() as s:
        row = (await s.scalars(select(OutboxMessage))).one()
    assert row.attempts == 2 and row.delivered_at is None
    world.gateway.down = False
    world.clock.advance(5)
    assert await world.backend.relay.run_once() == 1
    assert (await world.purchase(p["id"]))["state"] == "ACTIVATING"
    await event(world, "activation.succeeded", p)
    await world.finish()


async def test_gateway_rejection_fails_without_charge(world: World) -> None:
    """A 4xx from the gateway is terminal: FAILED_NO_CHARGE, hold released, ticket."""
    world.gateway.reject = 422
    p = await bought(world)
    await world.backend.relay.run_once()
    await world.drain()
    got = await world.purchase(p["id"])
    assert (got["state"], got["payment"]["state"]) == ("FAILED_NO_CHARGE", "CANCELLED")
    async with world.backend.sessions() as s:
        assert (await s.scalars(select(Ticket.kind))).all() == ["dispatch_rejected"]
    await world.finish()


async def test_scheduled_purchase_waits_for_start(world: World) -> None:
    """start_at in the future → SCHEDULED; the gateway hears of it only at start_at."""
    from protocol.timeutil import format_ts

    p = await bought(world, start_at=format_ts(world.clock.now() + 600))
    assert p["state"] == "SCHEDULED"
    await world.backend.relay.run_once()
    assert world.gateway.requests == []
    world.clock.advance(601)
    await world.backend.relay.run_once()
    assert len(world.gateway.requests) == 1
    assert (await world.purchase(p["id"]))["state"] == "ACTIVATING"
    await event(world, "activation.succeeded", p)
    await world.finish()


async def test_deadline_escalates_and_releases_hold(world: World) -> None:
    """In flight past the deadline: gateway cancel, ESCALATED, hold cancelled, ticket."""
    p = await bought(world)
    await world.backend.relay.run_once()
    world.clock.advance(3601)
    await world.drain()
    got = await world.purchase(p["id"])
    assert (got["state"], got["payment"]["state"]) == ("ESCALATED", "CANCELLED")
    assert world.gateway.cancelled == [p["activation_id"]]
    await world.finish()


async def test_deadline_uses_gateway_truth_when_it_succeeded(world: World) -> None:
    """A success the backend missed is found by the watchdog and charged once."""
    p = await bought(world)
    await world.backend.relay.run_once()
    world.gateway.remote[p["activation_id"]]["state"] = "SUCCEEDED"
    world.clock.advance(3601)
    await world.drain()
    got = await world.purchase(p["id"])
    assert (got["state"], got["payment"]["state"]) == ("ACTIVE", "CHARGED")
    await world.finish()


async def test_notification_channel_failure_is_logged_not_lost(world: World) -> None:
    """A failing channel marks its row FAILED; the other channels still deliver."""
    world.channels["push"].fail = True
    p = await bought(world)
    await event(world, "activation.succeeded", p)
    await world.drain()
    async with world.backend.sessions() as s:
        rows = {n.channel: n.status for n in (await s.scalars(select(Notification))).all()}
        ops = await s.scalar(select(func.count()).select_from(MoneyOp))
    assert rows == {"email": "SENT", "push": "FAILED"}
    assert ops == 2  # authorize + capture
    await world.finish()
