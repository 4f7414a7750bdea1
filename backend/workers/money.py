"""Money operations as durable intents, run against the provider.

A unit of work writes a REQUESTED ``MoneyOp`` (its provider idempotency key fixed at
creation) with the decision that needs it. ``MoneyExecutor`` later calls the provider
with that key and records the answer in a second transaction, guarded by
``state = REQUESTED``, where the purchase machine decides what the answer means. A crash
between the two replays the same key on restart, and a provider that is idempotent per
key answers with the first result: exactly one capture.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, update

from backend.adapters.payments import PaymentProvider, ProviderResult
from backend.domain.events import (
    CaptureAnswered,
    Event,
    HoldDeclined,
    HoldPlaced,
    ReleaseAnswered,
)
from backend.domain.retry import backoff_s
from backend.domain.states import OpKind, OpState, PaymentState
from backend.errors import ProviderError, ProviderTimeout
from backend.logs import log
from backend.store.claims import claim_due
from backend.store.db import Sessions, padded
from backend.store.models import Customer, MoneyOp, Payment, Purchase, Vehicle
from backend.store.unit_of_work import Units
from backend.workers.loops import bounded


@dataclass(frozen=True)
class Recorded:
    """An intent's answer as committed, with the rows its transaction left behind (the
    purchase answer is built from them instead of reading them again)."""

    op: MoneyOp
    payment: Payment
    purchase: Purchase


def answer_event(op: MoneyOp, result: ProviderResult) -> Event:
    """What the provider's answer to an intent means for its purchase."""
    match OpKind(op.kind):
        case OpKind.AUTHORIZE | OpKind.CHARGE if result.approved:
            return HoldPlaced(result.ref, collected=op.kind == OpKind.CHARGE.value)
        case OpKind.AUTHORIZE | OpKind.CHARGE:
            return HoldDeclined(result.reason)
        case OpKind.CAPTURE:
            return CaptureAnswered(result.approved, result.reason)
        case _:
            target = PaymentState(op.target_state or PaymentState.CANCELLED.value)
            kind = OpKind(op.kind)
            return ReleaseAnswered(kind, result.approved, op.amount_cents, target, result.reason)


