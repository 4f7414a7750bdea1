"""The provider's logic without HTTP: idempotency (replay, reuse), capture once,
cancel after capture refused, refund bounds, immediate charges, settlement and its
webhooks (duplicated, reordered, failed), timeouts that act, atomicity, durability."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from paysim.ledger import TIMEOUT, Ledger
from paysim.modes import FailureModes
from paysim.store import Store
from protocol.timeutil import ManualClock
from tests.paysim.conftest import call, hold


def test_a_replayed_key_returns_the_first_answer_and_acts_once(ledger: Ledger) -> None:
    first = call(ledger, "authorize", "k1", reference="r1", amount_cents=500, currency="EUR")
    again = call(ledger, "authorize", "k1", reference="r1", amount_cents=500, currency="EUR")
    assert first.status == again.status == 201
    assert first.body == again.body
    assert first.body["id"].startswith("auth_") and first.body["status"] == "authorized"
    assert len(ledger.store.payments("authorization")) == 1
    assert ledger.store.calls()["authorize"] == 2


def test_a_key_reused_for_another_request_is_a_conflict(ledger: Ledger) -> None:
    auth = hold(ledger, "k1")
    other = call(ledger, "authorize", "k1", reference="ref-k1", amount_cents=999, currency="EUR")
    assert (other.status, other.body["error"]) == (409, "idempotency_key_reused")
    # another route with the same key is another request too
    capture = call(ledger, "capture", "k1", auth, amount_cents=1000)
    assert (capture.status, capture.body["error"]) == (409, "idempotency_key_reused")
    assert ledger.store.real_captures() == {}
    # the key keeps its first answer
    replay = call(ledger, "authorize", "k1", reference="ref-k1", amount_cents=1000,
                  currency="EUR")  # fmt: skip
    assert (replay.status, replay.body["id"]) == (201, auth)


def test_capture_happens_once_whatever_the_keys(ledger: Ledger) -> None:
    auth = hold(ledger)
    first = call(ledger, "capture", "cap-a", auth, amount_cents=1000)
    assert first.status == 201 and first.body["id"].startswith("cap_")
    assert first.body["payment"] == auth
    assert call(ledger, "capture", "cap-a", auth, amount_cents=1000) == first  # replay
    second = call(ledger, "capture", "cap-b", auth, amount_cents=1000)  # another key
    assert (second.status, second.body["error"], second.body["payment"]) == (
        409, "not_capturable", auth,
    )  # fmt: skip
    assert ledger.store.real_captures() == {auth: 1}
    assert ledger.stats()["captured_more_than_once"] == 0


def test_cancel_after_capture_is_refused_and_capture_after_cancel_too(ledger: Ledger) -> None:
    captured, cancelled = hold(ledger, "a1"), hold(ledger, "a2")
    assert call(ledger, "capture", "c1", captured, amount_cents=1000).status == 201
    refused = call(ledger, "cancel", "x1", captured)
    assert (refused.status, refused.body["error"]) == (409, "already_captured")
    ok = call(ledger, "cancel", "x2", cancelled)
    assert ok.status == 201 and ok.body["id"].startswith("can_")
    late = call(ledger, "capture", "c2", cancelled, amount_cents=1000)
    assert (late.status, late.body["error"]) == (409, "not_capturable")
    assert ledger.store.open_authorizations() == 0
    view = ledger.payment(cancelled)
    assert view["cancelled"] is True and view["captured_cents"] == 0


def test_unknown_ids_and_amounts_over_the_hold(ledger: Ledger) -> None:
    auth = hold(ledger, amount=1000)
    unknown = call(ledger, "capture", "c0", "auth_nope", amount_cents=10)
    assert (unknown.status, unknown.body["error"]) == (404, "not_found")
    over = call(ledger, "capture", "c1", auth, amount_cents=1001)
    assert (over.status, over.body["error"]) == (409, "exceeds_authorized")
    assert call(ledger, "cancel", "x0", "ch_nope").status == 404


def test_refunds_never_exceed_what_was_captured(ledger: Ledger) -> None:
    auth = hold(ledger, amount=1000)
    early = call(ledger, "refund", "r0", payment=auth, amount_cents=1)
    assert (early.status, early.body["error"]) == (409, "exceeds_captured")
    call(ledger, "capture", "c1", auth, amount_cents=1000)
    assert call(ledger, "refund", "r1", payment=auth, amount_cents=600).status == 201
    over = call(ledger, "refund", "r2", payment=auth, amount_cents=401)
    assert (over.status, over.body["error"]) == (409, "exceeds_captured")
    rest = call(ledger, "refund", "r3", payment=auth, amount_cents=400)
    assert rest.status == 201 and rest.body["id"].startswith("re_")
    assert call(ledger, "refund", "r3", payment=auth, amount_cents=400) == rest  # replay
    assert ledger.payment(auth)["refunded_cents"] == 1000


def test_an_immediate_charge_takes_the_money_then_settles(
    ledger: Ledger, clock: ManualClock
) -> None:
    charge = call(ledger, "charge", "ch-1", reference="sub-1", amount_cents=2500, currency="EUR")
    assert charge.status == 201 and charge.body["id"].startswith("ch_")
    ref = charge.body["id"]
    view = ledger.payment(ref)
    assert (view["kind"], view["captured_cents"], view["settlement"]) == ("charge", 2500, "PENDING")
    assert ledger.store.real_captures() == {ref: 1}
    due = ledger.store.due_webhooks(clock.now(), 10)
    assert [json.loads(w.body)["type"] for w in due] == ["charge.pending"]
    clock.advance(5)
    types = [json.loads(w.body)["type"] for w in ledger.store.due_webhooks(clock.now(), 10)]
    assert types == ["charge.pending", "charge.settled"]
    assert (ledger.payment(ref)["settlement"], ledger.payment(ref)["settlement_seq"]) == (
        "SETTLED", 2,
    )  # fmt: skip
    assert call(ledger, "refund", "r1", payment=ref, amount_cents=2500).status == 201
    assert ledger.store.open_authorizations() == 0  # a charge is not a hold


def test_declines_are_stored_answers(ledger: Ledger) -> None:
    ledger.modes.decline_rate = 1.0
    declined = call(ledger, "authorize", "k1", reference="r", amount_cents=5, currency="EUR")
    assert (declined.status, declined.body["error"]) == (402, "card_declined")
    charge = call(ledger, "charge", "k2", reference="r", amount_cents=5, currency="EUR")
    assert charge.status == 402
    ledger.modes.decline_rate = 0.0
    assert (
        call(ledger, "authorize", "k1", reference="r", amount_cents=5, currency="EUR") == declined
    )
    assert ledger.store.payments("authorization") == ledger.store.payments("charge") == []


def test_settlement_webhooks_pending_then_settled(ledger: Ledger, clock: ManualClock) -> None:
    auth = hold(ledger, amount=700)
    assert ledger.payment(auth)["settlement"] == "NONE"
    call(ledger, "capture", "c1", auth, amount_cents=700)
    assert (ledger.payment(auth)["settlement"], ledger.payment(auth)["settlement_seq"]) == (
        "PENDING", 1,
    )  # fmt: skip
    pending = [json.loads(w.body) for w in ledger.store.due_webhooks(clock.now(), 10)]
    assert len(pending) == 1
    body = pending[0]
    assert set(body) == {"event_id", "type", "authorization_ref", "reference", "amount_cents",
                         "seq", "at"}  # fmt: skip
    assert (body["type"], body["authorization_ref"], body["reference"]) == (
        "capture.pending", auth, "ref-auth-1",
    )  # fmt: skip
    assert (body["amount_cents"], body["seq"]) == (700, 1)
    clock.advance(5)
    final = json.loads(ledger.store.due_webhooks(clock.now(), 10)[1].body)
    assert (final["type"], final["seq"]) == ("capture.settled", 2)
    assert ledger.payment(auth)["settlement"] == "SETTLED"


def test_duplicated_and_reordered_webhooks(ledger: Ledger, clock: ManualClock) -> None:
    ledger.modes.duplicate_rate, ledger.modes.reorder = 1.0, True
    auth = hold(ledger)
    call(ledger, "capture", "c1", auth, amount_cents=1000)
    now = [json.loads(w.body) for w in ledger.store.due_webhooks(clock.now(), 10)]
    assert [(b["type"], b["seq"]) for b in now] == [("capture.settled", 2)] * 2
    assert now[0]["event_id"] == now[1]["event_id"]  # a duplicate is the same event
    assert ledger.payment(auth)["settlement"] == "SETTLED"  # settled at once
    clock.advance(5)
    later = [json.loads(w.body)["type"] for w in ledger.store.due_webhooks(clock.now(), 10)]
    assert later.count("capture.pending") == 2  # the stale "pending", late, twice


def test_failed_settlement(ledger: Ledger, clock: ManualClock) -> None:
    ledger.modes.settle_fail_rate = 1.0
    auth = hold(ledger)
    call(ledger, "capture", "c1", auth, amount_cents=1000)
    clock.advance(5)
    types = [json.loads(w.body)["type"] for w in ledger.store.due_webhooks(clock.now(), 10)]
    assert types == ["capture.pending", "capture.settlement_failed"]
    assert ledger.payment(auth)["settlement"] == "FAILED"


def test_a_forced_timeout_acts_then_the_replay_has_the_answer(ledger: Ledger) -> None:
    auth = hold(ledger)
    ledger.forced_timeouts["capture"] = 1
    assert call(ledger, "capture", "c1", auth, amount_cents=1000) == TIMEOUT
    assert ledger.store.real_captures() == {auth: 1}  # it acted
    answer = call(ledger, "capture", "c1", auth, amount_cents=1000)
    assert answer.status == 201 and answer.body["id"].startswith("cap_")
    assert ledger.store.real_captures() == {auth: 1}
    assert ledger.store.calls()["capture"] == 2


def test_random_timeouts_act_half_of_the_time(ledger: Ledger) -> None:
    ledger.modes.timeout_rate = 1.0
    answers = [
        call(ledger, "authorize", f"k{n}", reference="r", amount_cents=5, currency="EUR")
        for n in range(40)
    ]
    assert all(a == TIMEOUT for a in answers)
    acted = len(ledger.store.payments("authorization"))
    assert 5 < acted < 35  # some acted (answer stored), some did nothing at all
    ledger.modes.timeout_rate = 0.0
    replays = [
        call(ledger, "authorize", f"k{n}", reference="r", amount_cents=5, currency="EUR")
        for n in range(40)
    ]
    assert len({a.body["id"] for a in replays}) == 40  # one hold per key, no more
    assert len(ledger.store.payments("authorization")) == 40


def test_a_call_that_dies_midway_leaves_nothing(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The capture's rows, its stored answer and its webhooks commit together: an error
    after the movement was written (as a kill would) rolls all of it back."""
    auth = hold(ledger)

    def die(*_: object) -> None:
        raise KeyboardInterrupt  # not an Exception: like the process going away

    monkeypatch.setattr(ledger.store, "queue_webhook", die)
    with pytest.raises(KeyboardInterrupt):
        call(ledger, "capture", "c1", auth, amount_cents=1000)
    monkeypatch.undo()
    assert ledger.store.real_captures() == {}
    assert ledger.store.answer("c1") is None
    assert ledger.payment(auth)["captured_cents"] == 0
    assert call(ledger, "capture", "c1", auth, amount_cents=1000).status == 201


