"""Periodic jobs: the activation deadline watchdog and settlement reconciliation."""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from backend.adapters.gateway_client import GatewayClient
from backend.adapters.payments import PaymentProvider
from backend.domain.states import IN_FLIGHT, PaymentState, PurchaseState
from backend.errors import GatewayError, ProviderError
from backend.logs import log
from backend.services import saga
from backend.store.db import Sessions
from backend.store.models import OutboxMessage, Payment, Purchase
from backend.store.records import open_ticket
from protocol.timeutil import Clock


class Watchdog:
    """Ends purchases still in flight past their activation deadline: ask the gateway
    for the truth; if it has none, cancel there and escalate here, without charge."""

    def __init__(self, sessions: Sessions, gateway: GatewayClient, clock: Clock) -> None:
        self.sessions = sessions
        self.gateway = gateway
        self.clock = clock

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
        now = self.clock.now()
        state = (remote or {}).get("state")
        async with self.sessions.begin() as session:
            stored = await session.get(Purchase, purchase.id)
            assert stored is not None
            await session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.purchase_id == stored.id, OutboxMessage.delivered_at.is_(None))
                .values(dead=True)
            )
            await self._end(session, stored, remote or {}, now)
        log("watchdog.deadline", purchase_id=purchase.id, gateway_state=state)

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

    @staticmethod
    async def _end(
        session: AsyncSession, stored: Purchase, remote: dict[str, Any], now: float
    ) -> None:
        diagnostics = remote.get("diagnostics")
        diagnostics = diagnostics if isinstance(diagnostics, dict) else None
        if remote.get("state") == "SUCCEEDED":
            await saga.activation_succeeded(session, stored, now)
        elif remote.get("state") == "FAILED":
            await saga.activation_failed(
                session, stored, now, remote.get("failure_category"), diagnostics
            )
        elif stored.state == PurchaseState.PAYMENT_PENDING:
            stored.state, stored.updated_at = PurchaseState.PAYMENT_FAILED.value, now
            await saga.release(session, stored, PaymentState.FAILED_NO_CHARGE, now)
        else:
            await saga.activation_failed(
                session, stored, now, "deadline_exceeded", {"gateway": remote or None},
                PurchaseState.ESCALATED, "activation_deadline",
            )  # fmt: skip


class Reconciler:
    """Matches settlements to captures: asks the provider about captures still unsettled
    after the grace period, and opens a ticket for every failed settlement (the feature
    stays on: CaaS activated before settlement and carries that risk)."""

    def __init__(
        self, sessions: Sessions, provider: PaymentProvider, clock: Clock, grace_s: float
    ) -> None:
        self.sessions = sessions
        self.provider = provider
        self.clock = clock
        self.grace_s = grace_s

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
            report.update(await self._close(session))
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
                await open_ticket(session, purchase, "settlement_failed", None, self.clock.now())
        return report
