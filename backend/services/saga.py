"""The purchase saga: gateway events and money answers move purchases and payments.

Every function here runs inside one transaction opened by its caller (the consumer,
the relay, the money executor or the watchdog) and only writes rows; the provider and
the gateway are called elsewhere, after commit. Transitions are guarded by the current
state, so a duplicate or late event is a no-op, never an error.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from backend.adapters.payments import ProviderResult
from backend.domain.states import HOLD_OPEN, IN_FLIGHT, OpKind, OpState, PaymentState, PurchaseState
from backend.logs import log
from backend.services import lifecycle
from backend.store import preload
from backend.store.models import Customer, MoneyOp, Payment, Purchase, Vehicle
from backend.store.records import open_ticket, queue_gateway_request, timeline
from backend.workers import money, notify

PS = PurchaseState


async def _context(session: AsyncSession, purchase: Purchase) -> tuple[Customer, Vehicle]:
    customer = await session.get(Customer, purchase.customer_id)
    vehicle = await session.get(Vehicle, purchase.vehicle_id)
    assert customer is not None
    assert vehicle is not None
    return customer, vehicle


def _move(purchase: Purchase, state: PurchaseState, now: float) -> None:
    log("purchase.state", purchase_id=purchase.id, old=purchase.state, new=state.value)
    purchase.state, purchase.updated_at = state.value, now


async def payment_of(session: AsyncSession, purchase: Purchase) -> Payment | None:
    return await preload.payment_of(session, purchase.id)


# ---------------------------------------------------------------- activation outcomes
async def activation_succeeded(session: AsyncSession, purchase: Purchase, now: float) -> str:
    if purchase.state not in IN_FLIGHT:
        return "stale"
    _move(purchase, PS.ACTIVE, now)
    purchase.activated_at = now
    payment = await payment_of(session, purchase)
    assert payment is not None
    await lifecycle.on_activated(session, purchase, now)
    if purchase.duration_model == "subscription":
        # billed in arrears: the hold was a card check, released now (issue 5); nothing
        # is charged, so the customer can be told at once
        await money.request(session, payment, OpKind.CANCEL, 0, PaymentState.CANCELLED, now)
        price = f"Billed monthly in arrears: {purchase.price_cents / 100:.2f} EUR a month."
        await _tell(session, purchase, "activation_success", now, price=price)
    else:
        # only requested here: the customer hears of the charge once it is confirmed
        await money.request(
            session, payment, OpKind.CAPTURE, payment.amount_cents, PaymentState.CHARGED, now
        )
    timeline(session, purchase.customer_id, purchase.id, now, "activation.succeeded")
    return "applied"


async def _tell(
    session: AsyncSession, purchase: Purchase, template: str, now: float, **ctx: object
) -> None:
    customer, vehicle = await _context(session, purchase)
    msg = notify.render(template, service=purchase.service_id, vin=vehicle.vin, **ctx)
    await notify.queue(session, customer, msg, now, purchase.id)


async def activation_failed(
    session: AsyncSession,
    purchase: Purchase,
    now: float,
    category: str | None,
    diagnostics: dict[str, Any] | None,
    final: PurchaseState = PS.FAILED_NO_CHARGE,
    ticket_kind: str = "activation_failed",
) -> str:
    """No charge: release the hold (or refund), open a ticket, tell the customer."""
    if purchase.state not in IN_FLIGHT:
        return "stale"
    _move(purchase, final, now)
    purchase.failure_category = category
    await release(session, purchase, PaymentState.FAILED_NO_CHARGE, now)
    ticket = await open_ticket(session, purchase, ticket_kind, diagnostics, now)
    customer, vehicle = await _context(session, purchase)
    ctx = {"service": purchase.service_id, "vin": vehicle.vin, "ticket": ticket.number}
    await notify.queue(
        session,
        customer,
        notify.render("activation_failed_initial", **ctx),
        now,
        purchase.id,
        critical=True,
    )
    await notify.queue(session, customer, notify.render("ticket_created", **ctx), now, purchase.id)
    timeline(session, customer.id, purchase.id, now, "activation.failed", category=category)
    return "applied"


async def activation_cancelled(session: AsyncSession, purchase: Purchase, now: float) -> str:
    if purchase.state not in IN_FLIGHT:
        return "stale"
    _move(purchase, PS.CANCELLED, now)
    await release(session, purchase, PaymentState.FAILED_NO_CHARGE, now)
    timeline(session, purchase.customer_id, purchase.id, now, "activation.cancelled")
    return "applied"


async def release(
    session: AsyncSession, purchase: Purchase, target: PaymentState, now: float
) -> None:
    """Give the money back: cancel an open hold, or refund what was captured."""
    payment = await payment_of(session, purchase)
    if payment is None:
        return
    if payment.authorization_ref is None:
        # no hold known yet: an authorization still in flight is released by its answer
        # (``_authorized`` sees the purchase has ended); otherwise there is nothing to free
        if not await _authorize_pending(session, payment):
            payment.state, payment.updated_at = target.value, now
        return
    if payment.captured_cents > payment.refunded_cents:
        await money.request(
            session,
            payment,
            OpKind.REFUND,
            payment.captured_cents - payment.refunded_cents,
            target,
            now,
        )
    elif payment.state in HOLD_OPEN or payment.state == PaymentState.INITIATED:
        await money.request(session, payment, OpKind.CANCEL, 0, target, now)


async def _authorize_pending(session: AsyncSession, payment: Payment) -> bool:
    op = await preload.intent_of(session, payment.id, OpKind.AUTHORIZE.value)
    return op is not None and op.state == OpState.REQUESTED.value


# ---------------------------------------------------------------- money answers
async def apply_money_result(
    session: AsyncSession, op: MoneyOp, payment: Payment, result: ProviderResult, now: float
) -> None:
    purchase = await session.get(Purchase, payment.purchase_id)
    assert purchase is not None
    payment.updated_at = now
    match OpKind(op.kind):
        case OpKind.AUTHORIZE:
            await _authorized(session, purchase, payment, result, now)
        case OpKind.CAPTURE:
            await _captured(session, purchase, payment, result, now)
        case OpKind.CANCEL | OpKind.REFUND:
            _released(session, purchase, payment, op, result, now)
            if not result.approved and OpKind(op.kind) is OpKind.CANCEL:
                await _cancel_refused(session, purchase, payment, now)


async def _authorized(
    session: AsyncSession,
    purchase: Purchase,
    payment: Payment,
    result: ProviderResult,
    now: float,
) -> None:
    if not result.approved:
        payment.state = PaymentState.FAILED_NO_CHARGE.value
        if purchase.state == PS.PAYMENT_PENDING:
            _move(purchase, PS.PAYMENT_FAILED, now)
            customer, vehicle = await _context(session, purchase)
            msg = notify.render("payment_declined", service=purchase.service_id, vin=vehicle.vin)
            await notify.queue(session, customer, msg, now, purchase.id)
        return
    payment.authorization_ref = result.ref
    payment.state = PaymentState.HELD_FOR_ACTIVATION.value
    if purchase.state != PS.PAYMENT_PENDING:
        # the purchase ended meanwhile (deadline): the fresh hold must not stay open
        await money.request(session, payment, OpKind.CANCEL, 0, PaymentState.FAILED_NO_CHARGE, now)
        return
    scheduled = purchase.start_at > now
    _move(purchase, PS.SCHEDULED if scheduled else PS.ACTIVATION_QUEUED, now)
    queue_gateway_request(
        session, purchase, purchase.activation_id, "activation.request", "activate",
        max(now, purchase.start_at), now,
    )  # fmt: skip
    timeline(
        session,
        purchase.customer_id,
        purchase.id,
        now,
        "payment.held",
        amount_cents=payment.amount_cents,
    )


async def _captured(
    session: AsyncSession,
    purchase: Purchase,
    payment: Payment,
    result: ProviderResult,
    now: float,
) -> None:
    if result.approved:
        payment.state = PaymentState.CHARGED.value
        payment.captured_cents = payment.amount_cents
        if payment.settlement == "NONE":
            payment.settlement = "PENDING"
        timeline(
            session,
            purchase.customer_id,
            purchase.id,
            now,
            "payment.captured",
            amount_cents=payment.amount_cents,
        )
        price = f"You are charged {payment.amount_cents / 100:.2f} EUR."
        await _tell(session, purchase, "activation_success", now, price=price)
        return
    # the feature is on but the hold could not be captured: CaaS carries it, ops follow up
    payment.state = PaymentState.FAILED_NO_CHARGE.value
    await open_ticket(session, purchase, "capture_failed", None, now, reason=result.reason)
    await _tell(session, purchase, "activation_success_not_charged", now)


def _released(
    session: AsyncSession,
    purchase: Purchase,
    payment: Payment,
    op: MoneyOp,
    result: ProviderResult,
    now: float,
) -> None:
    if not result.approved:
        log("money.release_refused", payment_id=payment.id, op=op.kind, reason=result.reason)
        return
    if OpKind(op.kind) is OpKind.REFUND:
        payment.refunded_cents += op.amount_cents
    payment.state = op.target_state or PaymentState.FAILED_NO_CHARGE.value
    timeline(
        session,
        purchase.customer_id,
        purchase.id,
        now,
        f"payment.{op.kind}",
        amount_cents=op.amount_cents,
    )


async def _cancel_refused(
    session: AsyncSession, purchase: Purchase, payment: Payment, now: float
) -> None:
    await open_ticket(session, purchase, "release_failed", None, now, payment_state=payment.state)