class MoneyExecutor:
    """Runs due intents, ``concurrency`` provider calls at a time. An intent is claimed
    before it runs (``next_attempt_at`` pushed ``lease_s`` ahead by a guarded UPDATE), so
    no two executors run it at once; one whose executor died is due again after the
    lease, and its replay is harmless (same idempotency key, result recorded once)."""

    def __init__(
        self,
        units: Units,
        provider: PaymentProvider,
        concurrency: int = 1,
        lease_s: float = 30.0,
        claims: Sessions | None = None,
    ) -> None:
        self.units = units
        self.sessions = units.sessions
        # the claim (one guarded UPDATE) and the read of its payments: no transaction
        # needed around them (store/db.py make_statement_sessions)
        self.claims = claims or units.sessions
        self.provider = provider
        self.clock = units.clock
        self.concurrency = concurrency
        self.lease_s = lease_s
        self.metrics = units.metrics

    async def run_pending(self, limit: int = 200) -> int:
        """Execute the due REQUESTED intents (oldest first); returns how many finished."""
        claimed = await self._claim(limit)
        recorded = await bounded(claimed, lambda c: self.execute(*c), self.concurrency)
        return sum(r is not None for r in recorded)

    async def _claim(self, limit: int) -> list[tuple[MoneyOp, Payment]]:
        """Claim up to ``limit`` due intents; with their payments, read in the same trip."""
        now = self.clock.now()
        async with self.claims.begin() as session:
            ops = await claim_due(
                session,
                MoneyOp,
                MoneyOp.id,
                due=(MoneyOp.state == OpState.REQUESTED.value, MoneyOp.next_attempt_at <= now),
                oldest_first=MoneyOp.created_at,
                leased={"next_attempt_at": now + self.lease_s},
                limit=limit,
            )
            if not ops:
                return []
            payments = await session.scalars(
                select(Payment).where(Payment.id.in_(padded(op.payment_id for op in ops)))
            )
            by_id = {payment.id: payment for payment in payments}
        return [(op, by_id[op.payment_id]) for op in ops]

    async def execute(self, op: MoneyOp, payment: Payment) -> Recorded | None:
        """Run one intent this executor claimed (or created claimed): the provider call
        with the intent's key, then its answer recorded once. None: not recorded here
        (timed out: retried later; or recorded by another executor)."""
        if op.state != OpState.REQUESTED.value:
            return None
        try:
            result = await self._call(op, payment)
        except ProviderTimeout:
            await self._retry_later(op)
            self.metrics.money(op.kind, "retry")
            return None
        except ProviderError as exc:
            result = ProviderResult("", False, exc.reason)
        recorded = await self._record(op.id, result)
        if recorded is not None:  # committed here (not by another executor): counted once
            self.metrics.money(op.kind, "succeeded" if result.approved else "failed")
        return recorded

    async def _call(self, op: MoneyOp, payment: Payment) -> ProviderResult:
        key, ref = op.idempotency_key, payment.authorization_ref or ""
        match OpKind(op.kind):
            case OpKind.AUTHORIZE:
                return await self.provider.authorize(
                    idempotency_key=key,
                    reference=payment.id,
                    amount_cents=op.amount_cents,
                    currency=payment.currency,
                )
            case OpKind.CHARGE:
                return await self.provider.charge(
                    idempotency_key=key,
                    reference=payment.id,
                    amount_cents=op.amount_cents,
                    currency=payment.currency,
                )
            case OpKind.CAPTURE:
                return await self.provider.capture(
                    idempotency_key=key, authorization_ref=ref, amount_cents=op.amount_cents
                )
            case OpKind.CANCEL:
                return await self.provider.cancel(idempotency_key=key, authorization_ref=ref)
            case OpKind.REFUND:
                return await self.provider.refund(
                    idempotency_key=key, authorization_ref=ref, amount_cents=op.amount_cents
                )

    async def _retry_later(self, op: MoneyOp) -> None:
        now = self.clock.now()
        async with self.sessions.begin() as session:
            await session.execute(
                update(MoneyOp)
                .where(MoneyOp.id == op.id, MoneyOp.state == OpState.REQUESTED.value)
                .values(
                    attempts=op.attempts + 1,
                    next_attempt_at=now + backoff_s(op.attempts + 1, 0.2, 30.0),
                )
            )
            if op.kind in (OpKind.AUTHORIZE.value, OpKind.CHARGE.value):
                # outcome unknown: the payment is PENDING until the retry is answered
                await session.execute(
                    update(Payment)
                    .where(
                        Payment.id == op.payment_id, Payment.state == PaymentState.INITIATED.value
                    )
                    .values(state=PaymentState.PENDING.value, updated_at=now)
                )
        log("money.timeout", op=op.kind, payment_id=op.payment_id, attempt=op.attempts + 1)

    async def _record(self, op_id: str, result: ProviderResult) -> Recorded | None:
        async with self.units.begin() as work:
            state = OpState.SUCCEEDED if result.approved else OpState.FAILED
            op = await work.session.scalar(
                update(MoneyOp)
                .where(MoneyOp.id == op_id, MoneyOp.state == OpState.REQUESTED.value)
                .values(
                    state=state.value,
                    provider_ref=result.ref or None,
                    error=result.reason,
                    completed_at=work.now,
                )
                .returning(MoneyOp)  # the recorded row, read by the same statement
                .execution_options(synchronize_session=False)
            )
            if op is None:
                return None  # another executor recorded it first
            # payment, purchase, and the customer and vehicle a notice names, in one trip;
            # the unit of work finds them in the session (``session.get`` without SQL)
            # while ``loaded`` holds them (the identity map keeps rows only weakly)
            loaded = (
                await work.session.execute(
                    select(Payment, Purchase, Customer, Vehicle)
                    .join(Purchase, Purchase.id == Payment.purchase_id)
                    .join(Customer, Customer.id == Purchase.customer_id)
                    .join(Vehicle, Vehicle.id == Purchase.vehicle_id)
                    .where(Payment.id == op.payment_id)
                )
            ).one()
            payment, purchase = loaded.Payment, loaded.Purchase
            await work.decide(purchase, payment, answer_event(op, result))
        log(
            "money.recorded",
            op=op.kind,
            payment_id=op.payment_id,
            state=state.value,
            reason=result.reason,
        )
        return Recorded(op, payment, purchase)
