"""The purchase state machine as a pure function.

    step(purchase, event, now, policy) -> Step

No I/O, no clock, no ids: the view of a purchase and its payment (``PurchaseView``), one
event and the time go in; the decision comes out (``Step``: the new state, the columns
that change, money intents, gateway requests, notices, a ticket, timers, timeline
entries). The unit of work (``backend/store/unit_of_work.py``) loads the view, applies
the step and commits it in one transaction; the provider, the gateway and the
customer's channels are called by the workers after that commit.

``TRANSITIONS`` is the one table of the moves a purchase makes: event → {from: to}.
An event that finds its purchase in a state the table has no row for moves nothing: a
duplicate or late event is a no-op (``stale``), never an error; ``step`` refuses a move
the table does not list (a bug in a handler, not a runtime condition). The payment
moves here too, by the handbook's names: a hold released is ``CANCELLED``, money given
back after it was taken is ``REFUNDED``, a payment that never held anything is
``FAILED_NO_CHARGE``; the purchase's own state tells the outcome beside it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from backend.domain.events import (
    STALE,
    ActivationCancelled,
    ActivationFailed,
    ActivationSucceeded,
    CaptureAnswered,
    CustomerCancel,
    DeactivationAnswered,
    DeadlinePassed,
    Dispatched,
    DispatchRejected,
    Entry,
    Event,
    ExpiryDue,
    GatewayRequest,
    HoldDeclined,
    HoldPlaced,
    ManualActivationRequested,
    ManualActivationSucceeded,
    MoneyIntent,
    NonPayment,
    Notice,
    PaymentView,
    PermanentFailure,
    Policy,
    PreExpiryDue,
    Progress,
    PurchaseView,
    ReleaseAnswered,
    Step,
    SubscriptionEndDue,
    TicketRequest,
    Timer,
)
from backend.domain.months import next_month_start
from backend.domain.states import (
    HOLD_OPEN,
    IN_FLIGHT,
    ActivationOutcome,
    OpKind,
    PaymentState,
    PurchaseState,
)
from protocol.timeutil import format_ts

PS = PurchaseState
PAY = PaymentState
DAY_S = 86_400.0
ON = (PS.ACTIVE, PS.MANUALLY_ACTIVATED)  # the feature is on
NOT_ACTIVATED = (PS.FAILED_NO_CHARGE, PS.ESCALATED)  # support may still act on it
WAITING = (PS.ACTIVATION_QUEUED, PS.SCHEDULED)  # the request has not reached the gateway


def _all(sources: tuple[PS, ...] | frozenset[PS], *to: PS) -> dict[PS, tuple[PS, ...]]:
    return {s: to for s in sources}


# event → {from: to}. The only moves a purchase makes; docs/backend.md draws them.
TRANSITIONS: Mapping[type[Event], Mapping[PS, tuple[PS, ...]]] = {
    HoldPlaced: {PS.PAYMENT_PENDING: (PS.ACTIVATION_QUEUED, PS.SCHEDULED)},
    HoldDeclined: {PS.PAYMENT_PENDING: (PS.PAYMENT_FAILED,)},
    Dispatched: _all(WAITING, PS.ACTIVATING),
    ActivationSucceeded: _all(IN_FLIGHT, PS.ACTIVE),
    ActivationFailed: _all(IN_FLIGHT, PS.FAILED_NO_CHARGE),
    DispatchRejected: _all(IN_FLIGHT, PS.FAILED_NO_CHARGE),
    ActivationCancelled: _all(IN_FLIGHT, PS.CANCELLED),
    DeadlinePassed: {
        PS.PAYMENT_PENDING: (PS.PAYMENT_FAILED,),
        **_all(IN_FLIGHT - {PS.PAYMENT_PENDING}, PS.ACTIVE, PS.FAILED_NO_CHARGE, PS.ESCALATED),
    },
    ManualActivationSucceeded: _all(NOT_ACTIVATED, PS.MANUALLY_ACTIVATED),
    ExpiryDue: _all(ON, PS.EXPIRED),
    SubscriptionEndDue: _all(ON, PS.CANCELLED),
    CustomerCancel: {PS.SCHEDULED: (PS.CANCELLED,), **_all(ON, PS.CANCELLED)},
    NonPayment: _all(ON, PS.CANCELLED),
    DeactivationAnswered: {PS.EXPIRED: (PS.DEACTIVATED,)},
}


class IllegalTransition(Exception):
    """A handler moved a purchase along a path ``TRANSITIONS`` does not list."""


def table_rows() -> list[str]:
    """``TRANSITIONS`` as markdown table rows, one per event and target set (the states
    in their declared order): docs/backend.md shows exactly these."""
    order = list(PurchaseState)
    rows = []
    for event, moves in TRANSITIONS.items():
        by_target: dict[tuple[PS, ...], list[PS]] = {}
        for from_ in sorted(moves, key=order.index):
            by_target.setdefault(moves[from_], []).append(from_)
        for to, froms in by_target.items():
            left, right = ", ".join(f.value for f in froms), " / ".join(t.value for t in to)
            rows.append(f"| `{event.__name__}` | {left} | {right} |")
    return rows


def sources(event: type[Event], to: PurchaseState) -> frozenset[PurchaseState]:
    """The states ``event`` moves to ``to`` (for a batch applied as one guarded UPDATE)."""
    return frozenset(s for s, targets in TRANSITIONS[event].items() if to in targets)


# ---------------------------------------------------------------- entry point
def step(view: PurchaseView, event: Event, now: float, policy: Policy | None = None) -> Step:
    out = _Out(view, event, now, policy or Policy())
    HANDLERS[type(event)](out, event)
    decided = out.result()
    if decided.state is not None and decided.state not in _targets(type(event), view.state):
        raise IllegalTransition(
            f"{type(event).__name__}: {view.state.value} -> {decided.state.value}"
        )
    return decided


def _targets(event: type[Event], state: PurchaseState) -> tuple[PurchaseState, ...]:
    return TRANSITIONS.get(event, {}).get(state, ())


class _Out:
    """Accumulates one step's decision."""

    def __init__(self, view: PurchaseView, event: Event, now: float, policy: Policy) -> None:
        self.view, self.event, self.now, self.policy = view, event, now, policy
        self.decided = Step()
        self.purchase: dict[str, Any] = {}
        self.payment_changes: dict[str, Any] = {}

    @property
    def payment(self) -> PaymentView:
        assert self.view.payment is not None, f"purchase {self.view.id} has no payment"
        return self.view.payment

    def moves(self, event: Event | None = None) -> bool:
        """Whether the table lets ``event`` (default: this step's) move this purchase."""
        return bool(_targets(type(event or self.event), self.view.state))

    def get(self, column: str) -> Any:
        """A purchase column as this step leaves it."""
        return self.purchase.get(column, getattr(self.view, column))

    def move(self, state: PurchaseState) -> None:
        self._add(state=state)

    def set(self, **columns: Any) -> None:
        self.purchase.update(columns)

    def pay(self, **columns: Any) -> None:
        self.payment_changes.update(columns)

    def stale(self) -> None:
        self._add(outcome=STALE.outcome)

    def money(self, kind: OpKind, amount_cents: int, target: PaymentState) -> None:
        self._add(money=(*self.decided.money, MoneyIntent(kind, amount_cents, target)))

    def ask_gateway(self, kind: str, action: str, at: float) -> None:
        self._add(gateway=(*self.decided.gateway, GatewayRequest(kind, action, at)))

    def tell(
        self, template: str, critical: bool = False, with_ticket: bool = False, **ctx: str
    ) -> None:
        notice = Notice(template, ctx, critical, with_ticket)
        self._add(notices=(*self.decided.notices, notice))

    def ticket(self, kind: str, diagnostics: Mapping[str, Any] | None = None, **extra: Any) -> None:
        self._add(ticket=TicketRequest(kind, diagnostics, extra))

    def timer(self, kind: str, key: str, due_at: float) -> None:
        self._add(timers=(*self.decided.timers, Timer(kind, key, due_at)))

    def note(self, kind: str, **detail: Any) -> None:
        self._add(timeline=(*self.decided.timeline, Entry(kind, detail)))

    def drop_undelivered(self) -> None:
        self._add(drop_undelivered=True)

    def resolve_tickets(self, resolution: str) -> None:
        self._add(resolve_tickets=resolution)

    def _add(self, **fields: Any) -> None:
        self.decided = replace(self.decided, **fields)

    def result(self) -> Step:
        return replace(self.decided, purchase=self.purchase, payment=self.payment_changes)


