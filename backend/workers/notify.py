"""The notification dispatcher: sends the rows ``store.records.queue_notice`` wrote in
the business transaction (so a notice is never lost and never sent for a state that
rolled back), and records each outcome in the communication log.

Several dispatchers may run at once (the notify loop and a route that settles inline,
or several backend processes on one PostgreSQL): each claims its rows before sending
them (``claims.claim_due``: ``next_attempt_at`` pushed a lease ahead), so no row is
sent by two of them. A dispatcher killed between a send and its record leaves that
row QUEUED; it is sent again once the lease runs out: at most one duplicate per crash.
"""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from backend.adapters.channels import Channel
from backend.logs import log
from backend.metrics import BackendMetrics
from backend.store.claims import claim_due
from backend.store.db import Sessions
from backend.store.models import Notification
from protocol.timeutil import Clock


class Dispatcher:
    """Sends the queued notifications, each claimed first (``lease_s``) and its outcome
    recorded as soon as it is known (guarded by ``status = 'QUEUED'``)."""

    def __init__(
        self,
        sessions: Sessions,
        channels: dict[str, Channel],
        clock: Clock,
        lease_s: float = 30.0,
        metrics: BackendMetrics | None = None,
    ) -> None:
        self.sessions = sessions
        self.channels = channels
        self.clock = clock
        self.lease_s = lease_s
        self.metrics = metrics or BackendMetrics()

    async def dispatch_pending(self, limit: int = 200) -> int:
        """Claim up to ``limit`` due rows (oldest first) and send them one by one;
        returns how many were sent or failed. Rows left unsent when the send window
        closes stay claimed until the lease ends, then any dispatcher takes them."""
        claimed_at = self.clock.now()
        rows = await self._claim(claimed_at, limit)
        done = 0
        for row in rows:
            if not may_send(self.clock.now(), claimed_at, self.lease_s):
                break
            error = await self._send(row)
            async with self.sessions.begin() as session:
                status = "FAILED" if error else "SENT"
                recorded = await _record(session, row.id, status, error, self.clock.now())
            if recorded:  # committed by this dispatcher: counted once (never retried)
                self.metrics.notification(row.channel, "failed" if error else "sent")
            done += 1
        return done

    async def _claim(self, now: float, limit: int) -> list[Notification]:
        async with self.sessions.begin() as session:
            rows = await claim_due(
                session,
                Notification,
                Notification.id,
                due=(Notification.status == "QUEUED", Notification.next_attempt_at <= now),
                oldest_first=Notification.created_at,
                leased={"next_attempt_at": now + self.lease_s},
                limit=limit,
            )
        # UPDATE … RETURNING keeps no order: oldest first again
        return sorted(rows, key=lambda row: row.created_at)

    async def _send(self, row: Notification) -> str | None:
        """Send one; the error text when it failed (recorded, never raised)."""
        channel = self.channels.get(row.channel)
        try:
            if channel is None:
                raise LookupError(f"no {row.channel} channel configured")
            await channel.send(row.address, row.subject, row.body, row.id)
        except Exception as exc:  # any channel failure is recorded, never raised
            error = f"{type(exc).__name__}: {exc}"[:500]
            log("notify.failed", channel=row.channel, notification_id=row.id, error=error)
            return error
        return None


def may_send(now: float, claimed_at: float, lease_s: float) -> bool:
    """Whether a claimed row may still be sent: only in the first half of its lease, so
    that a send started then (a channel's own timeout bounds it) is recorded before the
    lease runs out and another dispatcher may claim the row."""
    return now < claimed_at + lease_s / 2


async def _record(
    session: AsyncSession, row_id: str, status: str, error: str | None, now: float
) -> bool:
    """Whether this call recorded the outcome (False: the row was no longer QUEUED)."""
    recorded = await session.scalar(
        update(Notification)
        .where(Notification.id == row_id, Notification.status == "QUEUED")
        .values(status=status, error=error, sent_at=now)
        .returning(Notification.id)
        .execution_options(synchronize_session=False)
    )
    return recorded is not None
