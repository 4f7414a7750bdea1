"""Creating a purchase: ownership, price, maintenance gate, idempotency, the hold.

The purchase, its payment (INITIATED), the idempotency key and the authorization
intent commit together; the provider is called after that commit, and its answer
(with the outbox row when the hold is placed) commits in the next transaction.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import asdict, dataclass

from sqlalchemy import and_, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from backend.adapters.maintenance import MaintenanceClient
from backend.domain.catalog import Catalog, ServiceInfo, ensure_sold_for, excluded_after_cancel
from backend.domain.notices import render
from backend.domain.states import (
    CUSTOMER_REASONS,
    DEACTIVATION_PENDING,
    IN_FLIGHT,
    OpKind,
    PaymentMethod,
    PaymentState,
    PurchaseState,
)
from backend.errors import Conflict, InvalidRequest, NotFound
from backend.logs import log
from backend.services import support
from backend.store.catalog import CatalogCache
from backend.store.catalog import version_column as catalog_version
from backend.store.models import (
    Customer,
    IdempotencyKey,
    MoneyOp,
    Payment,
    Purchase,
    Vehicle,
)
from backend.store.records import queue_notice, timeline
from backend.store.together import insert_together
from backend.store.unit_of_work import Units
from backend.store.wakeups import NOTIFY
from backend.workers.money import MoneyExecutor

MAX_SCHEDULE_AHEAD_S = 366 * 86_400.0
BLOCKING = IN_FLIGHT | {PurchaseState.ACTIVE, PurchaseState.MANUALLY_ACTIVATED}


@dataclass(frozen=True)
class PurchaseRequest:
    vehicle_id: str
    service_id: str
    model: str
    days: int | None
    start_at: float | None

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()


class PurchaseService:
    def __init__(
        self,
        units: Units,
        catalog: CatalogCache,
        maintenance: MaintenanceClient,
        executor: MoneyExecutor,
        deadline_s: float,
    ) -> None:
        self.units = units
        self.catalog = catalog
        self.maintenance = maintenance
        self.executor = executor
        self.clock = units.clock
        self.deadline_s = deadline_s

    async def create(
        self, session: AsyncSession, customer_id: str, req: PurchaseRequest, key: str
    ) -> tuple[Purchase, Payment | None]:
        """The purchase and its payment as the answer shows them (the existing ones for a
        replayed key). ``session`` is the request's: the checks and the writes share its
        transaction, except around the VSS call, which no transaction is held across."""
        replay = await self._replayed(session, customer_id, key, req.digest())
        if replay:
            return await _current(session, replay)
        try:
            vehicle, price, service, method = await self._validate(session, customer_id, req)
        except Conflict:
            # the twin request with this key (another backend, at the same moment) may
            # have committed since the key was looked up: its purchase is the answer,
            # not "already purchased" (the key and the purchase commit together)
            replay = await self._replayed(session, customer_id, key, req.digest())
            if replay:
                return await _current(session, replay)
            raise
        if service.maintenance_linked:
            await session.commit()  # nothing written yet: only ends the transaction
            await self._gate(customer_id, vehicle, req)
        try:
            purchase, op, payment = await self._insert(
                session, customer_id, req, key, price, method
            )
        except IntegrityError:
            await session.rollback()  # a concurrent twin request won the key
            replay = await self._replayed(session, customer_id, key, req.digest())
            if replay:
                return await _current(session, replay)
            raise
        recorded = await self.executor.execute(op, payment)  # the hold, before the answer
        if recorded is not None:  # the rows as that transaction committed them
            return recorded.purchase, recorded.payment
        return await _current(session, purchase.id)  # timed out: what the retry wrote

    async def _replayed(
        self, session: AsyncSession, customer_id: str, key: str, digest: str
    ) -> str | None:
        row = await session.scalar(
            select(IdempotencyKey).where(
                IdempotencyKey.customer_id == customer_id, IdempotencyKey.key == key
            )
        )
        if row is None:
            return None
        if row.request_hash != digest:
            raise Conflict(
                "idempotency_key_reused", "this Idempotency-Key was used with another body"
            )
        return row.purchase_id

    async def _validate(
        self, session: AsyncSession, customer_id: str, req: PurchaseRequest
    ) -> tuple[Vehicle, int, ServiceInfo, PaymentMethod]:
        """The vehicle, the price, the service and how this customer pays (one query,
        which also reads the catalog's version: a rules update made by any process
        applies to this purchase). A vehicle the service's rules do not cover is 409
        ``not_compatible``, before anything is written or any money asked for."""
        found = (
            await session.execute(
                select(Vehicle, Customer.payment_method, catalog_version())
                .join(Customer, Customer.id == Vehicle.customer_id)
                .where(Vehicle.id == req.vehicle_id, Vehicle.customer_id == customer_id)
            )
        ).one_or_none()
        if found is None:
            raise NotFound("vehicle", req.vehicle_id)
        vehicle, method, version = found
        offer = await self.catalog.at(session, version)
        service, price = offer.price_of(req.service_id, req.model, req.days)
        ensure_sold_for(service, vehicle.model, vehicle.firmware)
        now = self.clock.now()
        if req.start_at is not None and not now - 300 <= req.start_at <= now + MAX_SCHEDULE_AHEAD_S:
            raise InvalidRequest("bad_start_at", "start_at must be now or within a year")
        await _gates(session, customer_id, vehicle, req.service_id, offer)
        # a subscription is billed monthly in arrears: at purchase only a card check
        card = req.model == "subscription" or method != PaymentMethod.DIRECT_DEBIT
        return vehicle, price, service, PaymentMethod.CARD if card else PaymentMethod.DIRECT_DEBIT

    async def _gate(self, customer_id: str, vehicle: Vehicle, req: PurchaseRequest) -> None:
        status = await self.maintenance.status(vehicle.vin)
        if not status.overdue:
            return
        async with self.units.begin() as work:
            session, now = work.session, work.now
            await support.warranty_notice(work, vehicle.id, status)
            purchase = self._purchase(customer_id, req, 0, now, PurchaseState.BLOCKED_MAINTENANCE)
            session.add(purchase)
            customer = await session.get(Customer, customer_id)
            assert customer is not None
            msg = render(
                "maintenance_required",
                service=req.service_id,
                vin=vehicle.vin,
                workshop=status.workshop_url,
            )
            await session.flush()
            queue_notice(session, customer, msg, now, purchase.id)
            work.wake(NOTIFY)
            timeline(session, customer_id, purchase.id, now, "purchase.blocked_maintenance")
        log("purchase.blocked_maintenance", purchase_id=purchase.id, service=req.service_id)
        raise Conflict(
            "maintenance_overdue",
            "the vehicle's maintenance is overdue",
            {"purchase_id": purchase.id, "workshop_url": status.workshop_url},
        )

    def _purchase(
        self, customer_id: str, req: PurchaseRequest, price: int, now: float, state: PurchaseState
    ) -> Purchase:
        start = req.start_at if req.start_at is not None and req.start_at > now else now
        return Purchase(
            id=str(uuid.uuid4()),
            customer_id=customer_id,
            vehicle_id=req.vehicle_id,
            service_id=req.service_id,
            duration_model=req.model,
            duration_days=req.days,
            price_cents=price,
            state=state.value,
            activation_id=str(uuid.uuid4()),
            start_at=start,
            deadline_at=start + self.deadline_s,
            created_at=now,
            updated_at=now,
        )

    async def _insert(
        self,
        session: AsyncSession,
        customer_id: str,
        req: PurchaseRequest,
        key: str,
        price: int,
        method: PaymentMethod,
    ) -> tuple[Purchase, MoneyOp, Payment]:
        """Purchase, payment, idempotency key and the first money intent (a hold, or a
        direct debit's charge): one commit."""
        work = self.units.over(session)
        now = work.now
        purchase = self._purchase(customer_id, req, price, now, PurchaseState.PAYMENT_PENDING)
        payment = Payment(
            id=str(uuid.uuid4()),
            purchase_id=purchase.id,
            amount_cents=price,
            currency="EUR",
            method=method.value,
            state=PaymentState.INITIATED.value,
            created_at=now,
            updated_at=now,
        )
        key_row = IdempotencyKey(
            id=str(uuid.uuid4()),
            customer_id=customer_id,
            key=key,
            request_hash=req.digest(),
            purchase_id=purchase.id,
            created_at=now,
        )
        # a fresh payment has no intent yet; born claimed: this request runs it
        kind = OpKind.CHARGE if method is PaymentMethod.DIRECT_DEBIT else OpKind.AUTHORIZE
        target = PaymentState.HELD_FOR_ACTIVATION
        op = work.add_intent(payment, kind, price, target, claim_s=self.executor.lease_s)
        entry = timeline(
            session,
            customer_id,
            purchase.id,
            now,
            "purchase.created",
            service=req.service_id,
            price_cents=price,
        )
        # one round trip on PostgreSQL (store/together.py); each group names the ones before
        await insert_together(session, [purchase], [payment, key_row, entry], [op])
        await session.commit()
        log("purchase.created", purchase_id=purchase.id, service=req.service_id, price_cents=price)
        return purchase, op, payment


async def _current(session: AsyncSession, purchase_id: str) -> tuple[Purchase, Payment | None]:
    """A purchase and its payment as stored now (not as this session last saw them)."""
    row = (
        await session.execute(
            select(Purchase, Payment)
            .outerjoin(Payment, Payment.purchase_id == Purchase.id)
            .where(Purchase.id == purchase_id)
            .execution_options(populate_existing=True)
        )
    ).one()
    return row[0], row[1]


async def _gates(
    session: AsyncSession, customer_id: str, vehicle: Vehicle, service_id: str, offer: Catalog
) -> None:
    """Not already active or pending; issue 5: the post-cancellation policy, and no new
    activation while the last deactivation of this feature on this vehicle is still on
    its way. One query finds every purchase that could refuse it; the checks keep their
    order (so the same conflict is reported as before)."""
    excluded = excluded_after_cancel(offer, service_id)
    on_vehicle = and_(
        Purchase.vehicle_id == vehicle.id,
        or_(
            Purchase.state.in_([s.value for s in BLOCKING]),
            Purchase.deactivation_state.in_(DEACTIVATION_PENDING),
        ),
    )
    cancelled = and_(
        Purchase.customer_id == customer_id,
        Purchase.cancel_reason.in_(CUSTOMER_REASONS),
    )
    rows = (
        await session.execute(
            select(
                Purchase.id,
                Purchase.vehicle_id,
                Purchase.state,
                Purchase.deactivation_state,
                Purchase.customer_id,
                Purchase.cancel_reason,
            ).where(
                Purchase.service_id == service_id,
                or_(on_vehicle, cancelled) if excluded else on_vehicle,
            )
        )
    ).all()
    mine = [r for r in rows if r.vehicle_id == vehicle.id]
    busy = next((r.id for r in mine if r.state in BLOCKING), None)
    if busy:
        raise Conflict(
            "already_purchased", f"{service_id} is active or pending", {"purchase_id": busy}
        )
    if excluded and any(
        r.customer_id == customer_id and r.cancel_reason in CUSTOMER_REASONS for r in rows
    ):
        raise Conflict(
            "excluded_after_cancellation",
            f"{service_id} was cancelled by this customer and may not be bought again",
        )
    switching_off = next((r.id for r in mine if r.deactivation_state in DEACTIVATION_PENDING), None)
    if switching_off:
        raise Conflict(
            "deactivation_in_progress",
            f"{service_id} is being switched off; buy it again once that is done",
            {"purchase_id": switching_off},
        )