Handler = Callable[[_Out, Any], None]


# ---------------------------------------------------------------- the payment
def _hold_placed(out: _Out, ev: HoldPlaced) -> None:
    pay, view = out.payment, out.view
    out.pay(authorization_ref=ev.ref, state=PAY.HELD_FOR_ACTIVATION)
    if ev.collected:  # direct debit: the money is taken now and settles later
        out.pay(captured_cents=pay.amount_cents)
        if pay.settlement == "NONE":
            out.pay(settlement="PENDING")
    if not out.moves():  # the purchase ended meanwhile (deadline): the money goes back
        if ev.collected:
            out.money(OpKind.REFUND, pay.amount_cents, PAY.REFUNDED)
        else:
            out.money(OpKind.CANCEL, 0, PAY.CANCELLED)
        return
    out.move(PS.SCHEDULED if view.start_at > out.now else PS.ACTIVATION_QUEUED)
    out.ask_gateway("activation.request", "activate", max(out.now, view.start_at))
    out.note("payment.collected" if ev.collected else "payment.held", amount_cents=pay.amount_cents)


def _hold_declined(out: _Out, ev: HoldDeclined) -> None:
    out.pay(state=PAY.FAILED_NO_CHARGE)
    if out.moves():
        out.move(PS.PAYMENT_FAILED)
        out.tell("payment_declined")


