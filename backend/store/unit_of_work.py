"""The unit of work: one transaction, the rows a batch loaded up front, and the loops
its commit gives work to.

    async with units.begin() as work:                  # BEGIN
        purchase, payment = await work.purchase_by_activation(activation_id)
        await work.decide(purchase, payment, ActivationSucceeded())
    # COMMIT; then the money, relay and notify loops the decision fed are woken

``decide`` asks the purchase machine (``backend/domain/machine.py``) and writes its
step: the purchase's state and columns (the only place a purchase changes state), the
payment's, money intents, outbox rows for the gateway, a ticket, notices, timers and
timeline entries. Nothing travels through ``Session.info``: the preloaded rows, the
loops to wake and what the metrics should count (``observed``) are attributes of the
unit of work; ``Units.begin`` wakes and counts after the commit returned (a rollback
wakes nobody and counts nothing).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from backend.domain import machine
from backend.domain.events import Event, PaymentView, Policy, PurchaseView, Step
from backend.domain.notices import render
from backend.domain.states import (
    ActivationOutcome,
    OpKind,
    OpState,
    PaymentMethod,
    PaymentState,
    PurchaseState,
)
from backend.logs import log
from backend.metrics import (
    ActivationFinished,
    BackendMetrics,
    Observation,
    TicketOpened,
    TicketResolved,
)
from backend.store.db import Sessions, padded
from backend.store.models import (
    Customer,
    MoneyOp,
    OutboxMessage,
    Payment,
    Purchase,
    Ticket,
    Vehicle,
)
from backend.store.records import (
    open_ticket_once,
    queue_gateway_request,
    queue_notice,
    resolve,
    schedule,
    timeline,
)
from backend.store.wakeups import MONEY, NOTIFY, RELAY, Wakeups
from protocol.timeutil import Clock


@dataclass
class Loaded:
    """Rows a batch loaded up front, for the lookups the identity map cannot answer
    (by activation id, a purchase's payment, a payment's intent of a kind)."""

    purchases: dict[str, Purchase] = field(default_factory=dict)  # by activation id
    payments: dict[str, Payment] = field(default_factory=dict)  # by purchase id
    # by payment id: every intent of that payment, by kind (absent kind: none exists)
    intents: dict[str, dict[str, MoneyOp]] = field(default_factory=dict)
    # the identity map holds rows weakly: kept here, ``session.get`` finds them
    others: list[Customer | Vehicle] = field(default_factory=list)


class UnitOfWork:
    def __init__(self, session: AsyncSession, now: float, policy: Policy) -> None:
        self.session = session
        self.now = now
        self.policy = policy
        self.loaded = Loaded()
        self.woken: set[str] = set()
        self.observed: list[Observation] = []

    def wake(self, job: str) -> None:
        """Wake ``job``'s loop once this transaction has committed."""
        self.woken.add(job)

    def observe(self, observation: Observation) -> None:
        """Count ``observation`` in the metrics once this transaction has committed."""
        self.observed.append(observation)

    def resolved(self, ticket: Ticket) -> None:
        """``ticket`` was resolved in this transaction (``records.resolve``)."""
        resolution = str(ticket.details.get("resolution"))
        self.observe(TicketResolved(resolution, self.now - ticket.created_at))

    # ------------------------------------------------------------ lookups
    async def load(self, activation_ids: set[str]) -> None:
        """The purchases of these activation ids with their payment, customer and
        vehicle, and every intent of those payments: two queries for a whole batch."""
        if not activation_ids:
            return
        rows = await self.session.execute(
            select(Purchase, Payment, Customer, Vehicle)
            .outerjoin(Payment, Payment.purchase_id == Purchase.id)
            .join(Customer, Customer.id == Purchase.customer_id)
            .join(Vehicle, Vehicle.id == Purchase.vehicle_id)
            .where(Purchase.activation_id.in_(padded(activation_ids)))
        )
        found = self.loaded
        for purchase, payment, customer, vehicle in rows:
            found.purchases[purchase.activation_id] = purchase
            found.others += (customer, vehicle)
            if payment is not None:
                found.payments[purchase.id] = payment
                found.intents[payment.id] = {}
        if found.intents:
            ops = await self.session.scalars(
                select(MoneyOp).where(MoneyOp.payment_id.in_(padded(found.intents)))
            )
            for op in ops:
                found.intents[op.payment_id][op.kind] = op

    async def purchase_by_activation(self, activation_id: str) -> Purchase | None:
        if activation_id in self.loaded.purchases:
            return self.loaded.purchases[activation_id]
        return await self.session.scalar(
            select(Purchase).where(Purchase.activation_id == activation_id)
        )

    async def payment_of(self, purchase_id: str) -> Payment | None:
        if purchase_id in self.loaded.payments:
            return self.loaded.payments[purchase_id]
        return await self.session.scalar(select(Payment).where(Payment.purchase_id == purchase_id))

    async def intent_of(self, payment_id: str, kind: OpKind) -> MoneyOp | None:
        if payment_id in self.loaded.intents:
            return self.loaded.intents[payment_id].get(kind.value)
        return await self.session.scalar(
            select(MoneyOp).where(MoneyOp.payment_id == payment_id, MoneyOp.kind == kind.value)
        )

    async def lock(self, purchase_id: str) -> Purchase | None:
        """The purchase, row-locked on PostgreSQL (SQLite: the transaction holds the lock)."""
        return await self.session.scalar(
            select(Purchase)
            .where(Purchase.id == purchase_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )

    # ------------------------------------------------------------ decisions
    async def decide(self, purchase: Purchase, payment: Payment | None, event: Event) -> Step:
        """Ask the machine about ``event`` and write what it decided."""
        view = view_of(purchase, payment)
        decided = machine.step(view, event, self.now, self.policy)
        await self.apply(purchase, payment, decided)
        if "activation_outcome" in decided.purchase:
            self.observe(await self._activation_finished(purchase, payment, view))
        return decided

    async def _activation_finished(
        self, purchase: Purchase, payment: Payment | None, view: PurchaseView
    ) -> ActivationFinished:
        """What the metrics count of an outcome. The vehicle (and a success's payment
        intent) a batch loaded up front are found without SQL."""
        vehicle = await self.session.get(Vehicle, purchase.vehicle_id)
        assert vehicle is not None
        succeeded = purchase.activation_outcome == ActivationOutcome.SUCCEEDED
        waited = None
        if succeeded and payment is not None:
            paid_at = await self._paid_at(payment)
            if paid_at is not None:  # from the payment, or a scheduled purchase's start
                waited = self.now - max(paid_at, purchase.start_at)
        taken = view.payment is not None and view.payment.captured_cents > 0
        return ActivationFinished(
            outcome=str(purchase.activation_outcome),
            reason=None if succeeded else purchase.failure_category,
            model=vehicle.model,
            service=purchase.service_id,
            attempts=purchase.activation_attempts,
            at=self.now,
            waited_s=waited,
            money_taken=taken and not succeeded,
        )

    async def _paid_at(self, payment: Payment) -> float | None:
        """When the hold was placed (or a direct debit's charge taken)."""
        direct = payment.method == PaymentMethod.DIRECT_DEBIT
        op = await self.intent_of(payment.id, OpKind.CHARGE if direct else OpKind.AUTHORIZE)
        return op.completed_at if op is not None and op.state == OpState.SUCCEEDED else None

    async def apply(self, purchase: Purchase, payment: Payment | None, decided: Step) -> None:
        now = self.now
        if decided.state is not None:
            log("purchase.state", purchase_id=purchase.id, old=purchase.state, new=decided.state)
            purchase.state, purchase.updated_at = decided.state.value, now
        for column, value in decided.purchase.items():
            setattr(purchase, column, value)
        if decided.payment:
            assert payment is not None
            for column, value in decided.payment.items():
                setattr(payment, column, value)
            payment.updated_at = now
        for intent in decided.money:
            assert payment is not None
            await self.request_money(payment, intent.kind, intent.amount_cents, intent.target)
        for request in decided.gateway:
            self._ask_gateway(purchase, request.kind, request.action, request.available_at)
        number = await self._tickets(purchase, decided)
        if decided.notices:
            await self._tell(purchase, decided, number)
        for timer in decided.timers:
            await schedule(self.session, timer.kind, timer.key, timer.due_at, now, purchase.id)
        for entry in decided.timeline:
            timeline(
                self.session, purchase.customer_id, purchase.id, now, entry.kind, **entry.detail
            )
        if decided.drop_undelivered:
            await self.session.execute(
                update(OutboxMessage)
                .where(
                    OutboxMessage.purchase_id == purchase.id, OutboxMessage.delivered_at.is_(None)
                )
                .values(dead=True)
            )

    async def request_money(
        self, payment: Payment, kind: OpKind, amount_cents: int, target: PaymentState | None
    ) -> MoneyOp:
        """The intent for ``kind`` on this payment (at most one per kind: unique in SQL)."""
        existing = await self.intent_of(payment.id, kind)
        if existing is not None:
            return existing
        return self.add_intent(payment, kind, amount_cents, target)

    def add_intent(
        self,
        payment: Payment,
        kind: OpKind,
        amount_cents: int,
        target: PaymentState | None,
        claim_s: float = 0.0,
    ) -> MoneyOp:
        """A new intent on a payment known to have none of this kind. ``claim_s`` > 0:
        the caller runs it itself right after the commit, so it is born claimed (due only
        after ``claim_s``, when the executor takes it over if the caller died);
        otherwise the money loop is woken by the commit."""
        op = MoneyOp(
            id=str(uuid.uuid4()),
            payment_id=payment.id,
            kind=kind.value,
            idempotency_key=f"{kind.value}:{payment.id}",
            amount_cents=amount_cents,
            target_state=target.value if target else None,
            state=OpState.REQUESTED.value,
            attempts=0,
            next_attempt_at=self.now + claim_s,
            created_at=self.now,
        )
        self.session.add(op)  # flushed with the rest of the transaction
        if payment.id in self.loaded.intents:
            self.loaded.intents[payment.id][kind.value] = op
        if claim_s <= 0:
            self.wake(MONEY)
        log("money.requested", op=kind.value, payment_id=payment.id, amount_cents=amount_cents)
        return op

    def _ask_gateway(self, purchase: Purchase, kind: str, action: str, at: float) -> None:
        """An outbox row; a deactivation or a manual activation gets an id of its own."""
        if kind == "deactivation.request":
            purchase.deactivation_id = activation_id = str(uuid.uuid4())
        elif kind == "manual_activation.request":
            purchase.support_activation_id = activation_id = str(uuid.uuid4())
        else:
            activation_id = purchase.activation_id
        queue_gateway_request(self.session, purchase, activation_id, kind, action, at, self.now)
        self.wake(RELAY)

    async def _tickets(self, purchase: Purchase, decided: Step) -> str | None:
        """Open the step's ticket or resolve the purchase's open ones; the number the
        step's notices quote."""
        number = None
        if decided.ticket is not None:
            t = decided.ticket
            opened, new = await open_ticket_once(
                self.session, purchase, t.kind, dict(t.diagnostics or {}) or None, self.now,
                **t.extra,
            )  # fmt: skip
            number = opened.number
            if new:
                self.observe(TicketOpened(t.kind))
        if decided.resolve_tickets is not None:
            tickets = await self.session.scalars(
                select(Ticket).where(Ticket.purchase_id == purchase.id, Ticket.status == "OPEN")
            )
            for ticket in tickets.all():
                resolve(ticket, decided.resolve_tickets, self.now)
                self.resolved(ticket)
                number = ticket.number
        return number

    async def _tell(self, purchase: Purchase, decided: Step, ticket: str | None) -> None:
        customer = await self.session.get(Customer, purchase.customer_id)
        vehicle = await self.session.get(Vehicle, purchase.vehicle_id)
        assert customer is not None
        assert vehicle is not None
        for notice in decided.notices:
            ctx = {"service": purchase.service_id, "vin": vehicle.vin, **notice.ctx}
            if notice.with_ticket:
                ctx["ticket"] = ticket or ""
            message = render(notice.template, **ctx)
            queue_notice(self.session, customer, message, self.now, purchase.id, notice.critical)
        self.wake(NOTIFY)


def view_of(purchase: Purchase, payment: Payment | None) -> PurchaseView:
    """What the machine sees of a purchase and its payment."""
    return PurchaseView(
        id=purchase.id,
        state=PurchaseState(purchase.state),
        service_id=purchase.service_id,
        duration_model=purchase.duration_model,
        duration_days=purchase.duration_days,
        price_cents=purchase.price_cents,
        activation_id=purchase.activation_id,
        start_at=purchase.start_at,
        activated_at=purchase.activated_at,
        expires_at=purchase.expires_at,
        ends_at=purchase.ends_at,
        cancel_reason=purchase.cancel_reason,
        deactivation_id=purchase.deactivation_id,
        deactivation_state=purchase.deactivation_state,
        support_activation_id=purchase.support_activation_id,
        activation_outcome=purchase.activation_outcome,
        payment=None if payment is None else payment_view_of(payment),
    )


def payment_view_of(payment: Payment) -> PaymentView:
    return PaymentView(
        state=PaymentState(payment.state),
        method=payment.method,
        amount_cents=payment.amount_cents,
        captured_cents=payment.captured_cents,
        refunded_cents=payment.refunded_cents,
        authorization_ref=payment.authorization_ref,
        settlement=payment.settlement,
    )


class Units:
    """Opens units of work; wakes the loops a committed one fed and counts what it did."""

    def __init__(
        self,
        sessions: Sessions,
        wakeups: Wakeups,
        clock: Clock,
        policy: Policy,
        metrics: BackendMetrics | None = None,
    ) -> None:
        self.sessions = sessions
        self.wakeups = wakeups
        self.clock = clock
        self.policy = policy
        self.metrics = metrics or BackendMetrics()

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[UnitOfWork]:
        async with self.sessions.begin() as session:
            work = UnitOfWork(session, self.clock.now(), self.policy)
            yield work
        for job in work.woken:  # committed: the work exists now
            self.wakeups.wake(job)
        self.metrics.observe(work.observed)

    def over(self, session: AsyncSession) -> UnitOfWork:
        """A unit of work inside a transaction its caller opened and commits (the API's
        request session); the caller wakes ``woken`` after its commit."""
        return UnitOfWork(session, self.clock.now(), self.policy)
