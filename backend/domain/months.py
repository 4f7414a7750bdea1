"""Calendar months in UTC epoch seconds and the proration of a subscription month
(docs/lifecycle.md): the days billed in month M are the UTC calendar days of M on which
the service was billable at some moment, from the day of ``billable_from`` (inclusive)
to ``ends_at`` (a day is counted when any part of it is covered); amount = price for a
full month, else ``round_half_up(price × days / days_in_month)``."""

from __future__ import annotations

import calendar
import math
import re
from datetime import UTC, datetime

from backend.errors import InvalidRequest

DAY_S = 86_400.0
MONTH_RE = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


def month_bounds(month: str) -> tuple[float, float]:
    """[start, end) of a ``YYYY-MM`` month in UTC epoch seconds; 422 ``bad_month``."""
    m = MONTH_RE.match(month) if isinstance(month, str) else None
    if m is None or not 2000 <= int(m.group(1)) <= 2999:
        raise InvalidRequest("bad_month", "month must be YYYY-MM (2000..2999)")
    year, mon = int(m.group(1)), int(m.group(2))
    start = datetime(year, mon, 1, tzinfo=UTC).timestamp()
    end = datetime(year + mon // 12, mon % 12 + 1, 1, tzinfo=UTC).timestamp()
    return start, end


def month_of(at: float) -> str:
    return f"{datetime.fromtimestamp(at, tz=UTC):%Y-%m}"


def next_month_start(at: float) -> float:
    return month_bounds(month_of(at))[1]


def previous_month(at: float) -> str:
    start, _ = month_bounds(month_of(at))
    return month_of(start - 1)


def days_in_month(month: str) -> int:
    start, _ = month_bounds(month)
    d = datetime.fromtimestamp(start, tz=UTC)
    return calendar.monthrange(d.year, d.month)[1]


def billable_days(billable_from: float, ends_at: float | None, month: str) -> int:
    """UTC calendar days of ``month`` touched by [billable_from, ends_at)."""
    start, end = month_bounds(month)
    frm = max(billable_from, start)
    to = min(ends_at if ends_at is not None else end, end)
    if to <= frm:
        return 0
    first_day = start + math.floor((frm - start) / DAY_S) * DAY_S
    return min(days_in_month(month), math.ceil((to - first_day) / DAY_S))


def prorate(price_cents: int, days: int, month_days: int) -> int:
    """Full price for a full month; else price × days / month_days, half up."""
    if days >= month_days:
        return price_cents
    return (2 * price_cents * days + month_days) // (2 * month_days)
