"""The handbook's six metrics and their breakdowns, counted in SQL over the activations
finished inside a time window (``purchases.activation_finished_at``, indexed), on
SQLite and PostgreSQL alike. The definitions are ``domain/handbook.py``'s; this module
only counts (about ten queries: an operations read, not a hot path)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Float, and_, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import Integer

from backend.domain import handbook
from backend.domain.handbook import HOURS, Tally, nearest_rank, reason_label
from backend.domain.states import ActivationOutcome, OpKind, OpState
from backend.store.models import MoneyOp, Payment, Purchase, Ticket, Vehicle

FAILED = Purchase.activation_outcome == ActivationOutcome.FAILED.value
SUCCEEDED = Purchase.activation_outcome == ActivationOutcome.SUCCEEDED.value
PAID_BY = (OpKind.AUTHORIZE.value, OpKind.CHARGE.value)  # the hold, or a direct debit


@dataclass(frozen=True)
class Window:
    """``[start, end]`` in epoch seconds; ``start`` None: since the beginning."""

    start: float | None
    end: float

    def holds(self, column: Any) -> ColumnElement[bool]:
        if self.start is None:
            return and_(column.is_not(None), column <= self.end)
        return and_(column >= self.start, column <= self.end)


class utc_hour(FunctionElement[int]):
    """The UTC hour of day (0..23) of an epoch-seconds column."""

    type = Integer()
    inherit_cache = True
    name = "utc_hour"


@compiles(utc_hour, "sqlite")
def _utc_hour_sqlite(element: utc_hour, compiler: SQLCompiler, **kw: Any) -> str:
    # CAST truncates towards zero: the floor of a positive epoch time
    return f"((CAST({compiler.process(element.clauses, **kw)} AS INTEGER) / 3600) % 24)"


@compiles(utc_hour)
def _utc_hour(element: utc_hour, compiler: SQLCompiler, **kw: Any) -> str:
    column = compiler.process(element.clauses, **kw)
    return f"CAST(EXTRACT(HOUR FROM TO_TIMESTAMP({column}) AT TIME ZONE 'UTC') AS INTEGER)"


def count_if(condition: ColumnElement[bool]) -> ColumnElement[int]:
    return func.sum(case((condition, 1), else_=0))


async def summary(session: AsyncSession, window: Window) -> dict[str, Any]:
    """The handbook list and the breakdowns (``GET /v1/ops/metrics/summary``)."""
    counted = await tally(session, window)
    return {"handbook": handbook.handbook(counted), "breakdowns": await breakdowns(session, window)}


async def tally(session: AsyncSession, window: Window) -> Tally:
    finished = window.holds(Purchase.activation_finished_at)
    attempts = Purchase.activation_attempts
    # when the payment was made: the hold (or charge) answered, or a scheduled start
    paid_from = case(
        (MoneyOp.completed_at > Purchase.start_at, MoneyOp.completed_at),
        else_=Purchase.start_at,
    )
    timed = SUCCEEDED & MoneyOp.completed_at.is_not(None)
    row = (
        await session.execute(
            select(
                func.count(),
                count_if(FAILED),
                count_if(SUCCEEDED & (attempts == 1)),
                count_if(SUCCEEDED & attempts.is_not(None)),
                func.sum(case((SUCCEEDED, attempts))),
                count_if(timed),
                func.sum(case((timed, Purchase.activation_finished_at - paid_from))),
                count_if(FAILED & (Payment.captured_cents > 0)),
            )
            .select_from(Purchase)
            .outerjoin(Payment, Payment.purchase_id == Purchase.id)
            .outerjoin(
                MoneyOp,
                and_(
                    MoneyOp.payment_id == Payment.id,
                    MoneyOp.kind.in_(PAID_BY),
                    MoneyOp.state == OpState.SUCCEEDED.value,
                ),
            )
            .where(finished)
        )
    ).one()
    permanent = await session.scalar(
        select(func.count(func.distinct(Ticket.purchase_id)))
        .join(Purchase, Purchase.id == Ticket.purchase_id)
        .where(
            finished,
            Ticket.status == "RESOLVED",
            Ticket.resolution == "permanent_failure",
        )
    )
    n = [int(v or 0) for v in row]
    return Tally(
        finished=n[0], failed=n[1], first_attempt_successes=n[2],
        successes_with_attempts=n[3], attempts_of_successes=n[4], timed_successes=n[5],
        payment_to_activation_s=float(row[6] or 0.0), permanent_failures=int(permanent or 0),
        customer_impact=n[7],
    )  # fmt: skip


async def breakdowns(session: AsyncSession, window: Window) -> dict[str, Any]:
    finished = window.holds(Purchase.activation_finished_at)
    reasons = (
        await session.execute(
            select(Purchase.failure_category, func.count())
            .where(finished, FAILED)
            .group_by(Purchase.failure_category)
        )
    ).all()
    failures = sum(n for _, n in reasons)

    async def failures_by(key: Any, *joins: Any) -> list[tuple[Any, int, int]]:
        query = select(key, count_if(FAILED), func.count()).select_from(Purchase)
        for target, on in joins:
            query = query.join(target, on)
        found = await session.execute(query.where(finished).group_by(key))
        return [(k, int(failed or 0), int(total)) for k, failed, total in found.all()]

    models = await failures_by(Vehicle.model, (Vehicle, Vehicle.id == Purchase.vehicle_id))
    services = await failures_by(Purchase.service_id)
    hours = await failures_by(utc_hour(Purchase.activation_finished_at))
    attempts = (
        await session.execute(
            select(Purchase.activation_attempts, count_if(SUCCEEDED), func.count())
            .where(finished, Purchase.activation_attempts.is_not(None))
            .group_by(Purchase.activation_attempts)
        )
    ).all()
    return {
        "failures_by_reason": handbook.rows(
            (reason_label(category), n, failures) for category, n in reasons
        ),
        "failures_by_model": handbook.rows(models),
        "failures_by_service": handbook.rows(services),
        "failures_by_hour": handbook.rows(((HOURS[h], f, t) for h, f, t in hours), HOURS),
        "successes_by_attempt": handbook.by_attempt(
            (int(a or 0), int(ok or 0), int(total)) for a, ok, total in attempts
        ),
        "support_resolution": await support_resolution(session, window),
    }


async def support_resolution(session: AsyncSession, window: Window) -> dict[str, Any]:
    """Tickets open now; tickets resolved inside the window and how long they took
    (mean, and the 50th and 95th percentiles by nearest rank)."""
    took = (Ticket.resolved_at - Ticket.created_at).cast(Float)
    resolved = window.holds(Ticket.resolved_at)
    open_now = await session.scalar(
        select(func.count()).select_from(Ticket).where(Ticket.status == "OPEN")
    )
    n, mean = (await session.execute(select(func.count(), func.avg(took)).where(resolved))).one()

    async def percentile(p: float) -> float | None:
        if not n:
            return None
        at = select(took).where(resolved).order_by(took).limit(1).offset(nearest_rank(n, p))
        value = await session.scalar(at)
        return None if value is None else round(float(value), 3)

    return {
        "open": int(open_now or 0),
        "resolved": int(n or 0),
        "mean_s": None if mean is None else round(float(mean), 3),
        "p50_s": await percentile(50),
        "p95_s": await percentile(95),
    }
