"""The outbox relay: delivers activation requests written with their purchase.

A row is marked delivered only after the gateway accepted it (202/200; the gateway is
idempotent on ``activation_id``, so a resend after a crash is harmless). A gateway that
is down or answers 5xx is retried with backoff, forever, until the purchase deadline;
a 4xx other than 401/408/429 is a rejection: the purchase fails without charge.
"""

from __future__ import annotations

from sqlalchemy import select

from backend import lifecycle, saga
from backend.db import Sessions
from backend.errors import GatewayError
from backend.gateway_client import GatewayClient
from backend.logs import log
from backend.models import OutboxMessage, Purchase, Vehicle
from backend.records import timeline
from backend.retry import backoff_s
from backend.states import PurchaseState
from protocol.timeutil import Clock


class OutboxRelay:
    def __init__(
        self,
        sessions: Sessions,
        gateway: GatewayClient,
        clock: Clock,
        initial_backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
    ) -> None:
        self.sessions = sessions
        self.gateway = gateway
        self.clock = clock
        self.initial_backoff_s = initial_backoff_s
        self.max_backoff_s = max_backoff_s
        self.delivered = 0

    async def run_once(self, limit: int = 100) -> int:
        """Deliver the due rows; returns how many the gateway accepted."""
        async with self.sessions() as session:
            rows = (
                await session.scalars(
                    select(OutboxMessage)
                    .where(
                        OutboxMessage.delivered_at.is_(None),
                        OutboxMessage.dead.is_(False),
                        OutboxMessage.available_at <= self.clock.now(),
                    )
                    .order_by(OutboxMessage.available_at)
                    .limit(limit)
                )
            ).all()
            vins = {
                v.id: v.vin
                for v in await session.scalars(
                    select(Vehicle).where(Vehicle.id.in_({r.payload["vehicle_id"] for r in rows}))
                )
            }
        accepted = 0
        for row in rows:
            accepted += await self._deliver(row, vins.get(row.payload["vehicle_id"], ""))
        return accepted

    async def _deliver(self, row: OutboxMessage, vin: str) -> int:
        body = {
            "activation_id": row.activation_id,
            "vin": vin,
            "feature": row.payload["feature"],
            "action": row.payload["action"],
        }
        try:
            await self.gateway.request_activation(body)
        except GatewayError as exc:
            await self._failed(row, exc)
            return 0
        now = self.clock.now()
        async with self.sessions.begin() as session:
            stored = await session.get(OutboxMessage, row.id)
            purchase = await session.get(Purchase, row.purchase_id)
            assert stored is not None
            assert purchase is not None
            stored.delivered_at, stored.attempts = now, stored.attempts + 1
            if row.kind == "deactivation.request" and purchase.deactivation_state == "QUEUED":
                purchase.deactivation_state = "SENT"
            elif row.kind != "activation.request":
                pass
            elif purchase.state in (PurchaseState.ACTIVATION_QUEUED, PurchaseState.SCHEDULED):
                purchase.state, purchase.updated_at = PurchaseState.ACTIVATING.value, now
        self.delivered += 1
        log("outbox.delivered", activation_id=row.activation_id, attempts=row.attempts + 1)
        return 1

    async def _failed(self, row: OutboxMessage, exc: GatewayError) -> None:
        now = self.clock.now()
        async with self.sessions.begin() as session:
            stored = await session.get(OutboxMessage, row.id)
            assert stored is not None
            stored.attempts += 1
            stored.last_error = str(exc)[:500]
            if exc.retryable:
                delay = backoff_s(stored.attempts, self.initial_backoff_s, self.max_backoff_s)
                stored.available_at = now + delay
                log(
                    "outbox.retry_scheduled",
                    activation_id=row.activation_id,
                    attempt=stored.attempts,
                    delay_s=round(delay, 3),
                    status=exc.status,
                )
                return
            stored.dead = True
            purchase = await session.get(Purchase, row.purchase_id)
            assert purchase is not None
            if row.kind == "deactivation.request":
                await lifecycle.deactivation_failed(
                    session, purchase, now, {"gateway_status": exc.status}
                )
            elif row.kind != "activation.request":
                timeline(
                    session, purchase.customer_id, purchase.id, now, "support.dispatch_rejected"
                )
            else:
                await saga.activation_failed(
                    session,
                    purchase,
                    now,
                    "dispatch_rejected",
                    {"gateway_status": exc.status, "error": exc.detail},
                    ticket_kind="dispatch_rejected",
                )
        log("outbox.rejected", activation_id=row.activation_id, status=exc.status)
