"""The activation list's indexes and page plans (pure: ``gateway/listing.py``)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gateway.activation import Action, Activation, FailureCategory, State
from gateway.keys import Keys
from gateway.listing import (
    ListQuery,
    decode_cursor,
    encode_cursor,
    index_keys,
    index_moves,
    member,
    plan,
    possible_index_keys,
)
from gateway.policy import RetryPolicy

K = Keys("p")
VIN = "CAATRL9A5SB000001"
ACT = Activation("a-1", VIN, "climate_plus", Action.ACTIVATE, RetryPolicy(), 1_795_000_000.1234, 0)


def test_member_sorts_by_creation_millisecond_then_id() -> None:
    """Entries are 13 fixed-width digits of ms, then the id: byte order = time order."""
    assert member(ACT) == "1795000000123|a-1"
    later = replace(ACT, activation_id="0", created_at=1_795_000_000.124)
    assert member(ACT) < member(later)


def test_an_activation_is_in_one_index_per_combination_of_its_values() -> None:
    """No failure category: 4 combinations + the vehicle; with one: 8 + the vehicle."""
    assert index_keys(K, ACT) == {
        "p:ix",
        "p:ix:state=QUEUED",
        "p:ix:feature=climate_plus",
        "p:ix:state=QUEUED:feature=climate_plus",
        f"p:ix:vin={VIN}",
    }
    failed = replace(ACT, state=State.FAILED, failure_category=FailureCategory.TIMEOUT)
    keys = index_keys(K, failed)
    assert len(keys) == 9
    assert "p:ix:state=FAILED:category=timeout:feature=climate_plus" in keys
    assert "p:ix:category=timeout" in keys


def test_moves_only_on_a_change_of_state_or_category() -> None:
    """Same state and category: nothing moves; otherwise exactly the differing sets."""
    assert index_moves(K, ACT, replace(ACT, current=2, updated_at=5)) == ([], [])
    failed = replace(ACT, state=State.FAILED, failure_category=FailureCategory.TIMEOUT)
    leave, join = index_moves(K, ACT, failed)
    assert leave == ["p:ix:state=QUEUED", "p:ix:state=QUEUED:feature=climate_plus"]
    assert "p:ix" not in join and f"p:ix:vin={VIN}" not in join
    assert set(join) == index_keys(K, failed) - index_keys(K, ACT)


def test_possible_indexes_cover_every_state_and_category() -> None:
    """What a repair clears: every (state or any) x (category or any) x (feature or
    any) combination, and the vehicle's set; always a superset of the current ones."""
    possible = possible_index_keys(K, ACT)
    assert len(possible) == 8 * 6 * 2 + 1
    failed = replace(ACT, state=State.FAILED, failure_category=FailureCategory.TIMEOUT)
    assert index_keys(K, ACT) | index_keys(K, failed) <= possible
    assert possible == possible_index_keys(K, failed)


def test_plan_reads_one_set_unless_a_vin_is_combined() -> None:
    """Filters on state/category/feature name exactly one set; a vin adds its own."""
    assert plan(K, ListQuery()).sets == ("p:ix",)
    only = plan(K, ListQuery(state="FAILED", category="timeout", feature="f"))
    assert only.sets == ("p:ix:state=FAILED:category=timeout:feature=f",)
    assert plan(K, ListQuery(vin=VIN)).sets == (f"p:ix:vin={VIN}",)
    both = plan(K, ListQuery(vin=VIN, state="FAILED")).sets
    assert both == ("p:ix:state=FAILED", f"p:ix:vin={VIN}")


def test_plan_bounds_time_and_cursor() -> None:
    """since is inclusive, until exclusive (to the ms); the cursor narrows the page only."""
    q = ListQuery(since=1_795_000_000.0, until=1_795_000_060.0)
    p = plan(K, q)
    assert (p.count_min, p.count_max) == ("[1795000000000|", "(1795000060000|")
    assert (p.page_from, p.page_to, p.reverse) == ("[1795000000000|", "(1795000060000|", False)
    after = "1795000030000|x"
    p = plan(K, replace(q, after=after))
    assert (p.page_from, p.page_to) == ("(" + after, "(1795000060000|")
    assert p.count_min == "[1795000000000|"
    p = plan(K, replace(q, after=after, order="desc"))
    assert (p.page_from, p.page_to, p.reverse) == ("(" + after, "[1795000000000|", True)
    # a cursor outside the window does not widen it
    p = plan(K, replace(q, after="1794000000000|x"))
    assert p.page_from == "[1795000000000|"
    p = plan(K, ListQuery(after="1795000000000|x", order="desc"))
    assert (p.page_from, p.page_to) == ("(1795000000000|x", "-")


def test_times_outside_13_digits_are_clamped() -> None:
    """Before 1970 or after 2286 still gives a bound that sorts right."""
    p = plan(K, ListQuery(since=-5.0, until=1e14))
    assert p.count_min == "[0000000000000|"
    assert p.count_max == "(9999999999999|"


def test_cursor_round_trip_and_refusals() -> None:
    """A cursor is opaque, decodes to the entry it names, and junk is a ValueError."""
    entry = "1795000000123|a-1"
    assert decode_cursor(encode_cursor(entry)) == entry
    for junk in ("", "!!!", encode_cursor("hello"), encode_cursor("123|a"), "x" * 300,
                 encode_cursor("1795000000123|bad id")):  # fmt: skip
        with pytest.raises(ValueError, match="cursor"):
            decode_cursor(junk)