def _capture_answered(out: _Out, ev: CaptureAnswered) -> None:
    pay = out.payment
    if ev.approved:
        out.pay(state=PAY.CHARGED, captured_cents=pay.amount_cents)
        if pay.settlement == "NONE":
            out.pay(settlement="PENDING")
        out.note("payment.captured", amount_cents=pay.amount_cents)
        out.tell("activation_success", price=_charged(pay.amount_cents))
        return
    # the feature is on but the hold could not be captured: CaaS carries it, ops follow up
    out.pay(state=PAY.FAILED_NO_CHARGE)
    out.ticket("capture_failed", reason=ev.reason)
    out.tell("activation_success_not_charged")


def _release_answered(out: _Out, ev: ReleaseAnswered) -> None:
    if not ev.approved:
        if ev.kind is OpKind.CANCEL:
            out.ticket("release_failed", payment_state=out.payment.state.value)
        return
    if ev.kind is OpKind.REFUND:
        out.pay(refunded_cents=out.payment.refunded_cents + ev.amount_cents)
    out.pay(state=ev.target)
    out.note(f"payment.{ev.kind.value}", amount_cents=ev.amount_cents)


def _give_back(out: _Out) -> None:
    """Whatever the purchase holds goes back: an open hold is cancelled, money taken is
    refunded. An authorization still unanswered is released by its answer."""
    pay = out.view.payment
    if pay is None or pay.hold_unanswered:
        return
    if pay.kept_cents > 0:
        out.money(OpKind.REFUND, pay.kept_cents, PAY.REFUNDED)
    elif pay.state in HOLD_OPEN:
        out.money(OpKind.CANCEL, 0, PAY.CANCELLED)
    elif pay.authorization_ref is None and pay.state is not PAY.FAILED_NO_CHARGE:
        out.pay(state=PAY.FAILED_NO_CHARGE)  # nothing was ever held


# ---------------------------------------------------------------- the activation
def _dispatched(out: _Out, ev: Dispatched) -> None:
    if out.moves():
        out.move(PS.ACTIVATING)
    else:
        out.stale()


