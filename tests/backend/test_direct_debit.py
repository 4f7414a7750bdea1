"""The handbook's second payment flow: charge now, settle later, refund on failure (a
direct debit), against the payment provider's real logic over HTTP, on SQLite and
PostgreSQL. Every test ends with the money invariants."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import delete, select, update

from backend.audit import money as invariants
from backend.store.models import Customer, MoneyOp, Ticket
from paysim.modes import FailureModes
from tests.backend.conftest import World, WorldFactory
from tests.backend.test_purchase_saga import bought, event

pytestmark = pytest.mark.timeout(60)


async def pays_by_direct_debit(w: World) -> None:
    async with w.backend.sessions.begin() as session:
        await session.execute(
            update(Customer)
            .where(Customer.id == w.alice.customer_id)
            .values(payment_method="direct_debit")
        )


async def intents(w: World) -> list[str]:
    async with w.backend.sessions() as session:
        return sorted((await session.scalars(select(MoneyOp.kind))).all())


def charged_notices(w: World) -> list[str]:
    return [body for _, _, body in w.channels["email"].sent if "You are charged" in body]


async def test_taken_at_purchase_kept_once_active(db_url: str, make_world: WorldFactory) -> None:
    """The money is taken when the purchase is made (no hold, no capture later) and kept
    once the feature is on; the customer is told then, and settlement follows."""
    async with make_world(db_url) as w:
        await pays_by_direct_debit(w)
        p = await bought(w)
        assert p["payment"]["method"] == "direct_debit"
        assert (p["payment"]["state"], p["payment"]["captured_cents"]) == (
            "HELD_FOR_ACTIVATION",
            39000,
        )
        assert charged_notices(w) == []  # taken, not yet kept: nothing said
        await w.backend.relay.run_once()
        await event(w, "activation.succeeded", p)
        await w.drain()
        got = await w.purchase(p["id"])
        assert (got["state"], got["payment"]["state"]) == ("ACTIVE", "CHARGED")
        assert await intents(w) == ["charge"]
        assert w.provider.calls["capture"] == 0 and w.provider.calls["authorize"] == 0
        assert len(charged_notices(w)) == 1
        w.clock.advance(6)  # the settlement delay
        await w.drain()
        assert (await w.purchase(p["id"]))["payment"]["settlement"] == "SETTLED"
        await w.finish()


async def test_failed_activation_refunds_everything(db_url: str, make_world: WorldFactory) -> None:
    """The feature never went on: what was taken is refunded in full (REFUNDED), the
    purchase ends FAILED_NO_CHARGE with a ticket, and nobody is told they are charged."""
    async with make_world(db_url) as w:
        await pays_by_direct_debit(w)
        p = await bought(w)
        await w.backend.relay.run_once()
        await event(w, "activation.failed", p, diagnostics={"dtcs": ["P0A80"]})
        await w.drain()
        got = await w.purchase(p["id"])
        assert (got["state"], got["payment"]["state"]) == ("FAILED_NO_CHARGE", "REFUNDED")
        assert got["payment"]["refunded_cents"] == got["payment"]["captured_cents"] == 39000
        assert await intents(w) == ["charge", "refund"]
        assert charged_notices(w) == []
        await w.finish()


async def test_declined_direct_debit_charges_nothing(make_world: WorldFactory) -> None:
    async with make_world(sim=FailureModes(decline_rate=1.0)) as w:
        await pays_by_direct_debit(w)
        p = await bought(w)
        assert (p["state"], p["payment"]["state"]) == ("PAYMENT_FAILED", "FAILED_NO_CHARGE")
        assert w.gateway.requests == []
        await w.finish()


async def test_withdrawn_before_it_starts_is_refunded(make_world: WorldFactory) -> None:
    """Scheduled for next week and cancelled now: everything taken goes back."""
    async with make_world() as w:
        await pays_by_direct_debit(w)
        start = datetime.fromtimestamp(w.clock.now() + 7 * 86_400, tz=UTC).isoformat()
        p = await bought(w, start_at=start)
        assert p["state"] == "SCHEDULED"
        answer = await w.api.post(f"/v1/purchases/{p['id']}/cancel", headers=w.as_(w.alice))
        assert answer.json()["rule"] == "scheduled_not_started", answer.text
        assert answer.json()["refund_cents"] == 39000
        await w.drain()
        got = await w.purchase(p["id"])
        assert (got["state"], got["payment"]["state"]) == ("CANCELLED", "REFUNDED")
        await w.finish()


async def test_a_subscription_keeps_the_card_check(make_world: WorldFactory) -> None:
    """Billed monthly in arrears: nothing is taken at purchase, whatever the method."""
    async with make_world() as w:
        await pays_by_direct_debit(w)
        p = await bought(w, duration={"model": "subscription"})
        assert p["payment"]["method"] == "card"
        await w.backend.relay.run_once()
        await event(w, "activation.succeeded", p)
        await w.drain()
        assert await intents(w) == ["authorize", "cancel"]
        await w.finish()


async def test_settlement_failing_after_activation_is_followed_up(
    db_url: str, make_world: WorldFactory
) -> None:
    """The debit bounces after the feature went on: the feature stays on (CaaS carries
    the risk), support gets a settlement_failed ticket, and the invariant checker knows
    that a failed settlement without a ticket is a broken rule."""
    async with make_world(db_url, sim=FailureModes(settle_delay_s=1.0, settle_fail_rate=1.0)) as w:
        await pays_by_direct_debit(w)
        p = await bought(w)
        await w.backend.relay.run_once()
        await event(w, "activation.succeeded", p)
        w.clock.advance(2)
        await w.drain()
        got = await w.purchase(p["id"])
        assert (got["state"], got["payment"]["settlement"]) == ("ACTIVE", "FAILED")
        async with w.backend.sessions() as session:
            kinds = (await session.scalars(select(Ticket.kind))).all()
        assert kinds == ["settlement_failed"]
        await w.finish()
        async with w.backend.sessions.begin() as session:
            await session.execute(delete(Ticket))
        async with w.backend.sessions() as session:
            found = await invariants.check(session, w.clock.now())
        assert [v.rule for v in found] == ["failed_settlement_followed_up"]
