"""Claiming due rows before working on them: the money executor's intents, the
outbox relay's messages and the notification dispatcher's rows.

A claim is one guarded UPDATE that moves the rows' due time a lease ahead and returns
them: no two workers hold the same row, and a row whose worker died is due again when
the lease runs out. On PostgreSQL ``FOR UPDATE SKIP LOCKED`` makes concurrent claimers
skip each other's rows instead of waiting; the due conditions are checked again under
the row lock.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from backend.store.models import Base

M = TypeVar("M", bound=Base)


async def claim_due(
    session: AsyncSession,
    model: type[M],
    key: InstrumentedAttribute[str],
    *,
    due: Sequence[ColumnElement[bool]],
    oldest_first: InstrumentedAttribute[Any],
    leased: dict[str, Any],
    limit: int,
) -> Sequence[M]:
    """Up to ``limit`` rows of ``model`` meeting ``due``, oldest first, updated with
    ``leased`` (their due time a lease ahead) and returned."""
    # a CTE, not an ``IN (subquery)``: PostgreSQL may run such a subquery again for
    # every row of a nested loop, each run locking further rows, so that one claim took
    # every due row whatever ``limit`` said; a CTE with FOR UPDATE is run once
    claimable = (
        select(key)
        .where(*due)
        .order_by(oldest_first)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .cte("claimable")
    )
    return (
        await session.scalars(
            update(model)
            .where(key.in_(select(claimable)), *due)
            .values(**leased)
            .returning(model)
            .execution_options(synchronize_session=False)
        )
    ).all()
