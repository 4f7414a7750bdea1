"""Payments: declines, timeouts, webhooks (signed, duplicated, reordered, failed),
reconciliation, refunds, and the crash between a capture and its database write."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from backend.adapters.payments import SIGNATURE_HEADER, sign
from backend.store.models import MoneyOp, Ticket
from paysim.modes import FailureModes
from tests.backend.conftest import SECRET, WorldFactory
from tests.backend.fakes import CrashAfterCapture, Killed
from tests.backend.test_purchase_saga import bought, event

pytestmark = pytest.mark.timeout(30)


async def test_decline_is_payment_failed_without_outbox(make_world: WorldFactory) -> None:
    """A declined authorization → PAYMENT_FAILED / FAILED_NO_CHARGE, nothing sent."""
    async with make_world(sim=FailureModes(decline_rate=1.0)) as w:
        p = await bought(w)
        assert (p["state"], p["payment"]["state"]) == ("PAYMENT_FAILED", "FAILED_NO_CHARGE")
        await w.drain()
        assert w.gateway.requests == []
        assert [s for _, s, _ in w.channels["email"].sent] == ["Payment declined for climate_plus"]
        await w.finish()


async def test_authorize_timeout_retries_with_same_key(make_world: WorldFactory) -> None:
    """Authorize times out (after acting) → PENDING; the retry reuses the key: one hold."""
    async with make_world() as w:
        w.provider.forced_timeouts["authorize"] = 1
        p = await bought(w)
        assert (p["state"], p["payment"]["state"]) == ("PAYMENT_PENDING", "PENDING")
        w.clock.advance(1)
        await w.drain()
        got = await w.purchase(p["id"])
        assert got["payment"]["state"] == "HELD_FOR_ACTIVATION"
        assert got["state"] == "ACTIVATING"
        assert len(w.provider.auths) == 1
        await event(w, "activation.succeeded", p)
        await w.finish()


async def test_crash_between_capture_and_db_write_ends_with_one_capture(
    make_world: WorldFactory,
) -> None:
    """Killed after the provider captured but before the DB knew: the restart replays
    the durable intent with the same key; exactly one capture, payment CHARGED."""
    async with make_world(wrap_provider=CrashAfterCapture) as w:
        inner = w.provider
        p = await bought(w)
        await event(w, "activation.succeeded", p)
        with pytest.raises(Killed):
            await w.backend.executor.run_pending()
        assert sum(inner.real_captures.values()) == 1
        assert (await w.purchase(p["id"]))["payment"]["state"] == "HELD_FOR_ACTIVATION"
        # "restart": a fresh executor over the same database and the real provider, once
        # the dead executor's claim on the intent has expired
        w.backend.executor.provider = inner.client
        w.clock.advance(w.backend.executor.lease_s)
        await w.drain()
        got = await w.purchase(p["id"])
        assert (got["state"], got["payment"]["state"]) == ("ACTIVE", "CHARGED")
        assert sum(inner.real_captures.values()) == 1
        assert inner.calls["capture"] == 2
        await w.finish()


def signed(
    body: dict[str, object], now: float, secret: str = SECRET
) -> tuple[bytes, dict[str, str]]:
    raw = json.dumps(body).encode()
    return raw, {SIGNATURE_HEADER: sign(secret, raw, now), "Content-Type": "application/json"}


async def test_webhook_signature_is_verified(make_world: WorldFactory) -> None:
    """Unsigned, wrongly signed or stale webhooks → 400; nothing applied."""
    async with make_world() as w:
        body = {"event_id": "w1", "type": "capture.settled", "reference": "x", "seq": 2}
        raw, headers = signed(body, w.clock.now(), secret="wrong")
        r = await w.api.post("/v1/payments/webhooks", content=raw, headers=headers)
        assert (r.status_code, r.json()["error"]) == (400, "bad_signature")
        r = await w.api.post("/v1/payments/webhooks", content=raw)
        assert r.status_code == 400
        raw, headers = signed(body, w.clock.now() - 3600)
        assert (
            await w.api.post("/v1/payments/webhooks", content=raw, headers=headers)
        ).status_code == 400
        raw, headers = signed(body, w.clock.now())
        r = await w.api.post("/v1/payments/webhooks", content=raw, headers=headers)
        assert (r.status_code, r.json()["outcome"]) == (200, "ignored")
        raw = b"not json"
        headers = {SIGNATURE_HEADER: sign(SECRET, raw, w.clock.now())}
        assert (
            await w.api.post("/v1/payments/webhooks", content=raw, headers=headers)
        ).status_code == 400


async def test_settlement_webhooks_duplicated_and_reordered(make_world: WorldFactory) -> None:
    """Final 'settled' overtakes 'pending' and both come twice: settled stays settled."""
    modes = FailureModes(settle_delay_s=5.0, duplicate_rate=1.0, reorder=True)
    async with make_world(sim=modes) as w:
        p = await bought(w)
        await event(w, "activation.succeeded", p)
        await w.drain()
        assert (await w.purchase(p["id"]))["payment"]["settlement"] == "SETTLED"
        w.clock.advance(6)
        await w.drain()
        assert w.provider.outgoing == []
        assert (await w.purchase(p["id"]))["payment"]["settlement"] == "SETTLED"
        await w.finish()


async def test_failed_settlement_opens_ticket_feature_stays(make_world: WorldFactory) -> None:
    """A failed settlement: the feature stays ACTIVE (CaaS carries it), ops get a ticket."""
    async with make_world(sim=FailureModes(settle_delay_s=1.0, settle_fail_rate=1.0)) as w:
        p = await bought(w)
        await event(w, "activation.succeeded", p)
        await w.drain()
        w.clock.advance(2)
        await w.drain()
        got = await w.purchase(p["id"])
        assert (got["state"], got["payment"]["settlement"]) == ("ACTIVE", "FAILED")
        async with w.backend.sessions() as s:
            assert (await s.scalars(select(Ticket.kind))).all() == ["settlement_failed"]
        await w.finish()


async def test_reconciliation_asks_provider_for_lost_webhooks(make_world: WorldFactory) -> None:
    """Webhooks never arrive: after the grace period reconciliation asks the provider."""
    async with make_world() as w:
        w.provider.sink = None  # the webhooks are lost
        p = await bought(w)
        await event(w, "activation.succeeded", p)
        await w.drain()
        assert (await w.purchase(p["id"]))["payment"]["settlement"] == "PENDING"
        w.clock.advance(61)
        report = await w.backend.reconciler.run_once()
        assert report["queried"] == 1 and report["settlement_settled"] == 1
        assert (await w.purchase(p["id"]))["payment"]["settlement"] == "SETTLED"
        await w.finish()


async def test_refund_of_a_captured_payment_equals_the_capture(make_world: WorldFactory) -> None:
    """Giving back a charged payment (a withdrawal, asked twice) refunds exactly what was
    captured, once."""
    async with make_world() as w:
        p = await bought(w)
        await event(w, "activation.succeeded", p)
        await w.drain()
        for _ in range(2):
            answer = await w.api.post(f"/v1/purchases/{p['id']}/cancel", headers=w.as_(w.alice))
            assert answer.json()["refund_cents"] == 39000, answer.text
        await w.drain()
        got = await w.purchase(p["id"])
        assert got["payment"]["state"] == "REFUNDED"
        assert got["payment"]["refunded_cents"] == got["payment"]["captured_cents"] == 39000
        auth = next(iter(w.provider.auths.values()))
        assert auth.refunded_cents == 39000
        async with w.backend.sessions() as s:
            kinds = sorted((await s.scalars(select(MoneyOp.kind))).all())
        assert kinds == ["authorize", "capture", "refund"]
        await w.finish()


async def test_authorize_unanswered_until_deadline_releases_late_hold(
    make_world: WorldFactory,
) -> None:
    """Authorize keeps timing out past the deadline → PAYMENT_FAILED; when the hold
    finally comes through it is cancelled at once: nothing held, nothing charged."""
    async with make_world() as w:
        w.provider.forced_timeouts["authorize"] = 1000
        p = await bought(w)
        w.clock.advance(3601)
        await w.drain()
        got = await w.purchase(p["id"])
        assert (got["state"], got["payment"]["state"]) == ("PAYMENT_FAILED", "PENDING")
        w.provider.forced_timeouts["authorize"] = 0
        w.clock.advance(60)
        await w.drain()
        got = await w.purchase(p["id"])
        assert (got["state"], got["payment"]["state"]) == ("PAYMENT_FAILED", "CANCELLED")
        assert len(w.provider.auths) == 1
        assert all(a.cancelled for a in w.provider.auths.values())
        assert w.gateway.requests == []
        await w.finish()
