"""Notifications: the handbook's templates, channels chosen by rule, a durable log.

``queue()`` writes one QUEUED row per channel in the caller's transaction (so a
notification is never lost and never sent for a state that rolled back);
``Dispatcher.dispatch_pending()`` sends them afterwards and records the outcome.
Rules: e-mail always; app push when the customer has the app; SMS when critical.

Several dispatchers may run at once (the notify loop and a route that settles inline,
or several backend processes on one PostgreSQL): each claims its rows before sending
them (``claims.claim_due``: ``next_attempt_at`` pushed a lease ahead), so no row is
sent by two of them. A dispatcher killed between a send and its record leaves that
row QUEUED; it is sent again once the lease runs out: at most one duplicate per crash.
"""

from __future__ import annotations

import asyncio
import smtplib
import uuid
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Protocol
from urllib.parse import urlparse

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from backend.logs import log
from backend.store.claims import claim_due
from backend.store.db import Sessions
from backend.store.models import Customer, Notification
from backend.workers import wakeups
from protocol.timeutil import Clock

TEMPLATES: dict[str, tuple[str, str]] = {
    "activation_failed_initial": (
        "We could not activate {service}",
        "We could not activate {service} on your vehicle {vin}. You will NOT be charged: "
        "the amount held on your card is released. Our technical team is on it.",
    ),
    "ticket_created": (
        "Support ticket {ticket} opened",
        "We opened support ticket {ticket} for {service} on {vin}. Quote it in any "
        "contact with us; we will keep you informed.",
    ),
    "manual_resolution_success": (
        "{service} is now active",
        "Our technicians activated {service} on {vin} (ticket {ticket}). As promised, "
        "you will not be charged for it.",
    ),
    "permanent_failure": (
        "{service} cannot be activated",
        "We could not activate {service} on {vin} (ticket {ticket}). Any amount taken "
        "has been refunded in full. As an apology: {offer}.",
    ),
    "activation_success": (
        "{service} is active",
        "{service} is now active on your vehicle {vin}. {price}",
    ),
    "activation_success_not_charged": (
        "{service} is active",
        "{service} is now active on your vehicle {vin}. We could not collect the payment "
        "for it, and you will not be charged for it.",
    ),
    "maintenance_required": (
        "Complete your maintenance to buy {service}",
        "Your vehicle {vin} is overdue for maintenance, so {service} cannot be bought now. "
        "Your active services are untouched. Book a workshop: {workshop}",
    ),
    "expiry_notice": (
        "{service} ends on {date}",
        "{service} on your vehicle {vin} ends on {date}; it will be switched off then. "
        "You can buy it again at any time.",
    ),
    "service_deactivated": (
        "{service} has ended",
        "{service} on your vehicle {vin} has ended ({reason}) and is being switched off. "
        "You are not billed for anything after {date}.",
    ),
    "cancellation_confirmed": (
        "Cancellation of {service}",
        "We received your cancellation of {service} on {vin}: {outcome}",
    ),
    "subscription_payment_failed": (
        "Payment failed: {service} subscription cancelled",
        "We could not charge {amount} EUR for {service} ({month}) on {vin}. The "
        "subscription is cancelled and the service is being switched off.",
    ),
    "theft_report_received": (
        "Theft report for {vin} received",
        "We recorded the theft of {vin}. No refund is made automatically; you may cancel "
        "scheduled services and subscriptions ({cancellable}). Active services follow the "
        "normal withdrawal rules.",
    ),
    "warranty_loss": (
        "Maintenance overdue on {vin}: warranty and services",
        "Your vehicle {vin} is overdue for maintenance. The warranty is lost until it is "
        "done, and services that need current maintenance cannot be bought. Your active "
        "services and the base platform stay on. Book a workshop: {workshop}",
    ),
    "payment_declined": (
        "Payment declined for {service}",
        "Your payment for {service} on {vin} was declined; nothing was charged.",
    ),
}


class Channel(Protocol):
    name: str

    async def send(self, address: str, subject: str, body: str) -> None: ...


class LogChannel:
    """Writes the message to the log (push and SMS in development, e-mail without SMTP)."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def send(self, address: str, subject: str, body: str) -> None:
        log("notify.sent", channel=self.name, subject=subject)


class SmtpChannel:
    """E-mail through any SMTP server (``smtp://host:port``), stdlib smtplib in a thread."""

    name = "email"

    def __init__(self, url: str, sender: str, timeout_s: float = 10.0) -> None:
        parsed = urlparse(url)
        self.host = parsed.hostname or "127.0.0.1"
        self.port = parsed.port or 25
        self.user, self.password = parsed.username, parsed.password
        self.sender = sender
        self.timeout_s = timeout_s

    async def send(self, address: str, subject: str, body: str) -> None:
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = self.sender, address, subject
        msg.set_content(body)
        await asyncio.to_thread(self._send, msg)

    def _send(self, msg: EmailMessage) -> None:
        with smtplib.SMTP(self.host, self.port, timeout=self.timeout_s) as smtp:
            if self.user and self.password:
                smtp.login(self.user, self.password)
            smtp.send_message(msg)


@dataclass(frozen=True)
class Message:
    template: str
    subject: str
    body: str


def render(template: str, **ctx: object) -> Message:
    subject, body = TEMPLATES[template]
    values = {k: str(v) for k, v in ctx.items()}
    return Message(template, subject.format_map(values), body.format_map(values))


def channels_for(customer: Customer, critical: bool) -> list[tuple[str, str]]:
    out = [("email", customer.email)]
    if customer.has_app:
        out.append(("push", f"app:{customer.id}"))
    if critical and customer.phone:
        out.append(("sms", customer.phone))
    return out


async def queue(
    session: AsyncSession,
    customer: Customer,
    msg: Message,
    now: float,
    purchase_id: str | None = None,
    critical: bool = False,
) -> None:
    for channel, address in channels_for(customer, critical):
        session.add(
            Notification(
                id=str(uuid.uuid4()),
                customer_id=customer.id,
                purchase_id=purchase_id,
                template=msg.template,
                channel=channel,
                address=address,
                subject=msg.subject,
                body=msg.body,
                critical=critical,
                status="QUEUED",
                created_at=now,
            )
        )
    wakeups.mark(session, wakeups.NOTIFY)


class Dispatcher:
    """Sends the queued notifications, each claimed first (``lease_s``) and its outcome
    recorded as soon as it is known (guarded by ``status = 'QUEUED'``)."""

    def __init__(
        self,
        sessions: Sessions,
        channels: dict[str, Channel],
        clock: Clock,
        lease_s: float = 30.0,
    ) -> None:
        self.sessions = sessions
        self.channels = channels
        self.clock = clock
        self.lease_s = lease_s

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
                await _record(session, row.id, status, error, self.clock.now())
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
            await channel.send(row.address, row.subject, row.body)
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
) -> None:
    await session.execute(
        update(Notification)
        .where(Notification.id == row_id, Notification.status == "QUEUED")
        .values(status=status, error=error, sent_at=now)
        .execution_options(synchronize_session=False)
    )
