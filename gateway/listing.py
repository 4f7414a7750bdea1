"""The activation list (``GET /v1/activations``): its indexes and how a page is read.

Every activation is a member ``"{created_ms:013d}|{activation_id}"`` of a few sorted
sets, all with score 0, so Redis orders them by the member's bytes: by creation time
(13 fixed-width digits, to the millisecond), then by id. One set per combination of
the values the activation has among (state, failure_category, feature): 4 sets, 8 once
it has a failure category; and one per vehicle. The scripts that create and change an
activation (``lua.CREATE``, ``lua.COMMIT``) move it between those sets in the same
atomic step as the record, so the indexes never disagree with the records.

Whatever the filters on state, failure category and feature, exactly one set holds the
activations that match them, so a page is one lex range of that set read from the
cursor (``ZRANGEBYLEX``, O(log n + limit)) and the total one ``ZLEXCOUNT`` (O(log n)).
A ``vin`` filter with another one needs two sets: the smaller of the two (within the
time range) is walked and each member looked up in the other (``lua.LIST``), which
costs one lookup per member of the smaller set: at most the vehicle's activations.

On a Redis Cluster each shard has its own indexes (``keys``): the store runs the plan
in every shard (only the vehicle's with a ``vin`` filter) and ``merge_pages`` takes
the page from their pages, in the same order and with the same keyset cursor (an
entry is the same bytes whatever its shard), and the total as the sum.

Pure: no I/O. The store runs the plan (``Store.list_page``).
"""

from __future__ import annotations

import base64
import binascii
import heapq
import math
import re
from dataclasses import dataclass
from itertools import islice, product
from typing import Literal

from gateway.activation import Activation, FailureCategory, State
from gateway.keys import Keys

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
MAX_MS = 10**13 - 1  # the widest time a 13-digit member holds (year 2286)
MEMBER_RE = re.compile(r"^\d{13}\|[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")

Order = Literal["asc", "desc"]


def member(act: Activation) -> str:
    """The activation's entry in every index it is in."""
    return f"{math.floor(act.created_at * 1000):013d}|{act.activation_id}"


def activation_id_of(entry: str) -> str:
    return entry.split("|", 1)[1]


def index_keys(keys: Keys, act: Activation) -> set[str]:
    """Every index the activation belongs in, as it stands."""
    category = act.failure_category.value if act.failure_category else ""
    combos = product(_or_any(act.state.value), _or_any(category), _or_any(act.feature))
    return {keys.vin_index(act.vin)} | {keys.index(*combo) for combo in combos}


def possible_index_keys(keys: Keys, act: Activation) -> set[str]:
    """Every index an activation of this feature and vehicle could be in, whatever its
    state and failure category (what a repair removes it from)."""
    states = ("", *(s.value for s in State))
    categories = ("", *(c.value for c in FailureCategory))
    combos = product(states, categories, _or_any(act.feature))
    return {keys.vin_index(act.vin)} | {keys.index(*combo) for combo in combos}


def index_moves(keys: Keys, before: Activation, after: Activation) -> tuple[list[str], list[str]]:
    """(indexes to leave, indexes to join) when ``before`` becomes ``after``: only a
    change of state or failure category moves it (the rest of what is indexed and the
    member itself never change)."""
    if (before.state, before.failure_category) == (after.state, after.failure_category):
        return [], []
    old, new = index_keys(keys, before), index_keys(keys, after)
    return sorted(old - new), sorted(new - old)


def _or_any(value: str) -> tuple[str, ...]:
    return (value, "") if value else ("",)


# ---------------------------------------------------------------- queries


@dataclass(frozen=True, slots=True)
class ListQuery:
    """What the caller asked for, validated ("" or None: no filter)."""

    state: str = ""
    category: str = ""
    feature: str = ""
    vin: str = ""
    since: float | None = None  # created_at >= since (to the millisecond)
    until: float | None = None  # created_at < until
    limit: int = DEFAULT_LIMIT
    after: str = ""  # the cursor: the last entry of the previous page
    order: Order = "asc"


