"""Periodic jobs: the activation deadline watchdog and settlement reconciliation."""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.adapters.gateway_client import GatewayClient
from backend.adapters.payments import PaymentProvider
from backend.domain.events import DeadlinePassed
from backend.domain.states import IN_FLIGHT, PaymentState, PurchaseState
from backend.errors import GatewayError, ProviderError
from backend.logs import log
from backend.metrics import BackendMetrics, SettlementFailed, TicketOpened
from backend.store.db import Sessions
from backend.store.models import Payment, Purchase
from backend.store.records import open_ticket_once
from backend.store.unit_of_work import Units
from protocol.timeutil import Clock


class Watchdog:
    """Ends purchases still in flight past their activation deadline: ask the gateway
    for the truth; if it has none, cancel there and escalate here, without charge."""

    def __init__(self, units: Units, gateway: GatewayClient) -> None:
        self.units = units
        self.sessions = units.sessions
        self.gateway = gateway
        self.clock = units.clock

    async def run_once(self) -> int:
        async with self.sessions() as session:
            overdue = (
                await session.scalars(
                    select(Purchase).where(
                        Purchase.state.in_([s.value for s in IN_FLIGHT]),
                        Purchase.deadline_at < self.clock.now(),
                    )
                )
            ).all()
        for purchase in overdue:
            await self._settle(purchase)
        return len(overdue)

    async def _settle(self, purchase: Purchase) -> None:
        remote = await self._ask_gateway(purchase)
        async with self.units.begin() as work:
            stored = await work.lock(purchase.id)
            assert stored is not None
            payment = await work.payment_of(stored.id)
            await work.decide(stored, payment, DeadlinePassed(remote))
        log("watchdog.deadline", purchase_id=purchase.id, gateway_state=(remote or {}).get("state"))

    async def _ask_gateway(self, purchase: Purchase) -> dict[str, Any] | None:
        """The gateway's view; an activation that is not final is cancelled there."""
        if purchase.state == PurchaseState.PAYMENT_PENDING:
            return None
        try:
            remote = await self.gateway.get_activation(purchase.activation_id)
            if remote is None or remote.get("state") not in ("SUCCEEDED", "FAILED"):
                await self.gateway.cancel_activation(purchase.activation_id)
            return remote
        except GatewayError as exc:
            log("watchdog.gateway_unavailable", purchase_id=purchase.id, error=str(exc))
            return None


class Reconciler:
    """Matches settlements to captures: asks the provider about captures still unsettled
    after the grace period, and opens a ticket for every failed settlement (the feature
    stays on: CaaS activated before settlement and carries that risk)."""

    def __init__(
        self,
        sessions: Sessions,
        provider: PaymentProvider,
        clock: Clock,
        grace_s: float,
        metrics: BackendMetrics | None = None,
    ) -> None:
        self.sessions = sessions
        self.provider = provider
        self.clock = clock
        self.grace_s = grace_s
        self.metrics = metrics or BackendMetrics()

    async def run_once(self) -> Counter[str]:
        report: Counter[str] = Counter()
        cutoff = self.clock.now() - self.grace_s
        async with self.sessions() as session:
            stale = (
                await session.scalars(
                    select(Payment).where(
                        Payment.state == PaymentState.CHARGED.value,
                        Payment.settlement.in_(["NONE", "PENDING"]),
                        Payment.updated_at < cutoff,
                    )
                )
            ).all()
        for payment in stale:
            try:
                status = await self.provider.settlement(payment.authorization_ref or "")
            except ProviderError as exc:
                log("reconcile.provider_error", payment_id=payment.id, error=str(exc))
                report["provider_errors"] += 1
                continue
            async with self.sessions.begin() as session:
                stored = await session.get(Payment, payment.id)
                if stored is not None and status.seq > stored.settlement_seq:
                    stored.settlement, stored.settlement_seq = status.state, status.seq
                    report["queried"] += 1
        async with self.sessions.begin() as session:
            closed = await self._close(session)
        report.update(closed)  # committed: counted
        self.metrics.observe([SettlementFailed()] * closed["settlement_failed"])
        self.metrics.observe([TicketOpened("settlement_failed")] * closed["tickets_opened"])
        return report

    async def _close(self, session: AsyncSession) -> Counter[str]:
        report: Counter[str] = Counter()
        rows = (
            await session.scalars(
                select(Payment).where(
                    Payment.reconciled.is_(False), Payment.settlement.in_(["SETTLED", "FAILED"])
                )
            )
        ).all()
        for payment in rows:
            payment.reconciled = True
            report[f"settlement_{payment.settlement.lower()}"] += 1
            if payment.settlement == "FAILED":
                purchase = await session.get(Purchase, payment.purchase_id)
                assert purchase is not None
                _, opened = await open_ticket_once(
                    session, purchase, "settlement_failed", None, self.clock.now()
                )
                report["tickets_opened"] += opened
        return report