def test_everything_survives_closing_and_reopening_the_store(
    tmp_path: Path, clock: ManualClock
) -> None:
    path = tmp_path / "durable.sqlite3"
    store = Store(path)
    ledger = Ledger(store, FailureModes(settle_delay_s=5.0), clock)
    auth, other = hold(ledger, "a1"), hold(ledger, "a2")
    captured = call(ledger, "capture", "c1", auth, amount_cents=1000)
    call(ledger, "refund", "r1", payment=auth, amount_cents=300)
    call(ledger, "cancel", "x1", other)
    pending = [w.event_id for w in store.pending_webhooks()]
    store.close()

    reopened = Ledger(Store(path), FailureModes(settle_delay_s=5.0), clock)
    assert call(reopened, "capture", "c1", auth, amount_cents=1000) == captured
    again = call(reopened, "capture", "c9", auth, amount_cents=1000)
    assert again.body["error"] == "not_capturable"
    view = reopened.payment(auth)
    assert (view["captured_cents"], view["refunded_cents"], view["settlement"]) == (
        1000, 300, "PENDING",
    )  # fmt: skip
    assert reopened.payment(other)["cancelled"] is True
    assert [w.event_id for w in reopened.store.pending_webhooks()] == pending
    assert reopened.store.calls() == {"authorize": 2, "capture": 3, "refund": 1, "cancel": 1}
    assert reopened.store.real_captures() == {auth: 1}
    reopened.store.close()


def test_stats(ledger: Ledger) -> None:
    auth, _open = hold(ledger, "a1"), hold(ledger, "a2")
    call(ledger, "capture", "c1", auth, amount_cents=1000)
    stats = ledger.stats()
    assert stats["calls"] == {"authorize": 2, "capture": 1}
    assert stats["real_captures"] == {auth: 1}
    assert stats["captured_more_than_once"] == 0
    assert stats["open_authorizations"] == 1
    assert stats["webhooks"] == {"pending": 2, "delivered": 0}
