"""The inbox: one row per consumed event id, written in the transaction that applies
the event. A duplicate finds the row and does nothing."""

from __future__ import annotations

import json
import re
from typing import Any

from sqlalchemy import ColumnElement, Exists, exists, select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.domain.events import (
    ActivationCancelled,
    ActivationFailed,
    ActivationSucceeded,
    DeactivationAnswered,
    Event,
    ManualActivationSucceeded,
    Progress,
)
from backend.domain.machine import attempts_of
from backend.store.db import padded
from backend.store.models import InboxEvent, Payment, Purchase
from backend.store.records import open_ticket, timeline
from backend.store.unit_of_work import UnitOfWork

ACTIVATION_TYPES = {
    "activation.accepted",
    "activation.attempt_failed",
    "activation.succeeded",
    "activation.failed",
    "activation.cancelled",
}


async def seen(session: AsyncSession, event_id: str) -> bool:
    return await session.get(InboxEvent, event_id) is not None


async def seen_among(session: AsyncSession, event_ids: list[str]) -> set[str]:
    """Which of these event ids were consumed already (one query for a batch)."""
    found = await session.scalars(
        select(InboxEvent.event_id).where(InboxEvent.event_id.in_(padded(event_ids)))
    )
    return set(found.all())


def remember(
    session: AsyncSession, event_id: str, source: str, type_: str, outcome: str, now: float
) -> None:
    session.add(
        InboxEvent(
            event_id=event_id[:128],
            source=source,
            type=type_[:64],
            outcome=outcome,
            received_at=now,
        )
    )


def activation_state_after(type_: str, data: dict[str, Any]) -> str:
    """The gateway Activation state (docs/spec.md §3) an event tells us about."""
    if type_ == "activation.attempt_failed":
        # FAILED_RETRY: a retry is scheduled; FAILED_ESCALATE: the final queries run
        return "RETRY_SCHEDULED" if data.get("result") == "FAILED_RETRY" else "IN_PROGRESS"
    return {
        "activation.accepted": "QUEUED",
        "activation.succeeded": "SUCCEEDED",
        "activation.failed": "FAILED",
        "activation.cancelled": "CANCELLED",
    }.get(type_, "IN_PROGRESS")


def purchase_activation_id(type_: str, data: dict[str, Any]) -> str | None:
    """The activation id ``apply_gateway_event`` looks a purchase up by (None: it looks
    up none), so that a batch can load those purchases up front."""
    if type_ not in ACTIVATION_TYPES or data.get("action", "activate") == "deactivate":
        return None
    return str(data.get("activation_id"))


async def apply_gateway_event(work: UnitOfWork, type_: str, data: dict[str, Any]) -> str:
    """Apply one ``caas:events`` entry: applied | stale | ignored. The activation id
    names a purchase's activation, its deactivation, or support's manual activation."""
    if type_ not in ACTIVATION_TYPES:
        return "ignored"
    activation_id = str(data.get("activation_id"))
    if data.get("action", "activate") == "deactivate":
        purchase = await _purchase_where(work, Purchase.deactivation_id == activation_id)
        event = deactivation_event(type_, data)
    elif (purchase := await work.purchase_by_activation(activation_id)) is not None:
        purchase.activation_state = activation_state_after(type_, data)
        payment = await work.payment_of(purchase.id)
        return (await work.decide(purchase, payment, activation_event(type_, data))).outcome
    else:
        purchase = await _purchase_where(work, Purchase.support_activation_id == activation_id)
        event = support_event(type_)
    if purchase is None:
        return "ignored"
    # neither a deactivation nor a manual activation moves money: no payment needed
    return (await work.decide(purchase, None, event)).outcome


async def _purchase_where(work: UnitOfWork, condition: ColumnElement[bool]) -> Purchase | None:
    return await work.session.scalar(select(Purchase).where(condition))


def activation_event(type_: str, data: dict[str, Any]) -> Event:
    """What the gateway's event about a purchase's activation means to the purchase."""
    match type_:
        case "activation.succeeded":
            return ActivationSucceeded(attempts_of(data))
        case "activation.failed":
            return ActivationFailed(
                data.get("failure_category"), _diagnostics(data), attempts_of(data)
            )
        case "activation.cancelled":
            return ActivationCancelled()
        case _:
            return Progress(type_, {"attempts": data.get("attempts")})


