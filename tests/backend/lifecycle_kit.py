"""Helpers for the issue 5 tests: an active purchase, time travel, gateway events."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from backend.store.models import Notification, Purchase
from backend.workers.consumer import consume
from tests.backend.conftest import VINS, World
from tests.backend.test_purchase_saga import bought, event

DAY = 86_400.0


async def active(w: World, service: str = "climate_plus", **kw: Any) -> dict[str, Any]:
    """Buy, deliver, succeed: an ACTIVE purchase (charged unless a subscription)."""
    p = await bought(w, service=service, **kw)
    await w.backend.relay.run_once()
    assert await event(w, "activation.succeeded", p) == "applied"
    await w.drain()
    got = await w.purchase(p["id"])
    assert got["state"] == "ACTIVE", got
    return got


async def travel(w: World, seconds: float) -> None:
    """Move the injected clock and let every loop (scheduler included) catch up."""
    w.clock.advance(seconds)
    await w.drain()


async def row(w: World, purchase_id: str) -> Purchase:
    async with w.backend.sessions() as s:
        found = await s.get(Purchase, purchase_id)
    assert found is not None
    return found


async def off_event(w: World, purchase_id: str, type_: str = "activation.succeeded") -> str:
    """The gateway's answer to the deactivation of this purchase."""
    p = await row(w, purchase_id)
    assert p.deactivation_id is not None
    body: dict[str, Any] = {
        "activation_id": p.deactivation_id,
        "vin": VINS[0][0],
        "feature": p.service_id,
        "action": "deactivate",
    }
    if type_ == "activation.failed":
        body["diagnostics"] = {"dtcs": ["U0100"]}
    eid = f"ev-off-{type_}-{purchase_id}"
    return await consume(w.backend.units, eid, type_, body)


async def templates(w: World, purchase_id: str | None = None) -> list[str]:
    async with w.backend.sessions() as s:
        q = select(Notification).where(Notification.channel == "email")
        if purchase_id:
            q = q.where(Notification.purchase_id == purchase_id)
        return [n.template for n in (await s.scalars(q.order_by(Notification.created_at))).all()]


def deactivations(w: World) -> list[dict[str, Any]]:
    return [r for r in w.gateway.requests if r["action"] == "deactivate"]


async def cancel(w: World, purchase_id: str, who: Any = None) -> Any:
    return await w.api.post(f"/v1/purchases/{purchase_id}/cancel", headers=w.as_(who or w.alice))
