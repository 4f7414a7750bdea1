"""The purchase machine (``backend/domain/machine.py``) as a pure function: every
transition of the table, the money it asks for, what the customer is told, and the
guarantee that no handler moves a purchase along a path the table does not list."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest

from backend.domain import machine
from backend.domain.events import (
    ActivationCancelled,
    ActivationFailed,
    ActivationSucceeded,
    CaptureAnswered,
    CustomerCancel,
    DeactivationAnswered,
    DeadlinePassed,
    Dispatched,
    DispatchRejected,
    Event,
    ExpiryDue,
    HoldDeclined,
    HoldPlaced,
    ManualActivationRequested,
    ManualActivationSucceeded,
    MoneyIntent,
    NonPayment,
    PaymentView,
    PermanentFailure,
    Policy,
    PreExpiryDue,
    Progress,
    PurchaseView,
    ReleaseAnswered,
    SubscriptionEndDue,
)
from backend.domain.states import OpKind, PaymentState, PurchaseState

PS, PAY = PurchaseState, PaymentState
NOW = 1_800_000_000.0
DAY = 86_400.0
HOLD = PaymentView(PAY.HELD_FOR_ACTIVATION, "card", 4900, authorization_ref="auth_1")
COLLECTED = PaymentView(
    PAY.HELD_FOR_ACTIVATION, "direct_debit", 4900, 4900, authorization_ref="ch_1"
)


def purchase(state: PurchaseState = PS.ACTIVATING, **kw: object) -> PurchaseView:
    base = PurchaseView(
        id="p1",
        state=state,
        service_id="climate_plus",
        duration_model="permanent",
        duration_days=None,
        price_cents=4900,
        activation_id="a1",
        start_at=NOW - 10,
        payment=HOLD,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def templates(step: machine.Step) -> list[str]:
    return [n.template for n in step.notices]


# ---------------------------------------------------------------- the table holds
EVERY_EVENT: list[Event] = [
    HoldPlaced("auth_2"),
    HoldPlaced("ch_2", collected=True),
    HoldDeclined("card_declined"),
    CaptureAnswered(True),
    CaptureAnswered(False, "expired"),
    ReleaseAnswered(OpKind.CANCEL, True, 0, PAY.CANCELLED),
    ReleaseAnswered(OpKind.CANCEL, False, 0, PAY.CANCELLED),
    ReleaseAnswered(OpKind.REFUND, True, 4900, PAY.REFUNDED),
    Dispatched(),
    DispatchRejected("activation.request", 422, "bad vin"),
    DispatchRejected("deactivation.request", 422, "bad vin"),
    ActivationSucceeded(),
    ActivationFailed("persistent_iot_failure", {"dtcs": ["P0A80"]}),
    ActivationCancelled(),
    DeadlinePassed(None),
    DeadlinePassed({"state": "SUCCEEDED"}),
    DeadlinePassed({"state": "FAILED", "failure_category": "vehicle_state"}),
    Progress("activation.accepted"),
    ManualActivationRequested(),
    ManualActivationSucceeded(),
    PermanentFailure("T-000001"),
    PreExpiryDue(),
    ExpiryDue(),
    SubscriptionEndDue(),
    CustomerCancel("withdrawal_within_14_days", 4900, NOW, False, {}, "refund"),
    NonPayment("2026-11", NOW - DAY, 900, "card_declined"),
    DeactivationAnswered("succeeded"),
    DeactivationAnswered("failed"),
]


@pytest.mark.parametrize("event", EVERY_EVENT, ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("model", ["temporary", "permanent", "subscription"])
def test_no_handler_moves_a_purchase_outside_the_table(event: Event, model: str) -> None:
    """Every event in every state, for every payment shape: a decision, and any move it
    makes is one ``TRANSITIONS`` lists (``step`` raises otherwise)."""
    payments = [HOLD, COLLECTED, PaymentView(PAY.INITIATED, "card", 4900), None]
    for state, payment in itertools.product(PS, payments):
        view = purchase(
            state, duration_model=model, duration_days=3 if model == "temporary" else None,
            payment=payment, expires_at=NOW - 1, ends_at=NOW - 1,
        )  # fmt: skip
        if payment is None and type(event) in NEEDS_PAYMENT:
            continue  # every purchase these events reach has a payment
        decided = machine.step(view, event, NOW)
        if decided.state is not None:
            assert decided.state in machine.TRANSITIONS[type(event)][state]


NEEDS_PAYMENT = {HoldPlaced, HoldDeclined, CaptureAnswered, ReleaseAnswered}
NEEDS_PAYMENT |= {ActivationSucceeded, DeadlinePassed}


def test_sources_reads_the_table() -> None:
    assert machine.sources(Dispatched, PS.ACTIVATING) == {PS.ACTIVATION_QUEUED, PS.SCHEDULED}


def test_a_move_outside_the_table_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    def rogue(out: machine._Out, event: object) -> None:
        out.move(PS.ACTIVE)

    monkeypatch.setattr(machine, "HANDLERS", {**machine.HANDLERS, Progress: rogue})
    with pytest.raises(machine.IllegalTransition, match="Progress: ACTIVATING -> ACTIVE"):
        machine.step(purchase(), Progress("x"), NOW)


# ---------------------------------------------------------------- the payment
def test_hold_placed_queues_the_activation() -> None:
    view = purchase(PS.PAYMENT_PENDING, payment=PaymentView(PAY.INITIATED, "card", 4900))
    decided = machine.step(view, HoldPlaced("auth_9"), NOW)
    assert decided.state is PS.ACTIVATION_QUEUED
    assert decided.payment == {"authorization_ref": "auth_9", "state": PAY.HELD_FOR_ACTIVATION}
    assert [(g.kind, g.available_at) for g in decided.gateway] == [("activation.request", NOW)]
    assert decided.money == ()


def test_hold_placed_for_later_schedules_it() -> None:
    view = purchase(PS.PAYMENT_PENDING, start_at=NOW + DAY)
    decided = machine.step(view, HoldPlaced("auth_9"), NOW)
    assert decided.state is PS.SCHEDULED
    assert decided.gateway[0].available_at == NOW + DAY


@pytest.mark.parametrize(
    ("collected", "intent"),
    [(False, MoneyIntent(OpKind.CANCEL, 0, PAY.CANCELLED)),
     (True, MoneyIntent(OpKind.REFUND, 4900, PAY.REFUNDED))],
)  # fmt: skip
def test_a_hold_for_a_purchase_that_ended_goes_back(collected: bool, intent: MoneyIntent) -> None:
    view = purchase(PS.PAYMENT_FAILED, payment=PaymentView(PAY.PENDING, "card", 4900))
    decided = machine.step(view, HoldPlaced("auth_9", collected), NOW)
    assert decided.state is None
    assert decided.money == (intent,)
    assert decided.gateway == ()


def test_declined_fails_the_payment_and_says_so() -> None:
    view = purchase(PS.PAYMENT_PENDING, payment=PaymentView(PAY.PENDING, "card", 4900))
    decided = machine.step(view, HoldDeclined("card_declined"), NOW)
    assert (decided.state, decided.payment["state"]) == (PS.PAYMENT_FAILED, PAY.FAILED_NO_CHARGE)
    assert templates(decided) == ["payment_declined"]


def test_the_charged_notice_waits_for_the_capture() -> None:
    succeeded = machine.step(purchase(), ActivationSucceeded(), NOW)
    assert succeeded.state is PS.ACTIVE
    assert succeeded.money == (MoneyIntent(OpKind.CAPTURE, 4900, PAY.CHARGED),)
    assert templates(succeeded) == []
    captured = machine.step(purchase(PS.ACTIVE), CaptureAnswered(True), NOW)
    assert captured.payment["state"] is PAY.CHARGED
    assert [n.ctx["price"] for n in captured.notices] == ["You are charged 49.00 EUR."]


def test_a_refused_capture_tells_the_truth() -> None:
    decided = machine.step(purchase(PS.ACTIVE), CaptureAnswered(False, "expired"), NOW)
    assert decided.payment["state"] is PAY.FAILED_NO_CHARGE
    assert decided.ticket is not None and decided.ticket.kind == "capture_failed"
    assert [n.template for n in decided.notices] == ["activation_success_not_charged"]


def test_direct_debit_success_keeps_what_was_collected() -> None:
    decided = machine.step(purchase(payment=COLLECTED), ActivationSucceeded(), NOW)
    assert decided.money == ()
    assert decided.payment == {"state": PAY.CHARGED}
    assert [n.ctx["price"] for n in decided.notices] == ["You are charged 49.00 EUR."]


def test_subscription_success_releases_the_card_check() -> None:
    view = purchase(duration_model="subscription")
    decided = machine.step(view, ActivationSucceeded(), NOW)
    assert decided.money == (MoneyIntent(OpKind.CANCEL, 0, PAY.CANCELLED),)
    assert decided.purchase["billable_from"] == NOW


# ---------------------------------------------------------------- failures give money back
@pytest.mark.parametrize(
    ("payment", "money"),
    [
        (HOLD, (MoneyIntent(OpKind.CANCEL, 0, PAY.CANCELLED),)),
        (COLLECTED, (MoneyIntent(OpKind.REFUND, 4900, PAY.REFUNDED),)),
        (PaymentView(PAY.PENDING, "card", 4900), ()),  # its answer releases it
    ],
    ids=["hold", "collected", "unanswered"],
)
def test_a_failed_activation_costs_nothing(payment: PaymentView, money: tuple[object]) -> None:
    event = ActivationFailed("persistent_iot_failure", {"dtcs": ["P0A80"]})
    decided = machine.step(purchase(payment=payment), event, NOW)
    assert decided.state is PS.FAILED_NO_CHARGE
    assert decided.money == money
    assert decided.ticket is not None and decided.ticket.diagnostics == {"dtcs": ["P0A80"]}
    assert templates(decided) == ["activation_failed_initial", "ticket_created"]
    assert decided.notices[0].critical and decided.notices[0].with_ticket


def test_a_duplicate_outcome_is_stale() -> None:
    assert machine.step(purchase(PS.ACTIVE), ActivationSucceeded(), NOW) == machine.STALE
    assert machine.step(purchase(PS.FAILED_NO_CHARGE), ActivationFailed(), NOW) == machine.STALE


def test_success_after_a_cancel_switches_the_feature_off_again() -> None:
    decided = machine.step(purchase(PS.CANCELLED), ActivationSucceeded(), NOW)
    assert decided.outcome == "stale"
    assert [g.kind for g in decided.gateway] == ["deactivation.request"]
    assert decided.purchase == {"deactivation_state": "QUEUED"}


def test_dispatch_rejected_fails_without_charge() -> None:
    decided = machine.step(
        purchase(PS.ACTIVATION_QUEUED), DispatchRejected("activation.request", 422, "vin"), NOW
    )
    assert decided.state is PS.FAILED_NO_CHARGE
    assert decided.ticket is not None and decided.ticket.kind == "dispatch_rejected"


def test_deadline_escalates_when_the_gateway_knows_nothing() -> None:
    decided = machine.step(purchase(), DeadlinePassed(None), NOW)
    assert decided.state is PS.ESCALATED and decided.drop_undelivered
    assert decided.ticket is not None and decided.ticket.kind == "activation_deadline"
    assert decided.money == (MoneyIntent(OpKind.CANCEL, 0, PAY.CANCELLED),)


def test_deadline_takes_the_gateways_word() -> None:
    assert machine.step(purchase(), DeadlinePassed({"state": "SUCCEEDED"}), NOW).state is PS.ACTIVE
    failed = machine.step(purchase(), DeadlinePassed({"state": "FAILED"}), NOW)
    assert failed.state is PS.FAILED_NO_CHARGE


# ---------------------------------------------------------------- support
def test_manual_activation_is_free_and_resolves_the_tickets() -> None:
    view = purchase(PS.FAILED_NO_CHARGE, payment=replace(HOLD, state=PAY.CANCELLED))
    asked = machine.step(view, ManualActivationRequested(), NOW)
    assert [g.kind for g in asked.gateway] == ["manual_activation.request"]
    done = machine.step(view, ManualActivationSucceeded(), NOW)
    assert done.state is PS.MANUALLY_ACTIVATED and done.money == ()
    assert done.resolve_tickets == "manual_activation"
    assert templates(done) == ["manual_resolution_success"]


def test_permanent_failure_refunds_what_is_kept() -> None:
    view = purchase(PS.ESCALATED, payment=COLLECTED)
    decided = machine.step(view, PermanentFailure("T-1"), NOW, Policy(apology_offer="10%"))
    assert decided.money == (MoneyIntent(OpKind.REFUND, 4900, PAY.REFUNDED),)
    assert decided.notices[0].ctx == {"ticket": "T-1", "offer": "10%"}


# ---------------------------------------------------------------- the service's life
@pytest.mark.parametrize(("days", "told_before_s"), [(1, DAY / 2), (2, DAY), (30, 3 * DAY)])
def test_every_temporary_service_is_told_before_it_ends(days: int, told_before_s: float) -> None:
    view = purchase(duration_model="temporary", duration_days=days)
    decided = machine.step(view, ActivationSucceeded(), NOW)
    timers = {t.kind: t.due_at for t in decided.timers}
    assert timers["expire"] == NOW + days * DAY
    assert timers["expire"] - timers["pre_expiry_notice"] == told_before_s


def test_expiry_ends_the_service_and_switches_it_off() -> None:
    view = purchase(PS.ACTIVE, expires_at=NOW - 1)
    decided = machine.step(view, ExpiryDue(), NOW)
    assert decided.state is PS.EXPIRED
    assert [g.kind for g in decided.gateway] == ["deactivation.request"]
    assert templates(decided) == ["service_deactivated"]
    switching_off = replace(view, state=PS.EXPIRED, deactivation_id="d1", deactivation_state="SENT")
    done = machine.step(switching_off, DeactivationAnswered("succeeded"), NOW)
    assert done.state is PS.DEACTIVATED


def test_withdrawal_refunds_and_ends() -> None:
    event = CustomerCancel("withdrawal_within_14_days", 4900, NOW, False, {"rule": "x"}, "ok")
    view = purchase(PS.ACTIVE, payment=replace(HOLD, state=PAY.CHARGED, captured_cents=4900))
    decided = machine.step(view, event, NOW)
    assert decided.state is PS.CANCELLED
    assert decided.money == (MoneyIntent(OpKind.REFUND, 4900, PAY.REFUNDED),)
    assert decided.timeline[-1].detail == {"answer": {"rule": "x", "state": "CANCELLED"}}
    assert templates(decided) == ["service_deactivated", "cancellation_confirmed"]


def test_a_subscription_cancelled_ends_at_month_end() -> None:
    event = CustomerCancel("subscription_end_of_month", 0, NOW + DAY, False, {}, "ok")
    decided = machine.step(purchase(PS.ACTIVE, duration_model="subscription"), event, NOW)
    assert decided.state is None
    assert [(t.kind, t.due_at) for t in decided.timers] == [("subscription_end", NOW + DAY)]
    assert machine.step(purchase(PS.ACTIVE), SubscriptionEndDue(), NOW) == machine.STALE


def test_non_payment_ends_the_subscription_at_the_month_end() -> None:
    view = purchase(PS.ACTIVE, duration_model="subscription")
    decided = machine.step(view, NonPayment("2026-11", NOW - DAY, 900, "card_declined"), NOW)
    assert decided.state is PS.CANCELLED
    assert decided.purchase["ends_at"] == NOW - DAY
    assert decided.purchase["cancel_reason"] == "payment_failed"
    assert decided.ticket is not None and decided.ticket.kind == "subscription_charge_failed"


def test_pre_expiry_notice_only_while_on() -> None:
    view = purchase(PS.ACTIVE, expires_at=NOW + DAY)
    assert templates(machine.step(view, PreExpiryDue(), NOW)) == ["expiry_notice"]
    assert machine.step(replace(view, state=PS.CANCELLED), PreExpiryDue(), NOW) == machine.STALE


def test_the_docs_show_the_table() -> None:
    """docs/backend.md draws exactly ``TRANSITIONS``: a newcomer reads the real table."""
    from pathlib import Path

    page = (Path(__file__).parents[2] / "docs" / "backend.md").read_text()
    missing = [row for row in machine.table_rows() if row not in page]
    assert not missing, "docs/backend.md lacks:\n" + "\n".join(missing)
