"""After activation: expiry of temporary services, subscription ends, deactivation
through the gateway (``action: deactivate`` via the outbox), and the scheduler's jobs.

Every function runs inside its caller's transaction and is guarded by the purchase
state, so a job or event that runs twice changes nothing the second time.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.domain.states import PurchaseState
from backend.logs import log
from backend.services import billing
from backend.services.catalog import Catalog
from backend.store.models import Customer, Purchase, ScheduledJob, Vehicle
from backend.store.records import open_ticket, queue_gateway_request, timeline
from backend.workers import notify
from backend.workers.scheduler import JobHandler, schedule
from protocol.timeutil import format_ts

PS = PurchaseState
DAY_S = 86_400.0
ON = frozenset({PS.ACTIVE, PS.MANUALLY_ACTIVATED})  # the feature is on and paid for
CUSTOMER_REASONS = ("customer_withdrawal", "customer_cancel", "customer_theft_cancel")
DEACTIVATION_PENDING = ("QUEUED", "SENT")


@dataclass
class Policy:
    """Process-wide lifecycle settings (set from ``BackendSettings`` at start)."""

    expiry_notice_lead_s: float = 3 * DAY_S
    exclude_after_cancel: set[str] = field(default_factory=set)
    apology_offer: str = "20% off your next purchase with code SORRY20"


POLICY = Policy()


def configure(lead_s: float, exclude: str, offer: str) -> None:
    POLICY.expiry_notice_lead_s = lead_s
    POLICY.exclude_after_cancel = {s.strip() for s in exclude.split(",") if s.strip()}
    POLICY.apology_offer = offer


async def lock(session: AsyncSession, purchase_id: str) -> Purchase | None:
    """The purchase, row-locked on PostgreSQL (SQLite: the transaction holds the lock)."""
    return await session.scalar(
        select(Purchase)
        .where(Purchase.id == purchase_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )


def move(purchase: Purchase, state: PurchaseState, now: float) -> None:
    log("purchase.state", purchase_id=purchase.id, old=purchase.state, new=state.value)
    purchase.state, purchase.updated_at = state.value, now


async def context(session: AsyncSession, purchase: Purchase) -> tuple[Customer, Vehicle]:
    customer = await session.get(Customer, purchase.customer_id)
    vehicle = await session.get(Vehicle, purchase.vehicle_id)
    assert customer is not None
    assert vehicle is not None
    return customer, vehicle


async def tell(
    session: AsyncSession, purchase: Purchase, template: str, now: float, **ctx: object
) -> None:
    customer, vehicle = await context(session, purchase)
    msg = notify.render(template, service=purchase.service_id, vin=vehicle.vin, **ctx)
    await notify.queue(session, customer, msg, now, purchase.id)


# ---------------------------------------------------------------- activation → timers
async def on_activated(
    session: AsyncSession, purchase: Purchase, now: float, manual: bool = False
) -> None:
    """Start the clock: expiry timers for temporary services, billing for subscriptions."""
    if purchase.duration_model == "temporary" and purchase.duration_days:
        expires = now + purchase.duration_days * DAY_S
        purchase.expires_at = expires
        notice_at = expiry_notice_at(now, expires, POLICY.expiry_notice_lead_s)
        if notice_at is not None:
            await schedule(
                session, "pre_expiry_notice", f"notice:{purchase.id}", notice_at, now, purchase.id
            )
        await schedule(session, "expire", f"expire:{purchase.id}", expires, now, purchase.id)
    elif purchase.duration_model == "subscription":
        # manual activation is free as promised: billing starts the following month
        purchase.billable_from = billing.next_month_start(now) if manual else now


def expiry_notice_at(activated_at: float, expires_at: float, lead_s: float) -> float | None:
    """When a temporary service's customer is told it ends: ``lead_s`` before the end,
    or halfway through a service shorter than twice the lead, so that every service
    gets its notice (a 1-day service 12 h before it ends). None: notices are off."""
    if lead_s <= 0:
        return None
    return expires_at - min(lead_s, (expires_at - activated_at) / 2)


# ---------------------------------------------------------------- ending a service
async def request_deactivation(session: AsyncSession, purchase: Purchase, now: float) -> None:
    """Queue ``action: deactivate`` for the gateway (once per purchase)."""
    if purchase.deactivation_id is not None:
        return
    purchase.deactivation_id = str(uuid.uuid4())
    purchase.deactivation_state = "QUEUED"
    queue_gateway_request(
        session, purchase, purchase.deactivation_id, "deactivation.request", "deactivate", now, now
    )
    timeline(session, purchase.customer_id, purchase.id, now, "deactivation.requested")


async def end_service(
    session: AsyncSession, purchase: Purchase, state: PurchaseState, reason: str, now: float
) -> None:
    """The feature goes off now: state, end time, deactivation, notice."""
    end = min(now, purchase.expires_at or now)
    move(purchase, state, now)
    if purchase.ends_at is None or purchase.ends_at > end:
        purchase.ends_at = end
    await request_deactivation(session, purchase, now)
    await tell(session, purchase, "service_deactivated", now, reason=reason, date=format_ts(end))
    timeline(session, purchase.customer_id, purchase.id, now, "service.ended", reason=reason)


# ---------------------------------------------------------------- scheduler jobs
async def _job_purchase(session: AsyncSession, job: ScheduledJob) -> Purchase | None:
    return await lock(session, job.purchase_id) if job.purchase_id else None


async def job_pre_expiry(session: AsyncSession, job: ScheduledJob, now: float) -> None:
    p = await _job_purchase(session, job)
    if p is not None and p.state in ON and p.expires_at is not None and p.expires_at > now:
        await tell(session, p, "expiry_notice", now, date=format_ts(p.expires_at))
        timeline(session, p.customer_id, p.id, now, "service.expiry_notice")


async def job_expire(session: AsyncSession, job: ScheduledJob, now: float) -> None:
    p = await _job_purchase(session, job)
    if p is not None and p.state in ON and p.expires_at is not None and p.expires_at <= now:
        await end_service(session, p, PS.EXPIRED, "expired", now)


async def job_subscription_end(session: AsyncSession, job: ScheduledJob, now: float) -> None:
    p = await _job_purchase(session, job)
    if p is not None and p.state in ON and p.ends_at is not None and p.ends_at <= now:
        await end_service(session, p, PS.CANCELLED, p.cancel_reason or "cancelled", now)


async def job_billing(session: AsyncSession, job: ScheduledJob, now: float) -> None:
    await billing.create_charges(session, job.key.split(":", 1)[1], now)


HANDLERS: dict[str, JobHandler] = {
    "pre_expiry_notice": job_pre_expiry,
    "expire": job_expire,
    "subscription_end": job_subscription_end,
    "billing_month": job_billing,
}


# ---------------------------------------------------------------- deactivation outcome
async def on_deactivation_event(
    session: AsyncSession, type_: str, data: dict[str, Any], now: float
) -> str:
    purchase = await session.scalar(
        select(Purchase).where(Purchase.deactivation_id == str(data.get("activation_id")))
    )
    if purchase is None:
        return "ignored"
    timeline(session, purchase.customer_id, purchase.id, now, f"deactivation.{type_[11:]}")
    if purchase.deactivation_state in ("SUCCEEDED", "FAILED"):
        return "stale"
    if type_ == "activation.succeeded":
        purchase.deactivation_state = "SUCCEEDED"
        if purchase.state == PS.EXPIRED:
            move(purchase, PS.DEACTIVATED, now)
        return "applied"
    if type_ in ("activation.failed", "activation.cancelled"):
        await deactivation_failed(session, purchase, now, data.get("diagnostics"))
    return "applied"


async def deactivation_failed(
    session: AsyncSession, purchase: Purchase, now: float, diagnostics: object
) -> None:
    """The gateway gave up (after its retries): escalate to support with a ticket."""
    purchase.deactivation_state = "FAILED"
    diag = diagnostics if isinstance(diagnostics, dict) else None
    await open_ticket(session, purchase, "deactivation_failed", diag, now)
    log("deactivation.failed", purchase_id=purchase.id)


# ---------------------------------------------------------------- post-cancellation policy
def excluded_after_cancel(catalog: Catalog, service_id: str) -> bool:
    """Whether cancelling ``service_id`` removes it from the customer's catalog for good."""
    service = catalog.service(service_id)
    flagged = service is not None and service.exclude_after_cancel
    return flagged or service_id in POLICY.exclude_after_cancel


async def excluded_services(session: AsyncSession, customer_id: str, catalog: Catalog) -> set[str]:
    """Services this customer cancelled whose policy removes them from their catalog."""
    cancelled = await session.scalars(
        select(Purchase.service_id)
        .distinct()
        .where(
            Purchase.customer_id == customer_id,
            Purchase.cancel_reason.in_(CUSTOMER_REASONS),
        )
    )
    return {sid for sid in cancelled if excluded_after_cancel(catalog, sid)}