@dataclass(frozen=True, slots=True)
class Plan:
    """How ``lua.LIST`` reads one page. Bounds are ``ZRANGEBYLEX`` bounds."""

    sets: tuple[str, ...]  # one index, or two that a listed entry must both be in
    page_from: str  # where the page starts, in reading order (desc: the upper bound)
    page_to: str
    count_min: str  # the whole filtered range, for the total
    count_max: str
    limit: int
    reverse: bool


def plan(keys: Keys, query: ListQuery) -> Plan:
    sets: list[str] = []
    if query.state or query.category or query.feature or not query.vin:
        sets.append(keys.index(query.state, query.category, query.feature))
    if query.vin:
        sets.append(keys.vin_index(query.vin))
    low = "-" if query.since is None else "[" + _time_prefix(query.since)
    high = "+" if query.until is None else "(" + _time_prefix(query.until)
    page_low, page_high = low, high
    if query.after and query.order == "asc":
        page_low = _tighter(low, "(" + query.after, upper=False)
    elif query.after:
        page_high = _tighter(high, "(" + query.after, upper=True)
    reverse = query.order == "desc"
    return Plan(
        sets=tuple(sets),
        page_from=page_high if reverse else page_low,
        page_to=page_low if reverse else page_high,
        count_min=low,
        count_max=high,
        limit=query.limit,
        reverse=reverse,
    )


def _time_prefix(epoch_s: float) -> str:
    """Every entry created at or after ``epoch_s`` (to the ms) sorts at or after this."""
    return f"{min(max(math.floor(epoch_s * 1000), 0), MAX_MS):013d}|"


def _tighter(bound: str, cursor: str, *, upper: bool) -> str:
    """The narrower of a range bound ("-", "+", "[x", "(x") and the cursor's "(x"."""
    if bound in ("-", "+"):
        return cursor
    if bound[1:] == cursor[1:]:
        return cursor  # exclusive is the narrower of two bounds on the same entry
    narrower = min(bound[1:], cursor[1:]) if upper else max(bound[1:], cursor[1:])
    return cursor if narrower == cursor[1:] else bound


@dataclass(frozen=True, slots=True)
class ShardPage:
    """What ``lua.LIST`` returned for one shard."""

    after: str  # "" when the shard has nothing past its page
    total: int
    entries: list[str]


@dataclass(frozen=True, slots=True)
class MergedPage:
    entries: list[tuple[int, str]]  # (index of the shard page it came from, entry)
    after: str
    total: int


def merge_pages(pages: list[ShardPage], limit: int, reverse: bool) -> MergedPage:
    """The page among the shards' pages (each in reading order, each at most ``limit``
    long, read from the same cursor): the first ``limit`` entries of their k-way merge.
    There is more after it when the merge had more, or a shard had more than it gave."""
    runs = [[(entry, i) for entry in page.entries] for i, page in enumerate(pages)]
    merged = heapq.merge(*runs, reverse=reverse)
    taken = [(i, entry) for entry, i in islice(merged, limit + 1)]
    more = len(taken) > limit or any(page.after for page in pages)
    taken = taken[:limit]
    after = taken[-1][1] if more and taken else ""
    return MergedPage(taken, after, sum(page.total for page in pages))


# ---------------------------------------------------------------- cursors


def encode_cursor(entry: str) -> str:
    """Opaque to callers: the last entry of the page, base64url without padding."""
    return base64.urlsafe_b64encode(entry.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The entry a cursor names; ValueError when it is not one of ours."""
    if len(cursor) > 256:
        raise ValueError("cursor too long")
    try:
        entry = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise ValueError("not a cursor of this list") from exc
    if not MEMBER_RE.match(entry):
        raise ValueError("not a cursor of this list")
    return entry
