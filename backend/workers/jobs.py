"""The scheduler's jobs: a purchase's timers (pre-expiry notice, expiry, subscription
end) and month-end billing.

A job becomes an event for the purchase machine (``domain/machine.py``), which decides
whether it still applies: a job that runs twice, or for a purchase that moved on,
changes nothing the second time.
"""

from __future__ import annotations

from backend.domain.events import Event, ExpiryDue, PreExpiryDue, SubscriptionEndDue
from backend.store import billing
from backend.store.models import ScheduledJob
from backend.store.unit_of_work import UnitOfWork
from backend.workers.scheduler import JobHandler

PURCHASE_JOBS: dict[str, type[Event]] = {
    "pre_expiry_notice": PreExpiryDue,
    "expire": ExpiryDue,
    "subscription_end": SubscriptionEndDue,
}


async def purchase_job(work: UnitOfWork, job: ScheduledJob) -> None:
    """A purchase's timer is due: the machine decides what it still means."""
    purchase = await work.lock(job.purchase_id) if job.purchase_id else None
    if purchase is not None:
        await work.decide(purchase, None, PURCHASE_JOBS[job.kind]())  # no money moves


async def billing_job(work: UnitOfWork, job: ScheduledJob) -> None:
    await billing.create_charges(work.session, job.key.split(":", 1)[1], work.now)


HANDLERS: dict[str, JobHandler] = {
    **{kind: purchase_job for kind in PURCHASE_JOBS},
    "billing_month": billing_job,
}