def _succeeded(out: _Out, ev: ActivationSucceeded) -> None:
    view = out.view
    if not out.moves(ev):
        if view.state is PS.CANCELLED and view.activated_at is None:
            _deactivate(out)  # cancelled while scheduled, but the command went out
        out.stale()
        return
    out.move(PS.ACTIVE)
    out.set(activated_at=out.now)
    _finished(out, ActivationOutcome.SUCCEEDED, ev.attempts)
    pay = out.payment
    if view.duration_model == "subscription":
        # billed monthly in arrears: the hold was a card check, released now
        out.money(OpKind.CANCEL, 0, PAY.CANCELLED)
        out.tell("activation_success", price=_monthly(view.price_cents))
    elif pay.kept_cents > 0:  # direct debit: taken at purchase, now it is kept
        out.pay(state=PAY.CHARGED)
        out.tell("activation_success", price=_charged(pay.kept_cents))
    else:  # the customer hears about it once the capture is confirmed
        out.money(OpKind.CAPTURE, pay.amount_cents, PAY.CHARGED)
    _start_clock(out, manual=False)
    out.note("activation.succeeded")


def _failed(out: _Out, ev: ActivationFailed) -> None:
    if not out.moves(ev):
        out.stale()
        return
    _fail(out, PS.FAILED_NO_CHARGE, ev.category, "activation_failed", ev.diagnostics, ev.attempts)


def _fail(
    out: _Out,
    state: PurchaseState,
    category: str | None,
    ticket_kind: str,
    diagnostics: Mapping[str, Any] | None,
    attempts: int | None,
) -> None:
    """No charge: the money goes back, support gets a ticket, the customer is told."""
    out.move(state)
    out.set(failure_category=category)
    _finished(out, ActivationOutcome.FAILED, attempts)
    _give_back(out)
    out.ticket(ticket_kind, diagnostics)
    out.tell("activation_failed_initial", critical=True, with_ticket=True)
    out.tell("ticket_created", with_ticket=True)
    out.note("activation.failed", category=category)


def _cancelled(out: _Out, ev: ActivationCancelled) -> None:
    if not out.moves():
        out.stale()
        return
    out.move(PS.CANCELLED)
    _give_back(out)
    out.note("activation.cancelled")


def _dispatch_rejected(out: _Out, ev: DispatchRejected) -> None:
    if ev.request == "deactivation.request":
        _deactivation_failed(out, {"gateway_status": ev.status})
    elif ev.request != "activation.request":
        out.note("support.dispatch_rejected")
    elif out.moves():
        diagnostics = {"gateway_status": ev.status, "error": ev.detail}
        # the gateway refused the request: no attempt was made
        _fail(out, PS.FAILED_NO_CHARGE, "dispatch_rejected", "dispatch_rejected", diagnostics, 0)
    else:
        out.stale()


def _deadline(out: _Out, ev: DeadlinePassed) -> None:
    """Still in flight at the deadline: the gateway's word if it has one, else the
    payment fails (never held) or support takes over (escalated, without charge)."""
    if not out.moves():
        out.stale()
        return
    out.drop_undelivered()
    remote = dict(ev.gateway or {})
    diagnostics = remote.get("diagnostics")
    attempts = attempts_of(remote)
    if out.view.state is PS.PAYMENT_PENDING:  # never held: the gateway was never asked
        out.move(PS.PAYMENT_FAILED)  # a payment failure, not an activation outcome
        _give_back(out)
    elif remote.get("state") == "SUCCEEDED":
        _succeeded(out, ActivationSucceeded(attempts))
    elif remote.get("state") == "FAILED":
        diag = diagnostics if isinstance(diagnostics, dict) else None
        _failed(out, ActivationFailed(remote.get("failure_category"), diag, attempts))
    else:
        diag = {"gateway": remote or None}
        _fail(out, PS.ESCALATED, "deadline_exceeded", "activation_deadline", diag, attempts)


def attempts_of(activation: Mapping[str, Any]) -> int | None:
    """How many attempts the gateway's Activation (docs/spec.md §3) lists: its ``attempts`` is a
    list there, a count in the events (None: unknown)."""
    attempts = activation.get("attempts")
    if isinstance(attempts, list):
        return len(attempts)
    if type(attempts) is int and attempts >= 0:
        return attempts
    return None


