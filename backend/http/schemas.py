"""What the HTTP API takes and gives: request models, path/header parameters, and one
response model per answer (docs/spec.md §5; lifecycle routes: docs/lifecycle.md).

Request models forbid unknown keys. Response models forbid them too: a key a read model
(``backend/store/views.py``, the services' answers) adds without adding it here fails
loudly (500 in the tests) rather than going out undocumented. The open-ended parts of an
answer (a ticket's ``details``, a timeline entry's ``detail``) are ``dict[str, Any]``.

Field order is the order of the keys in the answer, and numbers keep their Python type
(``int`` fields are never floats): the JSON is the same, byte for byte, as the read models'
dicts encoded directly.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Header, Path, Query
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from backend.domain.catalog import FIRMWARE, MODEL_NAME
from backend.errors import InvalidRequest
from backend.services.purchases import PurchaseRequest

SERVICE_ID = r"^[a-z][a-z0-9_]{0,63}$"
RESOURCE_ID = r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$"  # our ids are UUIDs; never a NUL or a quote
IDEMPOTENCY_KEY = r"^[\x21-\x7e]{1,255}$"  # printable ASCII, like Stripe's keys

CODE = r"^[A-Za-z0-9_.-]{1,64}$"  # a state, kind, action or category used as a filter
MODEL = MODEL_NAME.pattern  # a vehicle model: "Tourer"
PRINTABLE = r"^[^\x00-\x1f\x7f]*$"  # free text (a search, a name): no control characters

Id = Annotated[str, Path(pattern=RESOURCE_ID)]
IdQuery = Annotated[str, Query(pattern=RESOURCE_ID)]
IdFilter = Annotated[str | None, Query(pattern=RESOURCE_ID)]  # an optional filter
IdempotencyKey = Annotated[str, Header(pattern=IDEMPOTENCY_KEY)]
OptionalIdempotencyKey = Annotated[str | None, Header(pattern=IDEMPOTENCY_KEY)]


def _absent(value: object) -> bool:
    return value is None


# ---------------------------------------------------------------- requests


class Temporary(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: Literal["temporary"]
    days: int = Field(ge=1, le=3650)


class Permanent(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: Literal["permanent"]


class Subscription(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: Literal["subscription"]


class PurchaseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    vehicle_id: str = Field(pattern=RESOURCE_ID)
    service_id: str = Field(pattern=SERVICE_ID, max_length=64)
    duration: Annotated[Temporary | Permanent | Subscription, Field(discriminator="model")]
    start_at: AwareDatetime | None = None

    def request(self) -> PurchaseRequest:
        days = self.duration.days if isinstance(self.duration, Temporary) else None
        start = _epoch(self.start_at) if self.start_at else None
        return PurchaseRequest(self.vehicle_id, self.service_id, self.duration.model, days, start)


def _epoch(value: datetime) -> float:
    try:
        return value.timestamp()
    except (OverflowError, ValueError):
        raise InvalidRequest("bad_start_at", "start_at out of range") from None


class RuleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(pattern=MODEL, examples=["Tourer"])
    firmware: list[Annotated[str, Field(pattern=FIRMWARE.pattern)]] | None = Field(
        max_length=100, examples=[["4.3.0", "5.0.2"]], description="null: every firmware"
    )


class RulesIn(BaseModel):
    """A service's compatibility rules, replacing the stored ones (empty: sold to no
    vehicle)."""

    model_config = ConfigDict(extra="forbid")
    applies_to: list[RuleIn] = Field(max_length=100)

    def raw(self) -> list[dict[str, Any]]:
        return [r.model_dump() for r in self.applies_to]


class BillingRunIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    month: str = Field(pattern=r"^\d{4}-(0[1-9]|1[0-2])$", examples=["2026-11"])


# ---------------------------------------------------------------- answers


class Out(BaseModel):
    """An answer: exactly these keys, in this order."""

    model_config = ConfigDict(extra="forbid")


Timestamp = Annotated[str, Field(examples=["2026-11-03T10:15:00Z"], description="RFC 3339")]


class Health(Out):
    status: Literal["ok"]


class Price(Out):
    model: str = Field(examples=["temporary"])
    days: int | None
    price_cents: int


class CatalogService(Out):
    id: str
    name: str
    description: str
    maintenance_linked: bool
    prices: list[Price]


class Catalog(Out):
    vehicle_id: str
    vin: str
    currency: str = Field(examples=["EUR"])
    services: list[CatalogService]


class Vehicle(Out):
    id: str
    vin: str
    model: str
    firmware: str | None = Field(examples=["4.3.0"], description="null: not known")


class Duration(Out):
    model: str = Field(examples=["temporary"])
    days: int | None = Field(default=None, exclude_if=_absent, description="temporary only")


class Payment(Out):
    id: str
    state: str
    amount_cents: int
    captured_cents: int
    refunded_cents: int
    settlement: str
    method: str = Field(description="card (hold, then capture) | direct_debit (charged at once)")


class Purchase(Out):
    id: str
    vehicle_id: str
    service_id: str
    duration: Duration
    price_cents: int
    currency: str = Field(examples=["EUR"])
    state: str
    activation_id: str
    activation_state: str | None
    failure_category: str | None
    start_at: Timestamp
    activation_deadline_at: Timestamp
    activated_at: Timestamp | None
    expires_at: Timestamp | None
    ends_at: Timestamp | None
    cancel_reason: str | None
    deactivation_state: str | None
    created_at: Timestamp
    updated_at: Timestamp
    payment: Payment | None


class OpsPurchase(Purchase):
    """A purchase as operations see it: whose, and on which vehicle model."""

    customer_id: str
    vehicle_model: str


class Notification(Out):
    id: str
    purchase_id: str | None
    template: str
    channel: str
    subject: str
    body: str
    critical: bool
    status: str
    created_at: Timestamp
    sent_at: Timestamp | None


class Ticket(Out):
    id: str
    number: str
    customer_id: str
    purchase_id: str | None
    kind: str
    status: str
    details: dict[str, Any]
    created_at: Timestamp
    resolved_at: Timestamp | None
    resolution_s: float | None
    resolution: str | None = Field(
        description="null (open) | manual_activation | permanent_failure", examples=[None]
    )
    resolved_by: str | None = Field(
        description="the operator who took the resolving action (a manual activation: "
        "from the request on, while the vehicle's answer is awaited)"
    )


class MoneyMove(Out):
    """A capture (``charges``) or a refund (``refunds``) the provider confirmed."""

    purchase_id: str
    amount_cents: int
    at: Timestamp | None
    provider_ref: str | None


class SubscriptionChargeLine(Out):
    purchase_id: str
    month: str = Field(examples=["2026-11"])
    days_billed: int
    amount_cents: int
    state: str
    at: Timestamp | None


class TimelineEntry(Out):
    at: Timestamp
    purchase_id: str | None
    kind: str
    detail: dict[str, Any]


class Expediente(Out):
    customer_id: str
    purchases: list[Purchase]
    charges: list[MoneyMove]
    refunds: list[MoneyMove]
    subscription_charges: list[SubscriptionChargeLine]
    notifications: list[Notification]
    tickets: list[Ticket]
    timeline: list[TimelineEntry]


class CancelAnswer(Out):
    purchase_id: str
    state: str
    decision: str = Field(
        examples=["refund_full"],
        description="refund_full | no_refund | hold_released | ends_at_month_end | ends_now",
    )
    rule: str = Field(examples=["withdrawal_within_14_days"])
    refund_cents: int
    effective_at: Timestamp


class TheftReport(Out):
    vehicle_id: str
    reported_at: Timestamp
    refund: str = Field(examples=["none"])
    rule: str = Field(examples=["theft_no_automatic_refund"])
    cancellable_purchase_ids: list[str]


class ManualActivation(Out):
    ticket_id: str
    purchase_id: str
    support_activation_id: str
    status: str = Field(examples=["REQUESTED"])


class PermanentFailure(Out):
    ticket_id: str
    purchase_id: str
    status: str = Field(examples=["RESOLVED"])
    resolution_s: float
    offer: str


class SubscriptionCharge(Out):
    id: str
    purchase_id: str
    month: str = Field(examples=["2026-11"])
    days_billed: int
    days_in_month: int
    amount_cents: int
    state: str


class BillingRun(Out):
    month: str = Field(examples=["2026-11"])
    charges_created: int
    charges: list[SubscriptionCharge]


class MaintenanceCheck(Out):
    vehicle_id: str
    overdue: bool
    notified: bool


class FailureRate(Out):
    value: float
    alert_above: float
    alerting: bool


class MetricsWindow(Out):
    """The activations counted: those finished from ``from`` (null: all time) to ``to``."""

    from_: Timestamp | None = Field(alias="from")
    to: Timestamp
    seconds: int | None


class HandbookMetric(Out):
    key: str = Field(examples=["activation_failure_rate"])
    name: str = Field(examples=["Activation failure rate"])
    unit: Literal["ratio", "attempts", "seconds"]
    value: float | None = Field(description="null: no sample in the window")
    threshold: float = Field(examples=[0.05])
    alert_when: Literal["above", "below"]
    alerting: bool
    samples: int


class BreakdownRow(Out):
    key: str = Field(examples=["transient_connectivity"])
    count: int
    total: int
    rate: float | None = Field(description="count / total; null when total is 0")


class SupportResolution(Out):
    open: int = Field(description="tickets open now")
    resolved: int = Field(description="tickets resolved inside the window")
    mean_s: float | None
    p50_s: float | None
    p95_s: float | None


class Breakdowns(Out):
    failures_by_reason: list[BreakdownRow] = Field(description="total: the failures")
    failures_by_model: list[BreakdownRow]
    failures_by_service: list[BreakdownRow]
    failures_by_hour: list[BreakdownRow] = Field(description='"00".."23" UTC, all 24')
    successes_by_attempt: list[BreakdownRow] = Field(
        description="successes at that attempt / activations finished after that many"
    )
    support_resolution: SupportResolution


class MetricsSummary(Out):
    purchases_by_state: dict[str, int]
    payments_by_state: dict[str, int]
    open_tickets: int
    tickets_resolved: int
    ticket_mean_resolution_s: float | None
    activation_failure_rate: FailureRate
    window: MetricsWindow
    handbook: list[HandbookMetric] = Field(description="the handbook's six, in its order")
    breakdowns: Breakdowns


class Me(Out):
    role: Literal["ops"]
    name: str = Field(examples=["Ana Ruiz"])


class AuditEntry(Out):
    id: str
    at: Timestamp
    operator: str = Field(examples=["Ana Ruiz"])
    action: str = Field(
        examples=["manual_activation"],
        description="manual_activation | permanent_failure | catalog_rules_updated",
    )
    target_type: str = Field(examples=["ticket"], description="ticket | service")
    target_id: str
    detail: dict[str, Any]


class CustomerSummary(Out):
    id: str
    name: str
    email: str
    payment_method: str
    vehicles: int


class Rule(Out):
    model: str = Field(examples=["Tourer"])
    firmware: list[str] | None = Field(description="null: every firmware of the model")


class CatalogRules(Out):
    service_id: str
    name: str
    applies_to: list[Rule] = Field(description="empty: sold to no vehicle")


class FleetModel(Out):
    model: str = Field(examples=["Tourer"])
    firmware: list[str] = Field(examples=[["4.2.1", "5.0.2"]], description="versions seen")
    vehicles: int


class WebhookOutcome(Out):
    outcome: str = Field(examples=["applied"])
