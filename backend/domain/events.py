"""What goes into the purchase machine and what comes out of it (``machine.step``).

In: a ``PurchaseView`` (the purchase and its payment as stored), one event, the time
and the ``Policy``. Out: a ``Step``: the purchase's new state and columns, the
payment's, and the effects the unit of work writes in the same transaction (money
intents, gateway requests through the outbox, notices, a ticket, timers, timeline
entries). All frozen: a step is a value, compared and logged as one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from backend.domain.states import OpKind, PaymentState, PurchaseState


# ---------------------------------------------------------------- the view
@dataclass(frozen=True)
class PaymentView:
    state: PaymentState
    method: str  # card (hold, then capture) | direct_debit (charged at once, refunded)
    amount_cents: int
    captured_cents: int = 0
    refunded_cents: int = 0
    authorization_ref: str | None = None
    settlement: str = "NONE"

    @property
    def kept_cents(self) -> int:
        return self.captured_cents - self.refunded_cents

    @property
    def hold_unanswered(self) -> bool:
        """The authorization (or immediate charge) was asked and not answered yet: its
        answer will find the purchase ended and give the money back itself."""
        return self.authorization_ref is None and self.state in (
            PaymentState.INITIATED,
            PaymentState.PENDING,
        )


@dataclass(frozen=True)
class PurchaseView:
    id: str
    state: PurchaseState
    service_id: str
    duration_model: str  # temporary | permanent | subscription
    duration_days: int | None
    price_cents: int
    activation_id: str
    start_at: float
    activated_at: float | None = None
    expires_at: float | None = None
    ends_at: float | None = None
    cancel_reason: str | None = None
    deactivation_id: str | None = None
    deactivation_state: str | None = None
    support_activation_id: str | None = None
    activation_outcome: str | None = None  # succeeded | failed, once decided
    payment: PaymentView | None = None


@dataclass(frozen=True)
class Policy:
    """The business settings a decision depends on (``BackendSettings`` at start)."""

    expiry_notice_lead_s: float = 3 * 86_400.0
    apology_offer: str = "20% off your next purchase with code SORRY20"


# ---------------------------------------------------------------- events
class Event:
    """Base of every event a purchase can receive."""


@dataclass(frozen=True)
class HoldPlaced(Event):
    """The provider approved the authorization (card: a hold) or the immediate charge
    (direct debit: ``collected``, the money is taken and settles later)."""

    ref: str
    collected: bool = False


@dataclass(frozen=True)
class HoldDeclined(Event):
    reason: str | None = None


@dataclass(frozen=True)
class CaptureAnswered(Event):
    approved: bool
    reason: str | None = None


@dataclass(frozen=True)
class ReleaseAnswered(Event):
    """The answer to a cancel (hold released) or a refund (money given back)."""

    kind: OpKind
    approved: bool
    amount_cents: int
    target: PaymentState
    reason: str | None = None


@dataclass(frozen=True)
class Dispatched(Event):
    """The gateway accepted the activation request (outbox relay)."""


@dataclass(frozen=True)
class DispatchRejected(Event):
    """The gateway refused a request for good (a 4xx): ``request`` is its outbox kind."""

    request: str
    status: int | None
    detail: str


@dataclass(frozen=True)
class ActivationSucceeded(Event):
    attempts: int | None = None  # the gateway's attempts (None: it did not say)


@dataclass(frozen=True)
class ActivationFailed(Event):
    category: str | None = None
    diagnostics: Mapping[str, Any] | None = None
    attempts: int | None = None


@dataclass(frozen=True)
class ActivationCancelled(Event):
    pass


@dataclass(frozen=True)
class DeadlinePassed(Event):
    """The activation deadline passed with the purchase still in flight; ``gateway`` is
    what the gateway said about the activation (None: nothing, or unreachable)."""

    gateway: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class ManualActivationRequested(Event):
    """Support asks the gateway again, under a new activation id."""


@dataclass(frozen=True)
class ManualActivationSucceeded(Event):
    pass


@dataclass(frozen=True)
class PermanentFailure(Event):
    """Support closes an activation ticket as impossible: every cent back, an apology."""

    ticket: str


@dataclass(frozen=True)
class PreExpiryDue(Event):
    pass


@dataclass(frozen=True)
class ExpiryDue(Event):
    pass


@dataclass(frozen=True)
class SubscriptionEndDue(Event):
    pass


@dataclass(frozen=True)
class CustomerCancel(Event):
    """A cancellation decided by the withdrawal rules (``withdrawal.decide``)."""

    rule: str
    refund_cents: int
    effective_at: float
    stolen: bool
    answer: Mapping[str, Any]  # what the API answered (kept for an idempotent replay)
    outcome: str  # the decision in words, for the customer


@dataclass(frozen=True)
class NonPayment(Event):
    """A subscription month could not be charged: the subscription ends."""

    month: str
    month_end: float
    amount_cents: int
    reason: str | None


@dataclass(frozen=True)
class DeactivationAnswered(Event):
    """The gateway's final word on a deactivation: succeeded | failed | cancelled."""

    outcome: str
    diagnostics: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Progress(Event):
    """News that changes nothing but the purchase file (an attempt failed and will be
    retried, the gateway accepted a request, support's activation moved on)."""

    kind: str
    detail: Mapping[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- effects
@dataclass(frozen=True)
class MoneyIntent:
    kind: OpKind
    amount_cents: int
    target: PaymentState  # the payment's state once the provider says yes


@dataclass(frozen=True)
class GatewayRequest:
    """An outbox row: ``kind`` activation.request | deactivation.request |
    manual_activation.request. The unit of work draws the new activation id of a
    deactivation or a manual activation (the machine draws no ids)."""

    kind: str
    action: str  # activate | deactivate
    available_at: float


@dataclass(frozen=True)
class Notice:
    """A message for the customer. ``with_ticket``: its text quotes the number of the
    ticket this step opened or resolved (known once the unit of work wrote it)."""

    template: str
    ctx: Mapping[str, str] = field(default_factory=dict)
    critical: bool = False
    with_ticket: bool = False


@dataclass(frozen=True)
class TicketRequest:
    kind: str
    diagnostics: Mapping[str, Any] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Timer:
    kind: str  # a scheduler job kind (lifecycle handlers)
    key: str
    due_at: float


@dataclass(frozen=True)
class Entry:
    """A timeline entry of the customer's purchase file."""

    kind: str
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Step:
    """One decision. ``outcome``: applied | stale (a duplicate or late event: nothing
    changes) | ignored."""

    outcome: str = "applied"
    state: PurchaseState | None = None
    purchase: Mapping[str, Any] = field(default_factory=dict)  # purchase columns written
    payment: Mapping[str, Any] = field(
        default_factory=dict
    )  # payment columns written (incl. its state)
    money: tuple[MoneyIntent, ...] = ()
    gateway: tuple[GatewayRequest, ...] = ()
    notices: tuple[Notice, ...] = ()
    ticket: TicketRequest | None = None
    resolve_tickets: str | None = None  # resolution for every open ticket of the purchase
    timers: tuple[Timer, ...] = ()
    timeline: tuple[Entry, ...] = ()
    drop_undelivered: bool = False  # requests not yet at the gateway are not sent


STALE = Step(outcome="stale")