def _finished(out: _Out, outcome: ActivationOutcome, attempts: int | None) -> None:
    """The activation's outcome, recorded by the first terminal answer only (the
    handbook's metrics count each activation once, by how it first ended)."""
    if out.view.activation_outcome is None:
        out.set(
            activation_outcome=outcome.value,
            activation_attempts=attempts,
            activation_finished_at=out.now,
        )


def _progress(out: _Out, ev: Progress) -> None:
    out.note(ev.kind, **ev.detail)


# ---------------------------------------------------------------- support
def _manual_requested(out: _Out, ev: ManualActivationRequested) -> None:
    if out.view.state not in NOT_ACTIVATED or out.view.support_activation_id is not None:
        out.stale()  # not failed, or asked already (the same request again)
        return
    out.ask_gateway("manual_activation.request", "activate", out.now)
    out.note("support.manual_activation")


def _manual_succeeded(out: _Out, ev: ManualActivationSucceeded) -> None:
    out.note("support.activation.succeeded")
    if not out.moves():
        out.stale()
        return
    out.move(PS.MANUALLY_ACTIVATED)
    out.set(activated_at=out.now)
    _start_clock(out, manual=True)
    out.resolve_tickets("manual_activation")
    out.tell("manual_resolution_success", with_ticket=True)


def _permanent_failure(out: _Out, ev: PermanentFailure) -> None:
    if out.view.state not in NOT_ACTIVATED:
        out.stale()
        return
    _give_back(out)
    out.tell("permanent_failure", ticket=ev.ticket, offer=out.policy.apology_offer)
    out.note("support.permanent_failure")


# ---------------------------------------------------------------- the service's life
def _start_clock(out: _Out, manual: bool) -> None:
    """Expiry timers for a temporary service; billing for a subscription (manual
    activation is free as promised: its billing starts the following month)."""
    view, now = out.view, out.now
    if view.duration_model == "temporary" and view.duration_days:
        length_s = view.duration_days * DAY_S
        expires = now + length_s
        out.set(expires_at=expires)
        if out.policy.expiry_notice_lead_s > 0:
            # a service shorter than the lead is told half-way through (1 day: 12 h before)
            lead_s = min(out.policy.expiry_notice_lead_s, length_s / 2)
            out.timer("pre_expiry_notice", f"notice:{view.id}", expires - lead_s)
        out.timer("expire", f"expire:{view.id}", expires)
    elif view.duration_model == "subscription":
        out.set(billable_from=next_month_start(now) if manual else now)


def _pre_expiry(out: _Out, ev: PreExpiryDue) -> None:
    expires = out.view.expires_at
    if out.view.state in ON and expires is not None and expires > out.now:
        out.tell("expiry_notice", date=format_ts(expires))
        out.note("service.expiry_notice")
    else:
        out.stale()


def _expiry(out: _Out, ev: ExpiryDue) -> None:
    expires = out.view.expires_at
    if out.moves() and expires is not None and expires <= out.now:
        _end_service(out, PS.EXPIRED, "expired")
    else:
        out.stale()


def _subscription_end(out: _Out, ev: SubscriptionEndDue) -> None:
    ends = out.view.ends_at
    if out.moves() and ends is not None and ends <= out.now:
        _end_service(out, PS.CANCELLED, out.view.cancel_reason or "cancelled")
    else:
        out.stale()


def _customer_cancel(out: _Out, ev: CustomerCancel) -> None:
    view = out.view
    if not out.moves():
        out.stale()
        return
    out.set(cancelled_at=out.now, cancel_reason="customer_withdrawal")
    if ev.rule == "scheduled_not_started":
        out.drop_undelivered()
        out.move(PS.CANCELLED)
        _give_back(out)
    elif view.duration_model == "subscription":
        reason = "customer_theft_cancel" if ev.stolen else "customer_cancel"
        out.set(cancel_reason=reason, ends_at=ev.effective_at)
        if ev.effective_at <= out.now:
            _end_service(out, PS.CANCELLED, reason)
        else:
            out.timer("subscription_end", f"subscription_end:{view.id}", ev.effective_at)
    else:
        if ev.refund_cents > 0:
            out.money(OpKind.REFUND, ev.refund_cents, PAY.REFUNDED)
        _end_service(out, PS.CANCELLED, "customer_withdrawal")
    state = out.decided.state or view.state
    out.note("purchase.cancel", answer={**ev.answer, "state": state.value})
    out.tell("cancellation_confirmed", outcome=ev.outcome)


