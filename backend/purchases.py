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

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from backend import catalog, lifecycle, money, notify, support
from backend.db import Sessions
from backend.errors import Conflict, InvalidRequest, NotFound
from backend.logs import log
from backend.maintenance import MaintenanceClient
from backend.models import (
    Customer,
    IdempotencyKey,
    MoneyOp,
    Payment,
    Purchase,
    Service,
    Vehicle,
)
from backend.money import MoneyExecutor
from backend.records import timeline
from backend.states import IN_FLIGHT, OpKind, PaymentState, PurchaseState
from protocol.timeutil import Clock

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
        sessions: Sessions,
        maintenance: MaintenanceClient,
        executor: MoneyExecutor,
        clock: Clock,
        deadline_s: float,
    ) -> None:
        self.sessions = sessions
        self.maintenance = maintenance
        self.executor = executor
        self.clock = clock
        self.deadline_s = deadline_s

    async def create(self, customer_id: str, req: PurchaseRequest, key: str) -> str:
        """The purchase id (existing one for a replayed key)."""
        async with self.sessions() as session:
            replay = await self._replayed(session, customer_id, key, req.digest())
            if replay:
                return replay
            vehicle, price, service = await self._validate(session, customer_id, req)
        if service.maintenance_linked:
            await self._gate(customer_id, vehicle, req)
        try:
            purchase_id, op, payment = await self._insert(customer_id, req, key, price)
        except IntegrityError:
            async with self.sessions() as session:  # a concurrent twin request won the key
                replay = await self._replayed(session, customer_id, key, req.digest())
            if replay:
                return replay
            raise
        await self.executor.execute(op, payment)  # the hold, before the answer
        return purchase_id

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
    ) -> tuple[Vehicle, int, Service]:
        vehicle = await session.get(Vehicle, req.vehicle_id)
        if vehicle is None or vehicle.customer_id != customer_id:
            raise NotFound("vehicle", req.vehicle_id)
        price = await catalog.price_of(session, req.service_id, req.model, req.days)
        service = await session.get(Service, req.service_id)
        assert service is not None
        now = self.clock.now()
        if req.start_at is not None and not now - 300 <= req.start_at <= now + MAX_SCHEDULE_AHEAD_S:
            raise InvalidRequest("bad_start_at", "start_at must be now or within a year")
        busy = await session.scalar(
            select(Purchase.id).where(
                Purchase.vehicle_id == vehicle.id,
                Purchase.service_id == req.service_id,
                Purchase.state.in_([s.value for s in BLOCKING]),
            )
        )
        if busy:
            raise Conflict(
                "already_purchased", f"{req.service_id} is active or pending", {"purchase_id": busy}
            )
        await _lifecycle_gates(session, customer_id, vehicle, req.service_id)
        return vehicle, price, service

    async def _gate(self, customer_id: str, vehicle: Vehicle, req: PurchaseRequest) -> None:
        status = await self.maintenance.status(vehicle.vin)
        if not status.overdue:
            return
        now = self.clock.now()
        async with self.sessions.begin() as session:
            stored = await session.get(Vehicle, vehicle.id)
            assert stored is not None
            await support.warranty_notice(session, stored, status, now)
            purchase = self._purchase(customer_id, req, 0, now, PurchaseState.BLOCKED_MAINTENANCE)
            session.add(purchase)
            customer = await session.get(Customer, customer_id)
            assert customer is not None
            msg = notify.render(
                "maintenance_required",
                service=req.service_id,
                vin=vehicle.vin,
                workshop=status.workshop_url,
            )
            await session.flush()
            await notify.queue(session, customer, msg, now, purchase.id)
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
        self, customer_id: str, req: PurchaseRequest, key: str, price: int
    ) -> tuple[str, MoneyOp, Payment]:
        now = self.clock.now()
        async with self.sessions.begin() as session:
            purchase = self._purchase(customer_id, req, price, now, PurchaseState.PAYMENT_PENDING)
            payment = Payment(
                id=str(uuid.uuid4()),
                purchase_id=purchase.id,
                amount_cents=price,
                currency="EUR",
                state=PaymentState.INITIATED.value,
                created_at=now,
                updated_at=now,
            )
            session.add(purchase)
            await session.flush()
            session.add(payment)
            session.add(
                IdempotencyKey(
                    id=str(uuid.uuid4()),
                    customer_id=customer_id,
                    key=key,
                    request_hash=req.digest(),
                    purchase_id=purchase.id,
                    created_at=now,
                )
            )
            await session.flush()
            # a fresh payment has no intent yet; born claimed: this request runs it
            op = await money.add_intent(
                session,
                payment,
                OpKind.AUTHORIZE,
                price,
                PaymentState.HELD_FOR_ACTIVATION,
                now,
                claim_s=self.executor.lease_s,
            )
            timeline(
                session,
                customer_id,
                purchase.id,
                now,
                "purchase.created",
                service=req.service_id,
                price_cents=price,
            )
        log("purchase.created", purchase_id=purchase.id, service=req.service_id, price_cents=price)
        return purchase.id, op, payment


async def _lifecycle_gates(
    session: AsyncSession, customer_id: str, vehicle: Vehicle, service_id: str
) -> None:
    """Issue 5: the post-cancellation policy, and no new activation while the last
    deactivation of this feature on this vehicle is still on its way."""
    if service_id in await lifecycle.excluded_services(session, customer_id):
        raise Conflict(
            "excluded_after_cancellation",
            f"{service_id} was cancelled by this customer and may not be bought again",
        )
    switching_off = await session.scalar(
        select(Purchase.id).where(
            Purchase.vehicle_id == vehicle.id,
            Purchase.service_id == service_id,
            Purchase.deactivation_state.in_(lifecycle.DEACTIVATION_PENDING),
        )
    )
    if switching_off:
        raise Conflict(
            "deactivation_in_progress",
            f"{service_id} is being switched off; buy it again once that is done",
            {"purchase_id": switching_off},
        )
