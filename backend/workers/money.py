"""Money operations as durable intents.

``request()`` writes a REQUESTED ``MoneyOp`` (its provider idempotency key fixed at
creation) inside the caller's transaction. ``MoneyExecutor`` later calls the provider
with that key and records the answer in a second transaction, guarded by
``state = REQUESTED``. A crash between the two replays the same key on restart, and a
provider that is idempotent per key answers with the first result: exactly one capture.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from backend.adapters.payments import PaymentProvider, ProviderResult
from backend.domain.retry import backoff_s
from backend.domain.states import OpKind, OpState, PaymentState
from backend.errors import ProviderError, ProviderTimeout
from backend.logs import log
from backend.store import preload
from backend.store.claims import claim_due
from backend.store.db import Sessions
from backend.store.models import Customer, MoneyOp, Payment, Purchase, Vehicle
from backend.workers import wakeups
from backend.workers.loops import bounded
from protocol.timeutil import Clock

# called inside the recording transaction with the op, its payment and the answer
Applier = Callable[[AsyncSession, MoneyOp, Payment, ProviderResult], Awaitable[None]]


async def request(
    session: AsyncSession,
    payment: Payment,
    kind: OpKind,
    amount_cents: int,
    target_state: PaymentState | None,
    now: float,
) -> MoneyOp:
    """The intent for ``kind`` on this payment (at most one per kind: unique in SQL)."""
    existing = await preload.intent_of(session, payment.id, kind.value)
    if existing is not None:
        return existing
    return await add_intent(session, payment, kind, amount_cents, target_state, now)


async def add_intent(
    session: AsyncSession,
    payment: Payment,
    kind: OpKind,
    amount_cents: int,
    target_state: PaymentState | None,
    now: float,
    claim_s: float = 0.0,
) -> MoneyOp:
    """A new intent on a payment known to have none of this kind (one just created).

    ``claim_s`` > 0: the caller executes it itself right after the commit, so it is
    born claimed (due only after ``claim_s``, when the executor takes it over if the
    caller died); otherwise the money loop is woken by the commit."""
    op = MoneyOp(
        id=str(uuid.uuid4()),
        payment_id=payment.id,
        kind=kind.value,
        idempotency_key=f"{kind.value}:{payment.id}",
        amount_cents=amount_cents,
        target_state=target_state.value if target_state else None,
        state=OpState.REQUESTED.value,
        attempts=0,
        next_attempt_at=now + claim_s,
        created_at=now,
    )
    session.add(op)  # flushed with the rest of the transaction (fewer round trips)
    preload.added_intent(session, op)
    if claim_s <= 0:
        wakeups.mark(session, wakeups.MONEY)
    log("money.requested", op=kind.value, payment_id=payment.id, amount_cents=amount_cents)
    return op


@dataclass(frozen=True)
class Recorded:
    """An intent's answer as committed, with the rows its transaction left behind (the
    purchase answer is built from them instead of reading them again)."""

    op: MoneyOp
    payment: Payment
    purchase: Purchase


class MoneyExecutor:
    """Runs due intents, ``concurrency`` provider calls at a time. An intent is claimed
    before it runs (``next_attempt_at`` pushed ``lease_s`` ahead by a guarded UPDATE), so
    no two executors run it at once; one whose executor died is due again after the
    lease, and its replay is harmless (same idempotency key, result recorded once)."""

    def __init__(
        self,
        sessions: Sessions,
        provider: PaymentProvider,
        clock: Clock,
        on_result: Applier,
        concurrency: int = 1,
        lease_s: float = 30.0,
    ) -> None:
        self.sessions = sessions
        self.provider = provider
        self.clock = clock
        self.on_result = on_result
        self.concurrency = concurrency
        self.lease_s = lease_s

    async def run_pending(self, limit: int = 200) -> int:
        """Execute the due REQUESTED intents (oldest first); returns how many finished."""
        claimed = await self._claim(limit)
        recorded = await bounded(claimed, lambda c: self.execute(*c), self.concurrency)
        return sum(r is not None for r in recorded)

    async def _claim(self, limit: int) -> list[tuple[MoneyOp, Payment]]:
        """Claim up to ``limit`` due intents; with their payments, read in the same trip."""
        now = self.clock.now()
        async with self.sessions.begin() as session:
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
                select(Payment).where(Payment.id.in_({op.payment_id for op in ops}))
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
            return None
        except ProviderError as exc:
            result = ProviderResult("", False, exc.reason)
        return await self._record(op.id, result)

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
            if op.kind == OpKind.AUTHORIZE.value:  # outcome unknown: the payment is PENDING
                await session.execute(
                    update(Payment)
                    .where(
                        Payment.id == op.payment_id, Payment.state == PaymentState.INITIATED.value
                    )
                    .values(state=PaymentState.PENDING.value, updated_at=now)
                )
        log("money.timeout", op=op.kind, payment_id=op.payment_id, attempt=op.attempts + 1)

    async def _record(self, op_id: str, result: ProviderResult) -> Recorded | None:
        now = self.clock.now()
        async with self.sessions.begin() as session:
            state = OpState.SUCCEEDED if result.approved else OpState.FAILED
            op = await session.scalar(
                update(MoneyOp)
                .where(MoneyOp.id == op_id, MoneyOp.state == OpState.REQUESTED.value)
                .values(
                    state=state.value,
                    provider_ref=result.ref or None,
                    error=result.reason,
                    completed_at=now,
                )
                .returning(MoneyOp)  # the recorded row, read by the same statement
                .execution_options(synchronize_session=False)
            )
            if op is None:
                return None  # another executor recorded it first
            # payment, purchase, and the customer and vehicle a notice names, in one trip;
            # the applier finds them in the session (``session.get`` without SQL) while
            # ``loaded`` holds them (the identity map keeps rows only weakly)
            loaded = (
                await session.execute(
                    select(Payment, Purchase, Customer, Vehicle)
                    .join(Purchase, Purchase.id == Payment.purchase_id)
                    .join(Customer, Customer.id == Purchase.customer_id)
                    .join(Vehicle, Vehicle.id == Purchase.vehicle_id)
                    .where(Payment.id == op.payment_id)
                )
            ).one()
            payment, purchase = loaded.Payment, loaded.Purchase
            await self.on_result(session, op, payment, result)
        log(
            "money.recorded",
            op=op.kind,
            payment_id=op.payment_id,
            state=state.value,
            reason=result.reason,
        )
        return Recorded(op, payment, purchase)
