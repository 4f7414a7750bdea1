"""Rows a batch loads up front, for the lookups the identity map cannot answer.

Once a row is in the session, ``session.get`` finds it by primary key without SQL. The
saga also looks rows up by other keys: a purchase by its activation id, a payment by
its purchase, an intent by payment and kind. The consumer loads all of them for a whole
batch of events in two queries (``load``) and keeps them in ``session.info`` for that
transaction only (``kept``); the lookups here answer from them, and anything not loaded
is read from SQL as before. With no query left between the events of a batch, the
session also flushes their writes together at commit instead of one event at a time.

Safe because the rows are the session's own (changes go through them) and the batch is
one transaction: nothing else in it can change them behind the session's back.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.store.models import Customer, MoneyOp, Payment, Purchase, Vehicle

_KEY = "caas_preloaded"  # Session.info key


@dataclass
class Preloaded:
    purchases: dict[str, Purchase] = field(default_factory=dict)  # by activation id
    payments: dict[str, Payment] = field(default_factory=dict)  # by purchase id
    # by payment id: every intent of that payment, by kind (absent kind: none exists)
    intents: dict[str, dict[str, MoneyOp]] = field(default_factory=dict)
    # the session's identity map holds rows weakly: kept here, ``session.get`` finds them
    others: list[Customer | Vehicle] = field(default_factory=list)


async def load(session: AsyncSession, activation_ids: set[str]) -> Preloaded:
    """The purchases of these activation ids with their payment, customer, vehicle
    (all into the session) and every intent of those payments."""
    found = Preloaded()
    if not activation_ids:
        return found
    rows = await session.execute(
        select(Purchase, Payment, Customer, Vehicle)
        .outerjoin(Payment, Payment.purchase_id == Purchase.id)
        .join(Customer, Customer.id == Purchase.customer_id)
        .join(Vehicle, Vehicle.id == Purchase.vehicle_id)
        .where(Purchase.activation_id.in_(activation_ids))
    )
    for purchase, payment, customer, vehicle in rows:
        found.purchases[purchase.activation_id] = purchase
        found.others += (customer, vehicle)
        if payment is not None:
            found.payments[purchase.id] = payment
            found.intents[payment.id] = {}
    if found.intents:
        ops = await session.scalars(select(MoneyOp).where(MoneyOp.payment_id.in_(found.intents)))
        for op in ops:
            found.intents[op.payment_id][op.kind] = op
    return found


@contextmanager
def kept(session: AsyncSession, rows: Preloaded) -> Iterator[None]:
    """``rows`` answer this session's lookups until the block ends."""
    session.info[_KEY] = rows
    try:
        yield
    finally:
        session.info.pop(_KEY, None)


def _rows(session: AsyncSession) -> Preloaded | None:
    rows: Preloaded | None = session.info.get(_KEY)
    return rows


async def purchase_by_activation(session: AsyncSession, activation_id: str) -> Purchase | None:
    rows = _rows(session)
    if rows is not None and activation_id in rows.purchases:
        return rows.purchases[activation_id]
    return await session.scalar(select(Purchase).where(Purchase.activation_id == activation_id))


async def payment_of(session: AsyncSession, purchase_id: str) -> Payment | None:
    rows = _rows(session)
    if rows is not None and purchase_id in rows.payments:
        return rows.payments[purchase_id]
    return await session.scalar(select(Payment).where(Payment.purchase_id == purchase_id))


async def intent_of(session: AsyncSession, payment_id: str, kind: str) -> MoneyOp | None:
    rows = _rows(session)
    if rows is not None and payment_id in rows.intents:
        return rows.intents[payment_id].get(kind)
    return await session.scalar(
        select(MoneyOp).where(MoneyOp.payment_id == payment_id, MoneyOp.kind == kind)
    )


def added_intent(session: AsyncSession, op: MoneyOp) -> None:
    """A new intent: later lookups in this batch must find it."""
    rows = _rows(session)
    if rows is not None and op.payment_id in rows.intents:
        rows.intents[op.payment_id][op.kind] = op
