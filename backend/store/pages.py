"""Keyset pagination, one helper for every list: rows ordered by (time, id), a page
after an opaque cursor, and the count of every row the filters match.

A cursor is the (time, id) of the last row of a page, as base64url JSON: the next page
is the rows strictly after it in the list's order, so a row added or removed meanwhile
never makes another row appear twice or go missing. A cursor this module did not write
is 422 ``bad_cursor``.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, Select, and_, func, or_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from backend.errors import InvalidRequest

MAX_LIMIT = 500
DEFAULT_LIMIT = 50
_AT, _ID = "_page_at", "_page_id"
AnySelect = Select[*tuple[Any, ...]]  # a query of any entities and columns
AnyRow = Row[*tuple[Any, ...]]


@dataclass(frozen=True)
class Position:
    """Where a page ends: the (time, id) of its last row."""

    at: float
    id: str

    def encode(self) -> str:
        raw = json.dumps([self.at, self.id], separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, cursor: str) -> Position:
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
            at, id_ = json.loads(raw)
        except (binascii.Error, ValueError, TypeError):
            raise InvalidRequest("bad_cursor", "not a cursor of this list") from None
        if not isinstance(at, int | float) or isinstance(at, bool) or not math.isfinite(at):
            raise InvalidRequest("bad_cursor", "not a cursor of this list")
        if not isinstance(id_, str) or not 0 < len(id_) <= 64:
            raise InvalidRequest("bad_cursor", "not a cursor of this list")
        return cls(float(at), id_)


@dataclass(frozen=True)
class PageRequest:
    limit: int = DEFAULT_LIMIT
    cursor: str | None = None
    descending: bool = False


@dataclass(frozen=True)
class Page:
    rows: list[AnyRow]  # the query's rows (its entities and columns, in its order)
    next_cursor: str | None  # None: this is the last page
    total: int  # every row the filters match, on every page


async def fetch_page(
    session: AsyncSession,
    query: AnySelect,
    at: InstrumentedAttribute[float],
    id_: InstrumentedAttribute[str],
    page: PageRequest,
) -> Page:
    """One page of ``query`` (filtered, not ordered) in (``at``, ``id_``) order: two
    statements, the page (one row more than ``limit``, to know whether one follows)
    and the count."""
    counted = query.with_only_columns(func.count(id_), maintain_column_froms=True)
    total = await session.scalar(counted) or 0
    ordered = query.add_columns(at.label(_AT), id_.label(_ID))
    if page.cursor is not None:
        ordered = ordered.where(_after(at, id_, Position.decode(page.cursor), page.descending))
    keys = (at.desc(), id_.desc()) if page.descending else (at.asc(), id_.asc())
    rows = list((await session.execute(ordered.order_by(*keys).limit(page.limit + 1))).all())
    more = len(rows) > page.limit
    rows = rows[: page.limit]
    last = rows[-1] if rows and more else None
    next_cursor = Position(last._mapping[_AT], last._mapping[_ID]).encode() if last else None
    return Page(rows, next_cursor, total)


def _after(
    at: InstrumentedAttribute[float],
    id_: InstrumentedAttribute[str],
    pos: Position,
    descending: bool,
) -> Any:
    """Rows strictly past ``pos`` in the list's order (portable: no row values)."""
    if descending:
        return or_(at < pos.at, and_(at == pos.at, id_ < pos.id))
    return or_(at > pos.at, and_(at == pos.at, id_ > pos.id))
