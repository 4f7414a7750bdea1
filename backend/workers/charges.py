"""Runs the monthly subscription charges: authorize, then capture, each with a key fixed
by the charge id, so a crash or a second process replays the same key and the provider
acts once. A definite refusal cancels the subscription (notice, deactivation, ticket)."""

from __future__ import annotations

from sqlalchemy import select, update

from backend.adapters.payments import PaymentProvider, ProviderResult
from backend.domain.events import NonPayment
from backend.domain.months import month_bounds
from backend.domain.retry import backoff_s
from backend.domain.states import OpKind
from backend.errors import ProviderError, ProviderTimeout
from backend.logs import log
from backend.store import billing
from backend.store.models import SubscriptionCharge
from backend.store.records import timeline
from backend.store.unit_of_work import Units


class ChargeExecutor:
    def __init__(self, units: Units, provider: PaymentProvider) -> None:
        self.units = units
        self.sessions = units.sessions
        self.provider = provider
        self.clock = units.clock
        self.metrics = units.metrics

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
            self.metrics.money(OpKind.CHARGE.value, "retry")
            return 0
        except ProviderError as exc:
            result = ProviderResult("", False, exc.reason)
        recorded = await self._record(charge, result)
        if recorded:  # a month's charge (its authorize and capture) counts as one charge
            self.metrics.money(OpKind.CHARGE.value, "succeeded" if result.approved else "failed")
        return recorded

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
        state = billing.CHARGED if result.approved else billing.FAILED
        async with self.units.begin() as work:
            values = {"provider_ref": result.ref or None, "error": result.reason}
            if not await billing.record(work.session, charge.id, state, work.now, **values):
                return 0  # another executor recorded it first
            purchase = await work.lock(charge.purchase_id)
            assert purchase is not None
            timeline(
                work.session, purchase.customer_id, purchase.id, work.now,
                f"subscription.{state.lower()}", month=charge.month,
                amount_cents=charge.amount_cents,
            )  # fmt: skip
            if not result.approved:
                _, month_end = month_bounds(charge.month)
                event = NonPayment(charge.month, month_end, charge.amount_cents, result.reason)
                await work.decide(purchase, None, event)  # the subscription's own hold is gone
        log("charge.recorded", charge_id=charge.id, state=state, reason=result.reason)
        return 1
