"""Runs the monthly subscription charges: authorize, then capture, each with a key fixed
by the charge id, so a crash or a second process replays the same key and the provider
acts once. A definite refusal cancels the subscription (notice, deactivation, ticket)."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from backend.adapters.payments import PaymentProvider, ProviderResult
from backend.domain.retry import backoff_s
from backend.errors import ProviderError, ProviderTimeout
from backend.logs import log
from backend.services import billing, lifecycle
from backend.store.db import Sessions
from backend.store.models import Purchase, SubscriptionCharge
from backend.store.records import open_ticket, timeline
from protocol.timeutil import Clock


class ChargeExecutor:
    def __init__(self, sessions: Sessions, provider: PaymentProvider, clock: Clock) -> None:
        self.sessions = sessions
        self.provider = provider
        self.clock = clock

    async def run_pending(self, limit: int = 200) -> int:
        async with self.sessions() as session:
            due = (
                await session.scalars(
                    select(SubscriptionCharge)
                    .where(
                        SubscriptionCharge.state == billing.REQUESTED,
                        SubscriptionCharge.next_attempt_at <= self.clock.now(),
                    )
                    .order_by(SubscriptionCharge.created_at)
                    .limit(limit)
                )
            ).all()
        done = 0
        for charge in due:
            done += await self.execute(charge)
        return done

    async def execute(self, charge: SubscriptionCharge) -> int:
        try:
            result = await self._call(charge)
        except ProviderTimeout:
            await self._retry_later(charge)
            return 0
        except ProviderError as exc:
            result = ProviderResult("", False, exc.reason)
        return await self._record(charge, result)

    async def _call(self, charge: SubscriptionCharge) -> ProviderResult:
        ref = charge.authorization_ref
        if ref is None:
            auth = await self.provider.authorize(
                idempotency_key=f"subauth:{charge.id}",
                reference=charge.id,
                amount_cents=charge.amount_cents,
                currency="EUR",
            )
            if not auth.approved:
                return auth
            ref = auth.ref
            async with self.sessions.begin() as session:
                await session.execute(
                    update(SubscriptionCharge)
                    .where(SubscriptionCharge.id == charge.id)
                    .values(authorization_ref=ref)
                )
        return await self.provider.capture(
            idempotency_key=f"subcap:{charge.id}",
            authorization_ref=ref,
            amount_cents=charge.amount_cents,
        )

    async def _retry_later(self, charge: SubscriptionCharge) -> None:
        async with self.sessions.begin() as session:
            stored = await session.get(SubscriptionCharge, charge.id)
            if stored is not None and stored.state == billing.REQUESTED:
                stored.attempts += 1
                stored.next_attempt_at = self.clock.now() + backoff_s(stored.attempts, 0.2, 30.0)
        log("charge.timeout", charge_id=charge.id)

    async def _record(self, charge: SubscriptionCharge, result: ProviderResult) -> int:
        now = self.clock.now()
        state = billing.CHARGED if result.approved else billing.FAILED
        async with self.sessions.begin() as session:
            values = {"provider_ref": result.ref or None, "error": result.reason}
            if not await billing.record(session, charge.id, state, now, **values):
                return 0  # another executor recorded it first
            purchase = await lifecycle.lock(session, charge.purchase_id)
            assert purchase is not None
            timeline(
                session, purchase.customer_id, purchase.id, now, f"subscription.{state.lower()}",
                month=charge.month, amount_cents=charge.amount_cents,
            )  # fmt: skip
            if not result.approved:
                await open_ticket(
                    session, purchase, "subscription_charge_failed", None, now,
                    month=charge.month, reason=result.reason,
                )  # fmt: skip
                await lifecycle.tell(
                    session, purchase, "subscription_payment_failed", now,
                    amount=f"{charge.amount_cents / 100:.2f}", month=charge.month,
                )  # fmt: skip
                await _cancel_for_nonpayment(session, purchase, charge, now)
        log("charge.recorded", charge_id=charge.id, state=state, reason=result.reason)
        return 1


async def _cancel_for_nonpayment(
    session: AsyncSession, purchase: Purchase, charge: SubscriptionCharge, now: float
) -> None:
    # billed up to the end of the refused month and not after: the service ends now
    _, month_end = billing.month_bounds(charge.month)
    if purchase.ends_at is None or purchase.ends_at > month_end:
        purchase.ends_at = month_end
    if purchase.cancel_reason is None:
        purchase.cancel_reason, purchase.cancelled_at = "payment_failed", now
    if purchase.state in lifecycle.ON:
        await lifecycle.end_service(
            session, purchase, lifecycle.PS.CANCELLED, "payment_failed", now
        )
