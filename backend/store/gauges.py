"""The gauges read from the database at scrape time, and the lease that lets exactly
one backend process export them (``backend/metrics.py``).

The lease is the ``metrics`` row of ``leases`` (seeded by migration 0006), taken by one
guarded UPDATE::

    UPDATE leases SET holder = :me, expires_at = :now + :ttl
    WHERE name = 'metrics' AND (expires_at < :now OR holder = :me) RETURNING holder

A row back: this process holds it (taken, or renewed) for ``ttl`` seconds more.
Two processes at once: on PostgreSQL the second UPDATE waits for the first's row lock,
then finds the condition false against the committed row; SQLite has one writer at a
time. With the lease longer than the scrape interval, the holder renews it at every
scrape and keeps it; a holder that dies stops renewing and another process takes over
once it expires; one that shuts down releases it at once (``release_lease``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import case, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from backend.metrics import StoreSnapshot
from backend.store.models import Lease, Notification, OutboxMessage, Payment, Purchase, Ticket

METRICS_LEASE = "metrics"


async def hold_lease(
    session: AsyncSession, holder: str, now: float, ttl_s: float, name: str = METRICS_LEASE
) -> bool:
    """Take or renew the lease ``name`` for ``holder``; whether ``holder`` has it now."""
    got = await session.scalar(
        update(Lease)
        .where(Lease.name == name, (Lease.expires_at < now) | (Lease.holder == holder))
        .values(holder=holder, expires_at=now + ttl_s)
        .returning(Lease.holder)
        .execution_options(synchronize_session=False)
    )
    return got is not None


async def release_lease(session: AsyncSession, holder: str, name: str = METRICS_LEASE) -> None:
    """Give the lease up (if held): another process may take it at its next scrape."""
    await session.execute(
        update(Lease)
        .where(Lease.name == name, Lease.holder == holder)
        .values(holder=None, expires_at=0.0)
        .execution_options(synchronize_session=False)
    )


async def counts_by(session: AsyncSession, *columns: Any) -> list[tuple[Any, ...]]:
    """``(*values, count)`` per distinct value of ``columns`` (one GROUP BY), also what
    the ops summary shows by state."""
    found = await session.execute(select(*columns, func.count()).group_by(*columns))
    return [tuple(row) for row in found]


async def read_snapshot(session: AsyncSession, now: float) -> StoreSnapshot:
    """Purchases, payments and tickets by state, the outbox and the notification queue."""
    purchases = await counts_by(session, Purchase.state)
    payments = await counts_by(session, Payment.state, Payment.method)
    tickets = await counts_by(session, Ticket.status)
    # since when the oldest undelivered request has been due: its creation, or a
    # scheduled purchase's start (``available_at`` moves on with every claim and retry)
    due_since = case(
        (
            (OutboxMessage.kind == "activation.request")
            & (Purchase.start_at > OutboxMessage.created_at),
            Purchase.start_at,
        ),
        else_=OutboxMessage.created_at,
    )
    pending, oldest = (
        await session.execute(
            select(func.count(), func.min(case((due_since <= now, due_since))))
            .select_from(OutboxMessage)
            .join(Purchase, Purchase.id == OutboxMessage.purchase_id)
            .where(OutboxMessage.delivered_at.is_(None), OutboxMessage.dead.is_(False))
        )
    ).one()
    queued = await session.scalar(
        select(func.count()).select_from(Notification).where(Notification.status == "QUEUED")
    )
    return StoreSnapshot(
        purchases={state: n for state, n in purchases},
        payments={(state, method): n for state, method, n in payments},
        tickets={status: n for status, n in tickets},
        outbox_pending=pending or 0,
        outbox_oldest_age_s=max(0.0, now - oldest) if oldest is not None else 0.0,
        notifications_queued=queued or 0,
    )