def deactivation_event(type_: str, data: dict[str, Any]) -> Event:
    outcome = type_.removeprefix("activation.")
    if outcome in ("succeeded", "failed", "cancelled"):
        return DeactivationAnswered(outcome, _diagnostics(data))
    return Progress(f"deactivation.{outcome}")


def support_event(type_: str) -> Event:
    if type_ == "activation.succeeded":
        return ManualActivationSucceeded()
    return Progress(f"support.{type_}")


def _diagnostics(data: dict[str, Any]) -> dict[str, Any] | None:
    diagnostics = data.get("diagnostics")
    return diagnostics if isinstance(diagnostics, dict) else None


MAX_SEQ = 2**53 - 1  # an integer every JSON parser reads exactly; the column is 64-bit
# printable ASCII: no NUL, no lone surrogate, nothing SQL could refuse to store
_TOKEN = re.compile(r"[\x21-\x7e]+")
# field: (longest, required); an optional field may be absent or null
_TOKEN_FIELDS = {"event_id": (128, True), "type": (64, True), "reference": (64, False)}


def provider_event_problem(body: dict[str, Any]) -> str | None:
    """Why a provider webhook body cannot be applied (None: it can): ``event_id`` and
    ``type`` and, when present, ``reference`` are short printable ASCII strings, ``seq``
    an integer in 1..2^53-1. Checked before any SQL, so a value the database cannot
    hold is a 400, never a failed statement."""
    for name, (longest, required) in _TOKEN_FIELDS.items():
        value = body.get(name)
        if value is None and not required:
            continue
        if not isinstance(value, str) or len(value) > longest or not _TOKEN.fullmatch(value):
            return f"{name} must be 1 to {longest} printable ASCII characters"
    seq = body.get("seq")
    if seq is not None and (type(seq) is not int or not 1 <= seq <= MAX_SEQ):
        return f"seq must be an integer from 1 to {MAX_SEQ}"
    return None


SETTLEMENT_OF = {  # the provider's settlement webhooks (docs/paysim.md)
    "capture.pending": "PENDING",
    "capture.settled": "SETTLED",
    "capture.settlement_failed": "FAILED",
    "charge.pending": "PENDING",
    "charge.settled": "SETTLED",
    "charge.settlement_failed": "FAILED",
}


async def consume_provider_event(
    session: AsyncSession, event_id: str, body: dict[str, Any], now: float
) -> str:
    """A settlement webhook, exactly once: duplicate | applied | stale | ignored. One
    query finds the payment, its purchase and whether the event was consumed already."""
    found = (
        await session.execute(
            select(Payment, Purchase, _seen(event_id))
            .join(Purchase, Purchase.id == Payment.purchase_id)
            .where(Payment.id == str(body.get("reference")))
        )
    ).one_or_none()
    if found is None:  # no such payment: only the inbox can tell a duplicate
        if await seen(session, event_id):
            return "duplicate"
        outcome = "ignored"
    elif found[2]:
        return "duplicate"
    else:
        outcome = await _settle(session, found[0], found[1], body, now)
    remember(session, event_id, "provider", str(body.get("type")), outcome, now)
    return outcome


def _seen(event_id: str) -> Exists:
    return exists().where(InboxEvent.event_id == event_id[:128])


async def _settle(
    session: AsyncSession, payment: Payment, purchase: Purchase, body: dict[str, Any], now: float
) -> str:
    """Newer ``seq`` wins, so a late "pending" never undoes "settled"."""
    state = SETTLEMENT_OF.get(str(body.get("type")))
    if state is None:
        return "ignored"
    seq = body.get("seq")
    if not isinstance(seq, int) or seq <= payment.settlement_seq:
        return "stale"
    payment.settlement, payment.settlement_seq, payment.updated_at = state, seq, now
    timeline(session, purchase.customer_id, purchase.id, now, f"settlement.{state.lower()}")
    if state == "FAILED":
        await open_ticket(
            session,
            purchase,
            "settlement_failed",
            None,
            now,
            authorization_ref=payment.authorization_ref,
        )
        payment.reconciled = True
    return "applied"


def parse_entry(fields: dict[str, str]) -> tuple[str, str, dict[str, Any]]:
    """(event_id, type, data) of a stream entry; ValueError when it is not one."""
    event_id, type_ = fields.get("event_id"), fields.get("type")
    if not event_id or not type_:
        raise ValueError("entry without event_id or type")
    data = json.loads(fields.get("data") or "{}")
    if not isinstance(data, dict):
        raise ValueError("data is not an object")
    return event_id, type_, data