def _non_payment(out: _Out, ev: NonPayment) -> None:
    """Billed up to the end of the refused month and not after: the service ends now."""
    out.ticket("subscription_charge_failed", month=ev.month, reason=ev.reason)
    out.tell("subscription_payment_failed", amount=_amount(ev.amount_cents), month=ev.month)
    ends = out.get("ends_at")
    if ends is None or ends > ev.month_end:
        out.set(ends_at=ev.month_end)
    if out.view.cancel_reason is None:
        out.set(cancel_reason="payment_failed", cancelled_at=out.now)
    if out.moves():
        _end_service(out, PS.CANCELLED, "payment_failed")


def _end_service(out: _Out, state: PurchaseState, reason: str) -> None:
    """The feature goes off now: state, end time, deactivation, notice."""
    end = min(out.now, out.view.expires_at or out.now)
    out.move(state)
    ends = out.get("ends_at")
    if ends is None or ends > end:
        out.set(ends_at=end)
    _deactivate(out)
    out.tell("service_deactivated", reason=reason, date=format_ts(end))
    out.note("service.ended", reason=reason)


def _deactivate(out: _Out) -> None:
    """Ask the gateway to switch the feature off (once per purchase)."""
    if out.view.deactivation_id is not None:
        return
    out.set(deactivation_state="QUEUED")
    out.ask_gateway("deactivation.request", "deactivate", out.now)
    out.note("deactivation.requested")


def _deactivation_answered(out: _Out, ev: DeactivationAnswered) -> None:
    out.note(f"deactivation.{ev.outcome}")
    if out.view.deactivation_state in ("SUCCEEDED", "FAILED"):
        out.stale()
    elif ev.outcome == "succeeded":
        out.set(deactivation_state="SUCCEEDED")
        if out.moves():
            out.move(PS.DEACTIVATED)
    else:
        _deactivation_failed(out, ev.diagnostics)


def _deactivation_failed(out: _Out, diagnostics: Mapping[str, Any] | None) -> None:
    """The gateway gave up (after its retries): support gets a ticket."""
    out.set(deactivation_state="FAILED")
    out.ticket("deactivation_failed", diagnostics)


# ---------------------------------------------------------------- money in words
def _amount(cents: int) -> str:
    return f"{cents / 100:.2f}"


def _monthly(cents: int) -> str:
    return f"Billed monthly in arrears: {_amount(cents)} EUR a month."


def _charged(cents: int) -> str:
    return f"You are charged {_amount(cents)} EUR."


HANDLERS: Mapping[type[Event], Handler] = {
    HoldPlaced: _hold_placed,
    HoldDeclined: _hold_declined,
    CaptureAnswered: _capture_answered,
    ReleaseAnswered: _release_answered,
    Dispatched: _dispatched,
    DispatchRejected: _dispatch_rejected,
    ActivationSucceeded: _succeeded,
    ActivationFailed: _failed,
    ActivationCancelled: _cancelled,
    DeadlinePassed: _deadline,
    Progress: _progress,
    ManualActivationRequested: _manual_requested,
    ManualActivationSucceeded: _manual_succeeded,
    PermanentFailure: _permanent_failure,
    PreExpiryDue: _pre_expiry,
    ExpiryDue: _expiry,
    SubscriptionEndDue: _subscription_end,
    CustomerCancel: _customer_cancel,
    NonPayment: _non_payment,
    DeactivationAnswered: _deactivation_answered,
}
__all__ = [
    "HANDLERS",
    "STALE",
    "TRANSITIONS",
    "IllegalTransition",
    "Step",
    "sources",
    "step",
]
