"""The money invariants, checked from the database alone (``check-invariants``), for
both payment flows: a card's hold (captured only once the feature is on, released
otherwise) and a direct debit (taken at purchase, kept only once the feature is on,
refunded otherwise), and the settlement that may fail after the feature went on."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.audit import lifecycle as invariants_lifecycle
from backend.audit.types import Violation
from backend.domain.states import (
    CONFIRMED_ACTIVE,
    HOLD_OPEN,
    IN_FLIGHT,
    OpKind,
    OpState,
    PaymentState,
)
from backend.store.models import MoneyOp, Payment, Purchase, Ticket

STUCK_OP_S = 3600.0
__all__ = ["Violation", "check"]


async def check(
    session: AsyncSession, now: float, stuck_op_s: float = STUCK_OP_S
) -> list[Violation]:
    rows = (
        await session.execute(
            select(Purchase, Payment).outerjoin(Payment, Payment.purchase_id == Purchase.id)
        )
    ).all()
    requested = set(
        (
            await session.scalars(
                select(MoneyOp.payment_id).where(MoneyOp.state == OpState.REQUESTED.value)
            )
        ).all()
    )
    followed_up = set(
        (
            await session.scalars(
                select(Ticket.purchase_id).where(Ticket.kind == "settlement_failed")
            )
        ).all()
    )
    out: list[Violation] = []
    for purchase, payment in rows:
        if purchase.state in IN_FLIGHT and purchase.deadline_at < now:
            out.append(Violation("terminal_after_deadline", purchase.id, purchase.state))
        if payment is not None:
            out.extend(_payment_rules(purchase, payment, payment.id in requested))
            if payment.settlement == "FAILED" and purchase.id not in followed_up:
                # the money never arrived after the feature went on: support must know
                out.append(Violation("failed_settlement_followed_up", payment.id, purchase.state))
    captures = await session.execute(
        select(MoneyOp.payment_id, func.count())
        .where(MoneyOp.kind == OpKind.CAPTURE.value, MoneyOp.state == OpState.SUCCEEDED.value)
        .group_by(MoneyOp.payment_id)
        .having(func.count() > 1)
    )
    out.extend(Violation("one_capture", pid, f"{n} captures") for pid, n in captures.all())
    stuck = await session.scalars(
        select(MoneyOp).where(
            MoneyOp.state == OpState.REQUESTED.value, MoneyOp.created_at < now - stuck_op_s
        )
    )
    out.extend(Violation("money_op_stuck", op.payment_id, op.kind) for op in stuck.all())
    out.extend(await invariants_lifecycle.check(session, now))
    return out


def _payment_rules(purchase: Purchase, payment: Payment, op_pending: bool) -> list[Violation]:
    out = []
    kept = payment.captured_cents - payment.refunded_cents
    # a direct debit is taken before the outcome is known: while the activation runs,
    # or while its refund is on its way, the money is held, not kept
    debit_in_flight = (
        purchase.state in IN_FLIGHT and payment.state == PaymentState.HELD_FOR_ACTIVATION
    )
    held = payment.state != PaymentState.CHARGED and (debit_in_flight or op_pending)
    charged = kept > 0 or payment.state == PaymentState.CHARGED
    if charged and not held and purchase.state not in CONFIRMED_ACTIVE:
        out.append(Violation("charged_only_if_active", payment.id, f"{purchase.state} kept {kept}"))
    if payment.captured_cents > payment.amount_cents:
        out.append(Violation("capture_exceeds_amount", payment.id, str(payment.captured_cents)))
    if payment.state in HOLD_OPEN and purchase.state not in IN_FLIGHT and not op_pending:
        out.append(Violation("hold_left_open", payment.id, f"purchase {purchase.state}"))
    refunded_states = (PaymentState.REFUNDED, PaymentState.FAILED_NO_CHARGE)
    if payment.refunded_cents and payment.refunded_cents != payment.captured_cents:
        out.append(
            Violation(
                "refund_equals_capture",
                payment.id,
                f"{payment.refunded_cents} != {payment.captured_cents}",
            )
        )
    if payment.state in refunded_states and kept != 0:
        out.append(Violation("refund_equals_capture", payment.id, f"{payment.state} kept {kept}"))
    return out
