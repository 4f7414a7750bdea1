"""The outbox relay: delivers activation requests written with their purchase.

A row is marked delivered only after the gateway accepted it (202/200; the gateway is
idempotent on ``activation_id``, so a resend after a crash is harmless). A gateway that
is down or answers 5xx is retried with backoff, forever, until the purchase deadline;
a 4xx other than 401/408/429 is a rejection: the purchase fails without charge.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from backend.adapters.gateway_client import GatewayClient
from backend.domain import machine
from backend.domain.events import Dispatched, DispatchRejected
from backend.domain.retry import backoff_s
from backend.domain.states import PurchaseState
from backend.errors import GatewayError
from backend.logs import log
from backend.store.claims import claim_due
from backend.store.db import Sessions, padded
from backend.store.models import OutboxMessage, Purchase, Vehicle
from backend.store.unit_of_work import Units
from backend.workers.loops import bounded

ACTIVATING = PurchaseState.ACTIVATING


class OutboxRelay:
    """Delivers due rows, ``concurrency`` POSTs at a time. A row is claimed before it is
    sent (``available_at`` pushed ``lease_s`` ahead by a guarded UPDATE), so no two
    relays send it at once; a row whose relay died is due again after the lease."""

    def __init__(
        self,
        units: Units,
        gateway: GatewayClient,
        initial_backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
        concurrency: int = 1,
        lease_s: float = 30.0,
        claims: Sessions | None = None,
    ) -> None:
        self.units = units
        self.sessions = units.sessions
        # the claim (one guarded UPDATE) and the read of its VINs: no transaction needed
        # around them (store/db.py make_statement_sessions)
        self.claims = claims or units.sessions
        self.gateway = gateway
        self.clock = units.clock
        self.initial_backoff_s = initial_backoff_s
        self.max_backoff_s = max_backoff_s
        self.concurrency = concurrency
        self.lease_s = lease_s
        self.delivered = 0

    async def run_once(self, limit: int = 100) -> int:
        """Deliver the due rows; returns how many the gateway accepted."""
        rows, vins = await self._claim(limit)
        if not rows:
            return 0

        async def send(row: OutboxMessage) -> bool:
            return await self._send(row, vins.get(row.payload["vehicle_id"], ""))

        accepted = await bounded(rows, send, self.concurrency)
        sent = [row for row, ok in zip(rows, accepted, strict=True) if ok]
        if sent:  # one transaction marks the whole batch (a resend after a crash is harmless)
            async with self.sessions.begin() as session:
                await _delivered(session, sent, self.clock.now())
        self.delivered += len(sent)
        return len(sent)

    async def _claim(self, limit: int) -> tuple[list[OutboxMessage], dict[str, str]]:
        """Claim up to ``limit`` due rows; with their vehicles' VINs, in the same trip."""
        now = self.clock.now()
        async with self.claims.begin() as session:
            rows = await claim_due(
                session,
                OutboxMessage,
                OutboxMessage.id,
                due=_due(now),
                oldest_first=OutboxMessage.available_at,
                leased={"available_at": now + self.lease_s},
                limit=limit,
            )
            if not rows:
                return [], {}
            vehicles = await session.scalars(
                select(Vehicle).where(Vehicle.id.in_(padded(r.payload["vehicle_id"] for r in rows)))
            )
            return list(rows), {v.id: v.vin for v in vehicles}

    async def _send(self, row: OutboxMessage, vin: str) -> bool:
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
            return False
        log("outbox.delivered", activation_id=row.activation_id, attempts=row.attempts + 1)
        return True

    async def _failed(self, row: OutboxMessage, exc: GatewayError) -> None:
        async with self.units.begin() as work:
            stored = await work.session.get(OutboxMessage, row.id)
            assert stored is not None
            stored.attempts += 1
            stored.last_error = str(exc)[:500]
            if exc.retryable:
                delay = backoff_s(stored.attempts, self.initial_backoff_s, self.max_backoff_s)
                stored.available_at = work.now + delay
                log(
                    "outbox.retry_scheduled",
                    activation_id=row.activation_id,
                    attempt=stored.attempts,
                    delay_s=round(delay, 3),
                    status=exc.status,
                )
                return
            stored.dead = True
            purchase = await work.lock(row.purchase_id)
            assert purchase is not None
            payment = await work.payment_of(purchase.id)
            await work.decide(purchase, payment, DispatchRejected(row.kind, exc.status, exc.detail))
        log("outbox.rejected", activation_id=row.activation_id, status=exc.status)


def _due(now: float) -> tuple[ColumnElement[bool], ...]:
    return (
        OutboxMessage.delivered_at.is_(None),
        OutboxMessage.dead.is_(False),
        OutboxMessage.available_at <= now,
    )


async def _delivered(session: AsyncSession, rows: list[OutboxMessage], now: float) -> None:
    """The gateway has them: mark the rows, move their purchases on (guarded updates)."""
    await session.execute(
        update(OutboxMessage)
        .where(
            OutboxMessage.id.in_(padded(r.id for r in rows)), OutboxMessage.delivered_at.is_(None)
        )
        .values(delivered_at=now, attempts=OutboxMessage.attempts + 1)
        .execution_options(synchronize_session=False)
    )
    activating = [r.purchase_id for r in rows if r.kind == "activation.request"]
    if activating:  # the machine's move for ``Dispatched``, for the whole batch at once
        waiting = [s.value for s in machine.sources(Dispatched, ACTIVATING)]
        await session.execute(
            update(Purchase)
            .where(Purchase.id.in_(padded(activating)), Purchase.state.in_(waiting))
            .values(state=ACTIVATING.value, updated_at=now)
            .execution_options(synchronize_session=False)
        )
    deactivating = [r.purchase_id for r in rows if r.kind == "deactivation.request"]
    if deactivating:
        await session.execute(
            update(Purchase)
            .where(Purchase.id.in_(padded(deactivating)), Purchase.deactivation_state == "QUEUED")
            .values(deactivation_state="SENT")
            .execution_options(synchronize_session=False)
        )
